"""`trainer preview`: clean / corrupted / reconstruction pictures from shards (and a checkpoint)."""

import pytest
from click.testing import CliRunner

from trainer.cli import main as trainer_cli
from trainer.config import load_config
from trainer.loop import pretrain
from trainer.pretrain.preview import _spans, load_preview_batch

from support import SMALL, write_shards

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), {f"t{i}": f for i, f in enumerate([5, 7, 6, 9, 11, 13])})


def test_spans_are_half_open_runs():
    import numpy as np

    assert _spans(np.array([0, 1, 1, 0, 1], dtype=bool)) == [(1, 3), (4, 5)]
    assert _spans(np.zeros(3, dtype=bool)) == []


def test_preview_without_checkpoint_shows_validation_corruptions(shards, tmp_path):
    out = tmp_path / "p.png"
    result = CliRunner().invoke(
        trainer_cli, ["preview", "--shards", str(shards), "--out", str(out), "--n", "3", "--preset", "tiny"]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize("preset", ["tiny", "recipe"])
def test_preview_batches_are_the_fixed_validation_corruptions(shards, tmp_path, preset):
    run = tmp_path / "run"
    cfg = load_config(preset, overrides=SMALL + ["run.steps=2", "run.ckpt_every=2", "run.val_every=1000"])
    pretrain(cfg, str(shards), run)
    first = load_preview_batch(str(shards), 3, str(run), preset, "val")
    again = load_preview_batch(str(shards), 3, str(run), preset, "val")
    # the mixture pretext (tiny) is shown on its own task: an interferer mixed in, no masked tokens
    assert (first.corrupted.mixed is not None) == (preset == "tiny")
    assert first.reconstruction is not None and first.reconstruction.shape == first.clean.shape
    assert (first.corrupted.input == again.corrupted.input).all()
    assert (first.corrupted.selected == again.corrupted.selected).all()
    # the reconstruction row is the model's output on the selected frames and the input elsewhere
    outside = ~first.corrupted.selected[:, None, None, :].expand_as(first.clean)
    assert (first.reconstruction[outside] == first.corrupted.input[outside]).all()
    assert not (first.reconstruction[~outside] == first.corrupted.input[~outside]).all()
    assert first.corrupted.selected.any(dim=1).all()

    out = tmp_path / "r.png"
    result = CliRunner().invoke(
        trainer_cli, ["preview", "--shards", str(shards), "--checkpoint", str(run), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG


def test_preview_of_a_missing_checkpoint_is_a_one_line_error(shards, tmp_path):
    result = CliRunner().invoke(
        trainer_cli,
        ["preview", "--shards", str(shards), "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")],
    )
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "nope" in result.output


def test_preview_into_an_unwritable_place_is_a_one_line_error(shards, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(trainer_cli, ["preview", "--shards", str(shards), "--out", str(blocker / "p.png")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "a-file" in result.output, result.output
