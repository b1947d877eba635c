"""After `pipeline pairs`: what the readers of pairs and pair shards say when the data is not what a
run needs (issue 20, item 7) — gone audio, no val split, shards of another resolution, a busy run,
a song name that is not one line."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from pipeline import format as fmt

from support import SMALL, make_pair_shards, write_sample_tar

STFT = fmt.STFTParams(n_fft=128, hop=64)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_pair_shards(tmp_path_factory.mktemp("readers"), STFT, songs=2, seconds=2.0)


def test_shard_pairs_with_its_audio_gone_is_an_error_not_empty_shards_and_success(pairs, tmp_path):
    from pipeline.cli import main

    shutil.copytree(pairs / "m", tmp_path / "m")
    shutil.copytree(pairs / "songs", tmp_path / "songs")
    records = fmt.read_pairs(tmp_path / "m")
    for record in records:  # the manifest now points at copies, which are then removed
        record.mixture_path = record.mixture_path.replace(str(pairs), str(tmp_path))
        record.target_path = record.target_path.replace(str(pairs), str(tmp_path))
    fmt.write_jsonl(tmp_path / "m" / fmt.PAIRS_FILE, records)
    shutil.rmtree(tmp_path / "songs")
    args = ["shard", "--pairs", "--manifests", str(tmp_path / "m"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args + ["--n-fft", "128", "--hop", "64", "--clip-frames", "64", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "holds no sample: its tracks failed" in result.output and fmt.PAIR_FAILURES_FILE in result.output


def test_a_stream_of_empty_shards_says_how_many_shards_there_are(tmp_path):
    from trainer.data.reader import ShardReader

    empty = [str(write_sample_tar(tmp_path / f"{i}.tar", [])) for i in range(2)]
    reader = ShardReader(max_empty_in_a_row=24)
    with pytest.raises(RuntimeError, match="none of 2 shards gave a sample in 24 reads in a row"):
        list(reader.samples(iter(empty * 12)))


def test_shards_without_a_val_split_are_a_notice(pairs, tmp_path, capsys):
    from trainer.loop import default_val_shards

    shutil.copytree(pairs / "shards", tmp_path / "s")
    assert default_val_shards(str(tmp_path / "s")) == str(tmp_path / "s")
    assert capsys.readouterr().err == ""
    (tmp_path / "s" / "val.json").unlink()
    assert default_val_shards(str(tmp_path / "s")) is None
    assert "note: no validation" in capsys.readouterr().err


def test_a_model_bins_mismatch_is_refused_before_the_run_folder_is_made(pairs, tmp_path):
    from trainer.cli import main as trainer_cli

    args = ["finetune", "--shards", str(pairs / "shards"), "--preset", "tiny", "--run", str(tmp_path / "run")]
    args += ["--steps", "1", "--device", "cpu"] + [f"--set={o}" for o in SMALL] + ["--set=model.bins=128"]
    result = CliRunner().invoke(trainer_cli, args)
    assert result.exit_code == 1 and "declares 64 frequency bins but model.bins is 128" in result.output
    assert not (tmp_path / "run").exists()


def test_a_song_name_with_a_newline_stays_one_table_row(tmp_path):
    from test_pairs import song, write

    from pipeline.pairs.run import PairOptions, build_pairs
    from trainer.separation.evaluate import evaluate_separation

    acc, voice = song(1)
    write(tmp_path / "s" / "Two\nLines" / "mixture.wav", acc + voice)
    write(tmp_path / "s" / "Two\nLines" / "instrumental.wav", acc)
    build_pairs(tmp_path / "m", [str(tmp_path / "s")], options=PairOptions(val_fraction=1.0))
    _, table = evaluate_separation([], tmp_path / "m", bsseval=False, progress=False)
    rows = [line for line in table.splitlines() if "Lines" in line]
    assert len(rows) == 2 and all(row.startswith("  Two\\nLines ") for row in rows), table
