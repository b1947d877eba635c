"""`trainer pretrain` / `trainer evaluate` end to end on small generated shards (64 bins, CPU).

The tiny preset is shrunk further here (64 bins, 3 levels, one block each) so that a step takes
~0.15 s on one busy core; the loop does not care about the model's size.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from trainer.cli import main as trainer_cli
from trainer.config import load_config
from trainer.logs import read_metrics
from trainer.loop import pretrain, resolve_run

from support import BINS, SMALL, TRAINER, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    tracks = {f"track{i:02d}": fundamental for i, fundamental in enumerate([5, 7, 6, 9, 11, 13, 8, 10])}
    return write_shards(tmp_path_factory.mktemp("shards"), tracks)


pytestmark = pytest.mark.usefixtures("one_thread")


def mean(values):
    return sum(values) / len(values)


def test_tiny_pretrain_lowers_the_loss_and_evaluate_prints_the_table(shards, tmp_path):
    run = tmp_path / "run"
    # The original objective (a sigmoid mask x input) with its mask starting at 0.5, not at the default
    # prior (tests/test_model_init.py), so the loss has far to fall: this checks that the loop
    # optimises, the prior is checked where it is set.
    cfg = load_config(
        "original", overrides=SMALL + ["run.steps=40", "run.ckpt_every=20", "run.val_every=20", "model.mask_prior=0.5"]
    )
    pretrain(cfg, str(shards), run, val_shards=str(shards))

    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 41))
    first, last = rows[:5], rows[-5:]
    assert mean([r["masked_l1"] for r in last]) < 0.7 * mean([r["masked_l1"] for r in first])
    assert mean([r["loss"] for r in last]) < mean([r["loss"] for r in first])
    assert all(0.0 <= r["data_wait"] <= 1.0 and r["samples_per_s"] > 0 and r["skipped"] == 0 for r in rows)

    val = read_metrics(run, "val")
    assert [v["step"] for v in val] == [20, 40]
    assert val[-1]["model_l1"] < val[0]["model_l1"]
    assert {"copy_nearest_l1", "interpolate_l1", "ratio_copy", "nsp_accuracy"} <= set(val[-1])
    assert (run / "checkpoints" / "last").read_text().strip() == "step-0000040"
    assert (run / "config.yaml").is_file() and list((run / "tb").glob("events.out.tfevents.*"))

    result = CliRunner().invoke(
        trainer_cli,
        ["evaluate", "--checkpoint", str(run), "--shards", str(shards), "--batches", "2", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    assert "step 40" in result.output and "copy nearest frame" in result.output
    assert "linear interpolation" in result.output and "NSP accuracy" in result.output
    # The same fixed corruptions as the validation at step 40 (its last checkpoint): the same number.
    model_line = next(line for line in result.output.splitlines() if line.startswith("model "))
    assert float(model_line.split()[1]) == pytest.approx(val[-1]["model_l1"], abs=1e-5)


def test_non_finite_steps_are_skipped_then_the_run_stops(shards, tmp_path):
    cfg = load_config(
        "tiny", overrides=SMALL + ["optim.warmup_steps=0", "run.steps=30", "run.ckpt_every=30", "run.max_bad_steps=3"]
    )
    cfg.optim.lr = 1e30  # past the config's limit (refused at the door): how a run diverges, made certain
    with pytest.raises(RuntimeError, match="3 non-finite steps in a row"):
        pretrain(cfg, str(shards), tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["skipped"] for r in rows[-3:]] == [1.0, 1.0, 1.0] and len(rows) < 30


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [TRAINER, "pretrain", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs
    )


def test_kill_9_then_resume_replays_the_uninterrupted_losses(shards, tmp_path):
    common = ["--shards", str(shards), "--preset", "tiny", "--device", "cpu", "--steps", "14", "--workers", "1"]
    common += [f"--set={item}" for item in SMALL + ["data.num_workers=1", "run.ckpt_every=5", "run.val_every=1000"]]
    reference = run_cli([*common, "--run", str(tmp_path / "reference")])

    killed_run = tmp_path / "killed"
    victim = run_cli([*common, "--run", str(killed_run)])
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        rows = read_metrics(killed_run) if (killed_run / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= 7:  # past the checkpoint at step 5, before the one at 10
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert victim.wait(timeout=60) == -signal.SIGKILL, victim.stderr.read()
    assert (killed_run / "checkpoints" / "last").read_text().strip() == "step-0000005"

    resumed = run_cli([*common, "--run", str(killed_run), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    expected = {r["step"]: r for r in read_metrics(tmp_path / "reference")}
    got = read_metrics(killed_run)
    assert [r["step"] for r in got] == list(range(1, 15))  # the killed run's steps 6..7+ were replaced
    for row in got:
        for key in ("loss", "masked_l1", "nsp_bce", "grad_norm", "lr"):
            assert row[key] == expected[row["step"]][key], (row["step"], key)


def test_resume_without_a_checkpoint_and_bad_sources_are_one_line_errors(shards, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to continue from"):
        resolve_run(tmp_path / "fresh", "tiny", None, resume=True)
    runner = CliRunner()
    result = runner.invoke(
        trainer_cli, ["pretrain", "--shards", str(tmp_path / "missing"), "--run", str(tmp_path / "r"), "--steps", "1"]
    )
    assert result.exit_code != 0 and "missing" in result.output
    result = runner.invoke(trainer_cli, ["evaluate", "--checkpoint", str(tmp_path), "--shards", str(shards)])
    assert result.exit_code != 0 and "no checkpoint found" in result.output
    result = runner.invoke(
        trainer_cli, ["pretrain", "--shards", str(shards), "--set", "run.stepz=1", "--run", str(tmp_path / "r2")]
    )
    assert result.exit_code != 0 and "stepz" in result.output
    assert "Traceback" not in result.output


def test_rerunning_into_a_run_continues_it_and_more_steps_extend_it(shards, tmp_path):
    run = tmp_path / "run"
    overrides = SMALL + ["run.steps=4", "run.ckpt_every=2", "run.val_every=1000"]
    cfg, checkpoint = resolve_run(run, "tiny", None, overrides)
    assert checkpoint is None
    pretrain(cfg, str(shards), run)

    cfg, checkpoint = resolve_run(run, None, None, ["run.steps=6"])  # the saved config, extended
    assert checkpoint.name == "step-0000004" and cfg.model.bins == 64 and cfg.run.steps == 6
    pretrain(cfg, str(shards), run, checkpoint=checkpoint)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    assert (run / "checkpoints" / "last").read_text().strip() == "step-0000006"


def test_loader_worker_and_os_errors_are_one_line(shards, tmp_path):
    # An error inside a DataLoader worker reaches the main process wrapped in the worker's traceback;
    # an unusable --run is an OSError. Both used to print a traceback instead of a one-line error.
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"train-{i:06d}.tar").write_bytes(os.urandom(3000))
    small = [arg for override in SMALL for arg in ("--set", override)]
    runner = CliRunner()
    result = runner.invoke(
        trainer_cli,
        [
            "pretrain",
            "--shards",
            str(bad / "train-{000000..000001}.tar"),
            "--run",
            str(tmp_path / "r"),
            "--steps",
            "1",
            "--workers",
            "1",
            *small,
        ],
    )
    assert result.exit_code == 1 and "shards gave a sample in" in result.output
    assert "Traceback" not in result.output and "worker process" not in result.output, result.output

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = runner.invoke(
        trainer_cli, ["pretrain", "--shards", str(shards), "--run", str(blocker / "run"), "--steps", "1", *small]
    )
    assert result.exit_code == 1 and "a-file" in result.output and "Traceback" not in result.output, result.output


def test_an_unusable_device_is_a_one_line_error(shards, tmp_path, monkeypatch):
    import torch

    from trainer.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
    result = CliRunner().invoke(
        trainer_cli,
        ["pretrain", "--shards", str(shards), "--run", str(tmp_path / "r"), "--steps", "1", "--device", "cuda:1"],
    )
    assert result.exit_code == 1 and "CUDA is not available" in result.output and "Traceback" not in result.output


def test_shards_of_another_bin_count_name_the_source(shards, tmp_path):
    result = CliRunner().invoke(
        trainer_cli,
        [
            "pretrain",
            "--shards",
            str(shards),
            "--run",
            str(tmp_path / "r"),
            "--steps",
            "1",
            "--workers",
            "0",
            "--set",
            "model.first_transformer_level=5",
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{shards}: its index declares {BINS} frequency bins but model.bins is 1024" in result.output, result.output
    assert not (tmp_path / "r").exists()  # refused before the run folder is made
