"""No lost checkpoint, no poisoned `best` (issue 10, class 9), and one-line config errors (class 10).

The same 64-bin shards and shrunk tiny model as test_pretrain.py; each run is a few steps.
"""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.format import index_name
from trainer import loop
from trainer.cli import main as trainer_cli
from trainer.config import load_config
from trainer.logs import read_metrics

from support import SMALL, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    tracks = {f"track{i:02d}": fundamental for i, fundamental in enumerate([5, 7, 6, 9, 11, 13])}
    return write_shards(tmp_path_factory.mktemp("shards"), tracks)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(*overrides: str):
    return load_config("tiny", overrides=SMALL + ["data.num_workers=0", *overrides])


def pointer(run: Path, name: str) -> str:
    return (run / "checkpoints" / name).read_text().strip()


def test_a_failed_validation_still_writes_that_steps_checkpoint(shards, tmp_path):
    # The val index is there when the run starts, its shards are gone: validation finds no batch.
    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(shards / index_name("val"), val / index_name("val"))
    run = tmp_path / "run"
    cfg = small_config("run.steps=6", "run.ckpt_every=4", "run.val_every=3")
    with pytest.raises(RuntimeError, match="validation at step 3 failed, checkpoint .*step-0000003 saved") as info:
        loop.pretrain(cfg, str(shards), run, val_shards=str(val))
    assert "no validation batches" in str(info.value) and "\n" not in str(info.value)
    assert pointer(run, "last") == "step-0000003" and not (run / "checkpoints" / "best").exists()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


def test_a_non_finite_validation_loss_stops_the_run_and_never_becomes_best(shards, tmp_path, monkeypatch):
    import trainer.pretrain.evaluate

    real_evaluate = trainer.pretrain.evaluate.evaluate  # what the pretraining task validates with
    calls = []

    def nan_on_the_second_validation(*args, **kwargs):
        result = real_evaluate(*args, **kwargs)
        calls.append(result)
        return dataclasses.replace(result, loss=float("nan")) if len(calls) == 2 else result

    monkeypatch.setattr(trainer.pretrain.evaluate, "evaluate", nan_on_the_second_validation)
    run = tmp_path / "run"
    # the masked-token recipe: its validation is `evaluate` (the mixture pretext's, evaluate_mixture)
    cfg = load_config(
        "recipe", overrides=SMALL + ["data.num_workers=0", "run.steps=6", "run.ckpt_every=2", "run.val_every=2"]
    )
    with pytest.raises(RuntimeError, match=r"validation loss at step 4 is nan: .*step-0000002 is intact"):
        loop.pretrain(cfg, str(shards), run, val_shards=str(shards))
    assert pointer(run, "last") == "step-0000002" and pointer(run, "best") == "step-0000002"
    assert not (run / "checkpoints" / "step-0000004").exists()


def test_non_finite_weights_are_never_saved(shards, tmp_path, monkeypatch):
    real_make_optimizer = loop.make_optimizer

    def poisoned_after_three_steps(model, optim, device, *args):
        optimizer = real_make_optimizer(model, optim, device, *args)
        steps = []

        def poison(optimizer, args, kwargs):
            steps.append(1)
            if len(steps) == 3:
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("nan")

        optimizer.register_step_post_hook(poison)
        return optimizer

    monkeypatch.setattr(loop, "make_optimizer", poisoned_after_three_steps)
    run = tmp_path / "run"
    cfg = small_config("run.steps=6", "run.ckpt_every=2", "run.val_every=1000")
    with pytest.raises(RuntimeError, match=r"non-finite weights at step 4: .*step-0000002 is intact"):
        loop.pretrain(cfg, str(shards), run)
    assert pointer(run, "last") == "step-0000002"
    assert not (run / "checkpoints" / "step-0000004").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=inf", "optim.lr must be a finite number, got inf"),
        ("corrupt.mask_value=nan", "corrupt.mask_value must be a finite number, got nan"),
        ("optim.lr=[", "override 'optim.lr=[': the value is not valid YAML"),
    ],
)
def test_bad_set_values_are_one_line_errors_before_any_work(shards, tmp_path, override, message):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        trainer_cli, ["pretrain", "--shards", str(shards), "--run", str(run), "--steps", "1", "--set", override]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().count("\n") == 0 and message in result.output, result.output
    assert not run.exists()
