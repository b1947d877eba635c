"""Every JSON file the tools read is validated where it is read (issue 10, class 7).

One mechanism, pipeline/records.py, checks parsed JSON against the record dataclasses' field types;
these tests feed each reader valid JSON of the wrong shape and expect a one-line error naming the
file (or, for a sample, a warning naming the shard and the sample, which is skipped).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import format as fmt
from pipeline.cli import main as pipeline_cli
from pipeline.ingest.journal import JOURNAL_FILE
from pipeline.ingest.manifest import STATE_FILE
from pipeline.ingest.run import ingest
from pipeline.records import RecordError, record_from_dict
from pipeline.shard.write import STATE_DIR, read_state

from support import BINS, sample_members, write_sample_tar, write_shards

# --- the mechanism --------------------------------------------------------------------------------


@dataclass
class Inner:
    name: str
    count: int


@dataclass
class Outer:
    label: str
    ratio: float
    flag: bool
    maybe: str | None
    items: list[Inner]
    table: dict[str, int | float] = field(default_factory=dict)


GOOD = {"label": "x", "ratio": 1, "flag": True, "maybe": None, "items": [{"name": "a", "count": 2}]}


def test_a_valid_value_builds_the_record_with_ints_widened_to_floats():
    record = record_from_dict(Outer, {**GOOD, "unknown": "ignored"})
    assert record == Outer("x", 1.0, True, None, [Inner("a", 2)]) and isinstance(record.ratio, float)


@pytest.mark.parametrize(
    "data, message",
    [
        (None, "Outer: expected an object, got null"),
        ([], "Outer: expected an object, got []"),
        ({**GOOD, "label": 3}, "Outer.label: expected a string, got 3"),
        ({**GOOD, "ratio": "1"}, 'Outer.ratio: expected a finite number within ±2**63, got "1"'),
        ({**GOOD, "ratio": float("nan")}, "Outer.ratio: expected a finite number within ±2**63, got NaN"),
        ({**GOOD, "ratio": 1e308}, "Outer.ratio: expected a finite number within ±2**63, got 1e+308"),
        ({**GOOD, "ratio": True}, "Outer.ratio: expected a finite number"),
        ({**GOOD, "flag": 1}, "Outer.flag: expected true or false, got 1"),
        ({**GOOD, "maybe": 5}, "Outer.maybe: expected a string or null, got 5"),
        ({**GOOD, "items": {}}, "Outer.items: expected a list, got {}"),
        ({**GOOD, "items": [None]}, "Outer.items[0]: expected an object, got null"),
        ({**GOOD, "items": [{"name": "a", "count": 2**70}]}, "Outer.items[0].count: expected an integer within"),
        ({**GOOD, "table": "lots"}, 'Outer.table: expected an object, got "lots"'),
        ({**GOOD, "table": {"a": "1"}}, "Outer.table.a: expected an integer within ±2**63 or a finite number"),
        ({k: v for k, v in GOOD.items() if k != "items"}, "Outer: missing field 'items'"),
    ],
)
def test_a_value_of_the_wrong_shape_is_one_line_naming_the_field(data, message):
    with pytest.raises(RecordError) as info:
        record_from_dict(Outer, data)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


# --- manifests --------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def track_json(**changes) -> str:
    record = dict(
        id="t1",
        path="/mnt/a/x.flac",
        root="/mnt/a",
        size=10,
        mtime=1.5,
        duration=3.0,
        sample_rate=44100,
        channels=2,
        codec="flac",
        artist="a",
        album="b",
        title="x",
        album_key="a/b",
        split="train",
    )
    return json.dumps({**record, **changes})


@pytest.mark.parametrize(
    "file, lines, message",
    [
        (fmt.TRACKS_FILE, [track_json(), "null"], ":2: not a valid TrackRecord line (TrackRecord: expected an object"),
        (fmt.TRACKS_FILE, [track_json(duration=1e308)], ":1: not a valid TrackRecord line (TrackRecord.duration:"),
        (fmt.TRACKS_FILE, [track_json(size="10")], ":1: not a valid TrackRecord line (TrackRecord.size:"),
        (fmt.FAILURES_FILE, ["null"], ":1: not a valid FailureRecord line (FailureRecord: expected an object"),
        (fmt.FAILURES_FILE, ['{"path": "/x", "stage": "probe"}'], ":1: not a valid FailureRecord line"),
    ],
)
def test_a_malformed_manifest_line_is_one_line_naming_file_and_line(tmp_path, file, lines, message):
    manifests = tmp_path / "m"
    write_lines(manifests / fmt.TRACKS_FILE, [track_json()])
    write_lines(manifests / file, lines)
    result = CliRunner().invoke(pipeline_cli, ["status", "--manifests", str(manifests), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"{manifests / file}{message}" in result.output, result.output


# --- ingest's own files: a cache, so a malformed one is a warning and the work is redone ------------------


def test_malformed_ingest_state_and_journal_lines_are_warnings_and_redone(tmp_path, make_wav, capsys):
    make_wav(tmp_path / "d" / "a.wav")
    make_wav(tmp_path / "d" / "b.wav")
    manifests = tmp_path / "m"
    first = ingest([str(tmp_path / "d")], manifests, progress=False)
    good = (manifests / fmt.TRACKS_FILE).read_bytes()

    (manifests / STATE_FILE).write_text("[]")
    journal = manifests / JOURNAL_FILE
    lines = journal.read_text().splitlines()
    broken = {k: v for k, v in json.loads(lines[0]).items() if k != "size"}  # a line without its fields
    journal.write_text("\n".join([json.dumps(broken), "null", *lines[1:]]) + "\n")
    capsys.readouterr()

    again = ingest([str(tmp_path / "d")], manifests, progress=False)
    err = capsys.readouterr().err
    assert f"{manifests / STATE_FILE}: ignored, rebuilding the manifests (IngestState: expected an object" in err
    assert f"{journal}: 2 line(s) of the wrong shape ignored" in err
    assert again.tracks == first.tracks == 2 and again.probed == 1  # only the damaged line's file again
    assert (manifests / fmt.TRACKS_FILE).read_bytes() == good

    (manifests / STATE_FILE).write_text('{"inputs": "x", "files": {}, "counts": {"files": "2"}}')
    ingest([str(tmp_path / "d")], manifests, progress=False)
    assert "IngestState.counts.files: expected an integer" in capsys.readouterr().err


def test_a_malformed_shard_state_means_the_unit_is_redone(tmp_path):
    (tmp_path / STATE_DIR).mkdir()
    for text in ("[]", "null", '{"name": 3}', '{"name": "train-000000.tar"}'):
        (tmp_path / STATE_DIR / "train-000000.tar.json").write_text(text)
        assert read_state(tmp_path, "train-000000.tar") is None


# --- the shard index ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), {f"track{i}": 5 + i for i in range(5)}, clips_per_track=2)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"totals": "lots"}, 'index.totals: expected an object, got "lots"'),
        ({"totals": {"seconds": "9"}}, "index.totals.seconds: expected an integer"),
        ({"shardlist": [{"url": 7, "nsamples": 1, "filesize": 1}]}, "index.shardlist[0].url: expected a string"),
        ({"shardlist": None}, "index.shardlist: expected a list, got null"),
        ({"clip_frames": 1e308}, "index.clip_frames: expected an integer"),
        ({"stft": {"n_fft": "2048"}}, "n_fft, hop and sample_rate must be integers"),
    ],
)
def test_a_malformed_index_is_one_line_naming_the_file_for_every_reader(shards, tmp_path, change, message):
    from trainer.data import resolve_shards

    data = {**json.loads((shards / "train.json").read_text()), **change}
    index = tmp_path / "train.json"
    index.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{index}: unreadable shard index \(") as info:
        resolve_shards(str(tmp_path))
    assert message in str(info.value)
    result = CliRunner().invoke(pipeline_cli, ["verify", "--out", str(tmp_path)])
    assert result.exit_code == 1 and f"{index}: unreadable shard index" in result.output and message in result.output
    assert "Traceback" not in result.output


# --- samples: skipped with a warning naming the shard and the sample ---------------------------------


def write_samples(path: Path, samples: list[tuple]) -> Path:
    return write_sample_tar(path, samples)


def sample(key: str, meta=None) -> tuple:
    return sample_members(key, meta)


BAD_METAS = {
    "listmeta_00000": [1, 2],
    "intid_00000": {"track_id": 7, "clip": 0, "start_frame": 0, "valid_frames": 40, "album_key": "a"},
    "hugeframes_00000": {"track_id": "h", "clip": 0, "start_frame": 0, "valid_frames": 1e308, "album_key": "a"},
    "nometa_00000": "just a string",
}


def test_a_sample_json_of_the_wrong_shape_is_skipped_with_a_warning(tmp_path, caplog):
    from trainer.data import eval_loader

    samples = [sample("good_00000")] + [sample(key, meta) for key, meta in BAD_METAS.items()] + [sample("good_00001")]
    shard = write_samples(tmp_path / "train-000000.tar", samples)
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        batches = list(eval_loader(str(shard), batch_size=8, crop_frames=32, max_batches=None, split="train"))
    assert [key for batch in batches for key in batch["key"]] == ["good_00000", "good_00001"]
    warnings = [r.getMessage() for r in caplog.records]
    for key in BAD_METAS:
        [line] = [w for w in warnings if f" {key} " in w]
        assert f"skipping sample {key} in shard {shard}: json" in line and "\n" not in line


def test_verify_and_preview_name_the_shard_and_sample_of_a_bad_json(tmp_path, capsys):
    from pipeline.shard.preview import read_samples
    from pipeline.shard.verify import verify_shards

    shard = write_samples(tmp_path / "train-000000.tar", [sample(key, meta) for key, meta in BAD_METAS.items()])
    entry = fmt.ShardEntry(shard.name, len(BAD_METAS), shard.stat().st_size)
    stft = fmt.STFTParams(n_fft=2 * BINS).to_dict()
    fmt.write_index(tmp_path / "train.json", fmt.ShardIndex("train", [entry], stft, 40, {}))
    problems = verify_shards(tmp_path).problems
    for key in BAD_METAS:
        assert any(p.startswith(f"{shard}: sample {key}: json unreadable (json") for p in problems), problems

    write_samples(shard, [sample(key, meta) for key, meta in BAD_METAS.items()] + [sample("good_00000")])
    assert [s.key for s in read_samples(shard, 2)] == ["good_00000"]
    err = capsys.readouterr().err
    assert all(f"{shard}: sample '{key}' skipped (json" in err for key in BAD_METAS), err


# --- the trainer's own files ---------------------------------------------------------------------


def test_metrics_lines_of_the_wrong_shape_are_skipped_like_torn_ones(tmp_path):
    from trainer.logs import METRICS_FILE, read_metrics, truncate_metrics

    rows = ['{"step": 1, "split": "train", "loss": 1.0}', "[]", "null", '{"step": "2", "split": "train"}', "{torn"]
    write_lines(tmp_path / METRICS_FILE, [*rows, '{"step": 3, "split": "train", "loss": 0.5}'])
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3]
    truncate_metrics(tmp_path, 2)
    assert (tmp_path / METRICS_FILE).read_text() == rows[0] + "\n"


@pytest.mark.parametrize("text", ["[]", '{"fingerprint": 5}', '{"fingerprint": "x", "options": {}, "tracks": []}'])
def test_a_malformed_plan_state_is_one_line_naming_the_file(collection, tmp_path, text):
    from pipeline.shard.run import PLAN_FILE, ShardError, run_shard

    from support import OPTIONS

    _, manifests, _ = collection
    (tmp_path / "out" / STATE_DIR).mkdir(parents=True)
    (tmp_path / "out" / STATE_DIR / PLAN_FILE).write_text(text)
    with pytest.raises(ShardError, match=rf"^{tmp_path / 'out' / STATE_DIR / PLAN_FILE}: unreadable plan state \("):
        run_shard(manifests, tmp_path / "out", OPTIONS, progress=False)
    assert not list((tmp_path / "out").glob("*.tar"))
