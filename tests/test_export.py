"""`trainer export` and reading the folder back: the three files, the card without paths, bit-identical
separations after export -> load, --half, and one-line errors for a damaged or foreign folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from trainer.cli import main as trainer_cli

from support import save_separator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return save_separator(tmp_path_factory.mktemp("export") / "sep-run", seed=5)


def export(source, out, *extra) -> tuple[int, str]:
    result = CliRunner().invoke(trainer_cli, ["export", str(source), "--out", str(out), *map(str, extra)])
    return result.exit_code, result.output


def separate(checkpoint, song: Path, out: Path) -> np.ndarray:
    result = CliRunner().invoke(
        trainer_cli,
        ["separate", str(song), "--checkpoint", str(checkpoint), "--out", str(out), "--format", "wav"]
        + ["--device", "cpu", "--quiet", "--stems", "instrumental"],
    )
    assert result.exit_code == 0, result.output
    audio, _ = soundfile.read(out / f"{song.stem}_instrumental.wav", dtype="float32")
    return audio


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("song") / "song.wav"
    rng = np.random.default_rng(0)
    soundfile.write(path, (0.3 * rng.standard_normal((30000, 2))).astype(np.float32), 44100, subtype="FLOAT")
    return path


def test_export_writes_the_hub_layout_with_a_card_and_no_paths(run, tmp_path):
    code, output = export(run, tmp_path / "shared", "--name", "test separator")
    assert code == 0, output
    folder = tmp_path / "shared"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["schema"] == "spectro-bert-checkpoint" and config["schema_version"] == 1
    assert config["task"] == "separation" and config["head"]["output"] == "mask"
    assert config["stft"] == {"n_fft": 128, "hop": 64, "window": "hann", "sample_rate": 44100, "bins": 64}
    assert config["architecture"]["bins"] == 64 and config["inference"]["window_frames"] == 32
    from trainer.export import sha256_file

    assert config["weights"]["sha256"] == sha256_file(folder / "model.safetensors")
    assert config["weights"]["dtype"] == "float32" and config["init"] is None
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: spectro-bert") and "# test separator" in card
    assert "n_fft 128, hop 64" in card and config["weights"]["sha256"] in card
    for text in (card, (folder / "config.json").read_text()):
        assert str(tmp_path) not in text and str(run) not in text and "/tmp" not in text


def test_export_then_load_gives_bit_identical_separations(run, song, tmp_path):
    assert export(run, tmp_path / "shared")[0] == 0
    direct = separate(run, song, tmp_path / "a")
    exported = separate(tmp_path / "shared", song, tmp_path / "b")
    assert np.array_equal(direct, exported)
    # an export of the export is the same model too
    assert export(tmp_path / "shared", tmp_path / "again")[0] == 0
    assert np.array_equal(direct, separate(tmp_path / "again", song, tmp_path / "c"))


def test_half_export_is_float16_and_separates_close_to_the_original(run, song, tmp_path):
    from safetensors.torch import load_file

    assert export(run, tmp_path / "half", "--half")[0] == 0
    weights = load_file(str(tmp_path / "half" / "model.safetensors"))
    assert {str(v.dtype) for v in weights.values()} == {"torch.float16"}
    assert export(run, tmp_path / "full")[0] == 0
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * (
        tmp_path / "full" / "model.safetensors"
    ).stat().st_size
    direct = separate(run, song, tmp_path / "a")
    half = separate(tmp_path / "half", song, tmp_path / "b")
    assert np.abs(direct - half).max() < 1e-2


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "model.safetensors").write_bytes(b"x" * 100), "differs from config.json's weights.sha256"),
        (lambda f: _edit(f, schema_version=99), "schema_version 99"),
        (lambda f: _edit(f, schema="other"), "schema is 'other'"),
        (lambda f: _edit(f, architecture={"bins": 128}), "architecture differs from training_config.model"),
        (lambda f: _edit(f, drop="weights"), "missing field 'weights'"),
        (lambda f: (f / "config.json").write_text("{"), "config.json: unreadable"),
    ],
)
def test_a_damaged_or_foreign_folder_is_one_line_naming_the_field(run, song, tmp_path, damage, message):
    assert export(run, tmp_path / "shared")[0] == 0
    damage(tmp_path / "shared")
    result = CliRunner().invoke(
        trainer_cli,
        ["separate", str(song), "--checkpoint", str(tmp_path / "shared"), "--out", str(tmp_path / "o")]
        + ["--device", "cpu", "--quiet"],
    )
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def _edit(folder: Path, drop: str | None = None, **fields) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    config.pop(drop, None)
    (folder / "config.json").write_text(json.dumps(config))


def test_export_refuses_to_write_over_its_source_and_a_missing_source_is_one_line(run, tmp_path):
    code, output = export(run / "checkpoints" / "step-0000001", run / "checkpoints" / "step-0000001")
    assert code == 1 and "is the checkpoint itself" in output
    code, output = export(tmp_path, tmp_path / "out")
    assert code == 1 and "no checkpoint found" in output and len(output.strip().splitlines()) == 1


def test_shards_of_another_stft_than_an_exported_teacher_name_the_field(run, tmp_path):
    from support import write_shards

    assert export(run, tmp_path / "teacher")[0] == 0
    shards = write_shards(tmp_path / "shards", {"a": 5, "b": 7, "c": 9, "d": 6}, clips_per_track=1)  # hop 1024
    result = CliRunner().invoke(
        trainer_cli,
        ["pseudo-label", "--checkpoint", str(tmp_path / "teacher"), "--shards", str(shards)]
        + ["--out", str(tmp_path / "pseudo"), "--device", "cpu"],
    )
    assert result.exit_code == 1 and "stft.hop is 64 for the teacher but 1024 in the shards" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_export_then_load_writes_byte_identical_flac(run, song, tmp_path):
    assert export(run, tmp_path / "shared")[0] == 0
    for checkpoint, out in ((run, tmp_path / "a"), (tmp_path / "shared", tmp_path / "b")):
        result = CliRunner().invoke(
            trainer_cli, ["separate", str(song), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]
        )
        assert result.exit_code == 0, result.output
    for stem in ("instrumental", "vocals"):
        name = f"{song.stem}_{stem}.flac"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
