"""`pipeline shard` end to end on a tiny synthetic collection: contents, exactness, resume, refusals.

The collection (`make_collection`, the `collection` and `clean` fixtures) is in support.py / conftest.py.
"""

from __future__ import annotations

import re
import shutil
import tarfile

import numpy as np
import pytest
import soundfile
import webdataset as wds

from pipeline import format as fmt
from pipeline.shard.plan import ShardOptions, expected_clips
from pipeline.shard.run import ShardError, run_shard

from support import (
    CLI_OPTIONS,
    CLIP_FRAMES,
    OPTIONS,
    SHARD_BYTES,
    run_cli,
    shard_bytes,
    track_record,
)


def test_samples_read_back_with_plain_webdataset(collection, clean):
    _, _, records = collection
    index = fmt.read_index(clean / "train.json")
    seen = {}
    for entry in index.shardlist:
        for sample in wds.WebDataset(str(clean / entry.url), shardshuffle=False, empty_check=False):
            (stored,), meta = fmt.read_sample(sample)
            spec = stored.read()
            assert meta.encoding == index.encoding == fmt.DEFAULT_ENCODING
            assert spec.dtype == np.float16 and spec.shape == (2, 1024, CLIP_FRAMES)
            assert sample["__key__"] == fmt.sample_key(meta.track_id, meta.clip)
            assert meta.start_frame == meta.clip * CLIP_FRAMES
            assert fmt.min_valid_frames(CLIP_FRAMES) <= meta.valid_frames <= CLIP_FRAMES
            assert not spec[:, :, meta.valid_frames :].any() and spec[:, :, : meta.valid_frames].any()
            assert meta.stft == index.stft
            seen.setdefault(meta.track_id, []).append(meta.clip)
    train = [r for r in records if r.split == "train" and not r.duplicate_of]
    assert sorted(seen) == sorted(r.id for r in train)
    for record in train:
        assert seen[record.id] == list(range(len(seen[record.id])))
        assert abs(len(seen[record.id]) - expected_clips(record.duration, OPTIONS.stft, CLIP_FRAMES)) <= 1
    assert index.totals["samples"] == sum(len(v) for v in seen.values())
    assert index.totals["tracks"] == len(train)
    assert index.totals["seconds"] == pytest.approx(sum(r.duration for r in train))
    assert index.totals["bytes"] == sum((clean / e.url).stat().st_size for e in index.shardlist)
    assert len(index.shardlist) > 1 and index.clip_frames == CLIP_FRAMES
    assert fmt.read_index(clean / "val.json").totals["tracks"] == 2


def test_tar_headers_are_fixed(clean):
    for shard in sorted(clean.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
        assert members, shard
        for member in members:
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname, member.mode) == (
                0,
                0,
                0,
                "",
                "",
                0o644,
            )
            assert member.isreg()
        names = [m.name for m in members]
        (spec_member,) = fmt.sample_arrays(OPTIONS.sample_kind, OPTIONS.encoding)
        assert names[0::2] == [n.replace(".json", "." + spec_member) for n in names[1::2]]


def test_two_workers_give_the_same_bytes(collection, clean, tmp_path):
    _, manifests, _ = collection
    summary = run_shard(manifests, tmp_path / "two", OPTIONS, workers=2, progress=False)
    assert summary.written == summary.shards
    assert shard_bytes(tmp_path / "two") == shard_bytes(clean)


def test_dask_cluster_gives_the_same_bytes(collection, clean, tmp_path):
    distributed = pytest.importorskip("distributed")
    _, manifests, _ = collection
    # Worker processes, as on a real cluster: units and options must travel by pickle.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_shard(manifests, tmp_path / "dask", OPTIONS, scheduler=cluster.scheduler_address, progress=False)
        ran_on_dask = [name for name in cluster.scheduler.task_prefixes if "write_unit" in name]
    assert ran_on_dask
    assert shard_bytes(tmp_path / "dask") == shard_bytes(clean)


def test_rerun_keeps_finished_shards(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "again"
    shutil.copytree(clean, out)
    before = {p.name: p.stat().st_ino for p in out.glob("*.tar")}
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    assert summary.written == 0 and summary.reused == summary.shards
    assert {p.name: p.stat().st_ino for p in out.glob("*.tar")} == before
    assert shard_bytes(out) == shard_bytes(clean)


def test_changed_options_are_refused_then_rebuilt_with_force(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "changed"
    shutil.copytree(clean, out)
    result = run_cli(
        "shard",
        "--manifests",
        str(manifests),
        "--out",
        str(out),
        "--workers",
        "1",
        "--clip-frames",
        "8",
        "--shard-size",
        str(SHARD_BYTES),
        "--quiet",
    )
    assert result.returncode != 0
    assert "clip_frames 16 -> 8" in result.stderr and "--force" in result.stderr
    assert shard_bytes(out) == shard_bytes(clean)  # nothing touched
    result = run_cli(
        "shard",
        "--manifests",
        str(manifests),
        "--out",
        str(out),
        "--workers",
        "1",
        "--clip-frames",
        "8",
        "--shard-size",
        str(SHARD_BYTES),
        "--quiet",
        "--force",
    )
    assert result.returncode == 0, result.stderr
    assert fmt.read_index(out / "train.json").clip_frames == 8
    assert all(
        p.name in {e.url for s in ("train", "val") for e in fmt.read_index(out / f"{s}.json").shardlist}
        for p in out.glob("*.tar")
    )


def test_changed_manifest_is_explained(collection, clean, tmp_path):
    base, manifests, records = collection
    out = tmp_path / "grown"
    shutil.copytree(clean, out)
    grown = tmp_path / "manifests"
    fmt.write_jsonl(grown / fmt.TRACKS_FILE, records[:-2])
    with pytest.raises(ShardError, match=r"manifest: 0 tracks added, 1 removed, 0 changed.*--force"):
        run_shard(grown, out, OPTIONS, workers=1, progress=False)


def test_preflight_refuses_with_needed_and_free_bytes(collection, tmp_path):
    _, _, records = collection
    manifests = tmp_path / "manifests"
    huge = [fmt.TrackRecord(**{**records[0].__dict__, "duration": 1e12})]
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, huge)
    free = shutil.disk_usage(tmp_path).free
    result = run_cli("shard", "--manifests", str(manifests), "--out", str(tmp_path / "out"), *CLI_OPTIONS)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "not enough space" in message and "bytes) free" in message and "needs about" in message
    needed = int(message.split("GB (")[1].split(" bytes")[0])
    reported_free = int(message.split("GB (")[2].split(" bytes")[0])
    assert needed > reported_free and abs(reported_free - free) < 1e9
    assert not list((tmp_path / "out").glob("*.tar"))


def test_missing_manifest_is_one_clear_line(tmp_path):
    result = run_cli("shard", "--manifests", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "tracks.jsonl: no manifest" in result.stderr and "Traceback" not in result.stderr


def test_progress_bar_shows_hours_realtime_and_eta(collection, tmp_path):
    _, manifests, _ = collection
    result = run_cli(
        "shard",
        "--manifests",
        str(manifests),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--clip-frames",
        str(CLIP_FRAMES),
        "--shard-size",
        str(SHARD_BYTES),
    )
    assert result.returncode == 0, result.stderr
    last = result.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in last and "h audio" in last and "x realtime" in last and "<" in last  # elapsed<ETA


def test_a_second_run_on_the_same_folder_is_refused(collection, tmp_path):
    import fcntl

    _, manifests, _ = collection
    out = tmp_path / "busy"
    (out / ".state").mkdir(parents=True)
    (out / ".state" / "owner").write_text("{}")  # as the first run wrote it
    with open(out / ".state" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ShardError, match="another `pipeline shard` is writing here"):
            run_shard(manifests, out, OPTIONS, workers=1, progress=False)


def test_manifest_without_usable_tracks_makes_no_shards(collection, tmp_path):
    _, _, records = collection
    manifests = tmp_path / "manifests"
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, [r for r in records if r.duplicate_of])
    summary = run_shard(manifests, tmp_path / "out", OPTIONS, progress=False)
    assert summary.shards == 0 and not list((tmp_path / "out").glob("*.tar"))
    (manifests / fmt.TRACKS_FILE).write_text("{not json\n")
    with pytest.raises(ShardError, match=r"tracks.jsonl:1"):
        run_shard(manifests, tmp_path / "out", OPTIONS, progress=False)


def test_refused_force_run_deletes_nothing(collection, clean, tmp_path):
    _, _, records = collection
    out = tmp_path / "kept"
    shutil.copytree(clean, out)
    manifests = tmp_path / "manifests"
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, [fmt.TrackRecord(**{**records[0].__dict__, "duration": 1e12})])
    with pytest.raises(ShardError, match="not enough space.*counting .* bytes of outdated shards"):
        run_shard(manifests, out, OPTIONS, force=True, progress=False)
    assert shard_bytes(out) == shard_bytes(clean)


def test_shards_without_state_are_not_adopted(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "orphans"
    shutil.copytree(clean, out)
    shutil.rmtree(out / ".state")
    for force in (False, True):  # without its .state the folder is not the tool's: nothing is replaced
        with pytest.raises(ShardError, match="not written by `pipeline shard` here.*move them away"):
            run_shard(manifests, out, OPTIONS, workers=1, force=force, progress=False)
        assert shard_bytes(out) == shard_bytes(clean)
    out.joinpath(".state", "owner").parent.mkdir()
    out.joinpath(".state", "owner").write_text("{}")  # the user hands the folder back to the tool
    with pytest.raises(ShardError, match="unknown origin.*--force"):
        run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    summary = run_shard(manifests, out, OPTIONS, workers=1, force=True, progress=False)
    assert summary.reused == 0 and shard_bytes(out) == shard_bytes(clean)


def test_damaged_failures_file_is_refused_before_any_work(collection, tmp_path):
    """Decode failures are merged into failures.jsonl at the end: a damaged one must be a one-line
    refusal up front, not a traceback after every shard is written and before the index."""
    _, manifests, _ = collection
    damaged = tmp_path / "manifests"
    damaged.mkdir()
    shutil.copyfile(manifests / fmt.TRACKS_FILE, damaged / fmt.TRACKS_FILE)
    (damaged / fmt.FAILURES_FILE).write_text("{torn\n")
    result = run_cli("shard", "--manifests", str(damaged), "--out", str(tmp_path / "out"), *CLI_OPTIONS)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{damaged / fmt.FAILURES_FILE}:1: not a valid FailureRecord line" in result.stderr
    assert not list((tmp_path / "out").glob("*.tar"))
    (damaged / fmt.FAILURES_FILE).write_bytes(b"\xff\n")
    with pytest.raises(ShardError, match=re.escape(f"{damaged / fmt.FAILURES_FILE}: not UTF-8 text")):
        run_shard(damaged, tmp_path / "out", OPTIONS, progress=False)


@pytest.mark.parametrize(
    "field, value, message",
    [
        # the wrong type: refused where the manifest is read (pipeline/records.py), naming file and line
        ("duration", None, "{file}:2: not a valid TrackRecord line (TrackRecord.duration: expected a finite number"),
        ("duration", "3.0", "{file}:2: not a valid TrackRecord line (TrackRecord.duration: expected a finite"),
        ("duration", 1e308, "{file}:2: not a valid TrackRecord line (TrackRecord.duration: expected a finite"),
        ("mtime", float("nan"), "{file}:2: not a valid TrackRecord line (TrackRecord.mtime: expected a finite"),
        ("id", 7, "{file}:2: not a valid TrackRecord line (TrackRecord.id: expected a string, got 7)"),
        ("duplicate_of", 1, "{file}:2: not a valid TrackRecord line (TrackRecord.duplicate_of: expected a string or"),
        # the right type, a value the planner cannot use: refused by plan.check_track, naming the track
        ("size", -1, "{file}: track {path!r}: size must be >= 0"),
        ("split", "../val", "{file}: track {path!r}: split '../val' cannot name a shard"),
        ("split", "my-val", "{file}: track {path!r}: split 'my-val' cannot name a shard"),
        ("split", "", "{file}: track {path!r}: split '' cannot name a shard"),
    ],
)
def test_mistyped_manifest_field_is_one_line_naming_file_track_and_field(collection, tmp_path, field, value, message):
    _, _, records = collection
    manifests = tmp_path / "manifests"
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, [records[0], fmt.TrackRecord(**{**records[1].__dict__, field: value})])
    result = run_cli("shard", "--manifests", str(manifests), "--out", str(tmp_path / "out"), *CLI_OPTIONS)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message.format(file=manifests / fmt.TRACKS_FILE, path=records[1].path) in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_malformed_scheduler_address_is_one_clear_line(collection, tmp_path):
    _, manifests, _ = collection
    with pytest.raises(ShardError, match="cannot reach the Dask scheduler at notanaddress"):
        run_shard(manifests, tmp_path / "out", OPTIONS, scheduler="notanaddress", progress=False)


def test_a_set_begun_in_another_encoding_is_refused_with_the_way_to_go_on(tmp_path):
    """A set begun as gzip log8 (the default before log8-zstd) and rerun with today's default."""
    path = tmp_path / "drive" / "a.wav"
    path.parent.mkdir()
    soundfile.write(path, np.zeros((fmt.SAMPLE_RATE * 2, 2), dtype=np.float32), fmt.SAMPLE_RATE)
    manifests = tmp_path / "m"
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, [track_record(path, "a", tmp_path / "drive", "x/y", "train", 2.0)])
    out = tmp_path / "shards"
    run_shard(manifests, out, ShardOptions(clip_frames=16, encoding="log8"), workers=1, progress=False)
    with pytest.raises(ShardError, match="encoding 'log8' -> 'log8-zstd'.*or with --encoding log8 to go on"):
        run_shard(manifests, out, ShardOptions(clip_frames=16), workers=1, progress=False)
