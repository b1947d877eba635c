"""`pipeline shard` under faults: kill -9 anywhere, hostile files, a full disk.

Kills use the PIPELINE_SHARD_FAULT hook (the process SIGKILLs itself at a named point) and a
SIGKILL of the whole process group at a random instant. After each, a plain rerun must give the
clean run's shard set byte for byte without redoing finished shards.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import format as fmt
from pipeline.demo import synth
from pipeline.shard.faults import FAULT_ENV
from pipeline.shard.plan import ShardOptions
from pipeline.shard.run import run_shard
from pipeline.shard.write import write_unit

from support import CLI_OPTIONS, OPTIONS, make_collection, run_cli, shard_bytes, track_record


def shard_cmd(manifests: Path, out: Path, workers: int = 1) -> list[str]:
    return ["shard", "--manifests", str(manifests), "--out", str(out), "--workers", str(workers), *CLI_OPTIONS]


def leftovers(out: Path) -> list[str]:
    return sorted(
        p.name for folder in (out, out / ".state") if folder.exists() for p in folder.iterdir() if ".tmp-" in p.name
    )


def assert_no_partial_final(out: Path, clean_out: Path) -> dict[str, int]:
    """Every file under a final shard name is the complete shard; returns their inodes."""
    reference = shard_bytes(clean_out)
    finals = {}
    for path in out.glob("*.tar"):
        assert path.read_bytes() == reference[path.name], f"{path.name} is partial or wrong"
        finals[path.name] = path.stat().st_ino
    return finals


def resume_and_compare(manifests: Path, out: Path, clean_out: Path, finished: dict[str, int]) -> None:
    result = run_cli(*shard_cmd(manifests, out))
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} kept" in result.stdout
    assert {name: (out / name).stat().st_ino for name in finished} == finished  # not redone
    assert shard_bytes(out) == shard_bytes(clean_out)
    assert leftovers(out) == []


@pytest.mark.parametrize("point", ["decode:5", "tar-member:9", "state:2", "renamed:3", "index:1"])
def test_kill_at_a_point_then_resume_equals_clean_run(collection, clean, tmp_path, point):
    _, manifests, _ = collection
    out = tmp_path / "out"
    result = run_cli(*shard_cmd(manifests, out), env={FAULT_ENV: point})
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not (out / "train.json").exists()  # the index is written last
    finished = assert_no_partial_final(out, clean)
    if point.startswith("renamed"):
        assert len(finished) == 3
    resume_and_compare(manifests, out, clean, finished)


def test_kill_at_random_instants_then_resume_equals_clean_run(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "out"
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", "from pipeline.cli import main; main()", *shard_cmd(manifests, out, workers=2)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 3.0))
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first; the rerun must then keep everything
        proc.wait()
        finished = assert_no_partial_final(out, clean)
    result = run_cli(*shard_cmd(manifests, out))
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    assert shard_bytes(out) == shard_bytes(clean), f"seed {seed}"
    assert {name: (out / name).stat().st_ino for name in finished} == finished, f"seed {seed}"
    assert leftovers(out) == []


def test_hostile_files_are_failures_and_the_rest_completes(tmp_path):
    manifests, records = make_collection(tmp_path)
    good = [r for r in records if not r.duplicate_of]
    bad_dir = tmp_path / "ssd1" / "bad" / "album"
    full = synth.write_track(bad_dir / "full.ogg", seconds=2.0, seed=11)
    truncated = bad_dir / "truncated.ogg"  # decodes a while, then ffmpeg fails: its clips must vanish
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    (bad_dir / "empty.flac").write_bytes(b"")
    (bad_dir / "text.mp3").write_text("this is not audio\n")
    vanished = synth.write_track(bad_dir / "vanished.wav", seconds=1.0, seed=12)
    hostile = [
        track_record(bad_dir / name, f"bad{i}", tmp_path / "ssd1", "bad/album", "train", 2.0)
        for i, name in enumerate(["truncated.ogg", "empty.flac", "text.mp3", "vanished.wav"])
    ]
    vanished.unlink()
    # A good file under an id that cannot form a webdataset key (a dot): refused, not mis-keyed.
    hostile.append(track_record(Path(records[0].path), "bad.id", tmp_path / "ssd1", "bad/album", "train", 1.6))
    # ... or a tar member name (ustar holds 100 bytes): a failure, not a crash of the whole job.
    long_id = "x" * 90
    hostile.append(track_record(Path(records[1].path), long_id, tmp_path / "ssd1", "bad/album", "train", 1.2))
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, records + hostile)
    ingest_failure = fmt.FailureRecord("/mnt/elsewhere/x.mp3", "probe", "not audio")
    stale = fmt.FailureRecord(good[0].path, "decode", "an old failure of a file that now decodes")
    fmt.write_jsonl(manifests / fmt.FAILURES_FILE, [ingest_failure, stale])

    summary = run_shard(manifests, tmp_path / "out", OPTIONS, workers=2, progress=False)

    failures = fmt.read_failures(manifests)
    assert ingest_failure in failures and stale not in failures
    failed = {f.path: f for f in failures if f.stage == "decode"}
    assert set(failed) == {str(bad_dir / n) for n in ["truncated.ogg", "empty.flac", "text.mp3", "vanished.wav"]}
    assert all("\n" not in f.reason and f.reason for f in failed.values())
    (spec_member,) = fmt.sample_arrays(OPTIONS.sample_kind, OPTIONS.encoding)
    member_bytes = len(fmt.sample_key(long_id, 0)) + 1 + len(spec_member)
    assert {f.path: f.reason for f in failures if f.stage == "shard"} == {
        records[0].path: "track id 'bad.id' cannot form a sample key",
        records[1].path: f"track id {long_id!r} is too long for a tar member name ({member_bytes} > 100 bytes)",
    }
    assert summary.failures == 6
    index = fmt.read_index(tmp_path / "out" / "train.json")
    assert index.totals["tracks"] == sum(r.split == "train" for r in good)
    from pipeline.shard.verify import verify_shards

    report = verify_shards(tmp_path / "out")
    assert report.problems == []
    tracks_in_shards = set()
    import webdataset as wds

    for entry in index.shardlist:
        for sample in wds.WebDataset(str(tmp_path / "out" / entry.url), shardshuffle=False, empty_check=False):
            tracks_in_shards.add(fmt.decode_meta(sample["json"]).track_id)
    assert tracks_in_shards == {r.id for r in good if r.split == "train"}


def test_a_track_failing_midway_is_cut_out_of_its_shard(collection, tmp_path, monkeypatch):
    from pipeline.audio import stft
    from pipeline.audio.decode import DecodeError
    from pipeline.shard.plan import Unit

    _, _, records = collection
    real = stft.track_clips
    tracks = tuple(r for r in records if r.split == "train" and not r.duplicate_of)[:3]

    def failing_on_second(path, stft_params, clip_frames):
        clips = real(path, stft_params, clip_frames)
        if path != tracks[1].path:
            yield from clips
            return
        yield next(clips)
        clips.close()
        raise DecodeError(path, "broken in the middle")

    monkeypatch.setattr(stft, "track_clips", failing_on_second)
    (tmp_path / "a" / ".state").mkdir(parents=True)
    (tmp_path / "b" / ".state").mkdir(parents=True)
    with_failure = write_unit(Unit("train", 0, tracks, 1), tmp_path / "a", OPTIONS)
    monkeypatch.setattr(stft, "track_clips", real)
    without = write_unit(Unit("train", 0, (tracks[0], tracks[2]), 1), tmp_path / "b", OPTIONS)
    assert (tmp_path / "a" / "train-000000.tar").read_bytes() == (tmp_path / "b" / "train-000000.tar").read_bytes()
    assert with_failure.nsamples == without.nsamples and with_failure.tracks == 2
    assert with_failure.failures == [
        {"path": tracks[1].path, "stage": "decode", "reason": f"{tracks[1].path}: broken in the middle"}
    ]


def test_injected_enospc_leaves_no_corrupt_shard_and_resumes(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "out"
    sizes = sorted(p.stat().st_size for p in clean.glob("*.tar"))
    limit = sum(sizes) // 2
    result = run_cli(*shard_cmd(manifests, out), env={FAULT_ENV: f"enospc:{limit}"})
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "No space left on device" in message and "rerun to resume" in message and "Traceback" not in result.stderr
    finished = assert_no_partial_final(out, clean)
    assert 0 < len(finished) < len(sizes)
    assert leftovers(out) == []
    assert not (out / "train.json").exists()
    resume_and_compare(manifests, out, clean, finished)


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def test_real_full_disk_on_a_small_tmpfs(tmp_path):
    """The manifest understates durations (so the preflight passes) and the disk really fills."""
    base = tmp_path / "collection"
    manifests, records = make_collection(base)
    understated = [fmt.TrackRecord(**{**r.__dict__, "duration": r.duration / 4}) for r in records]
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, understated)
    options = ShardOptions(clip_frames=16, shard_bytes=50_000)
    reference = tmp_path / "reference"
    run_shard(manifests, reference, options, workers=1, progress=False)
    total = sum(p.stat().st_size for p in reference.glob("*.tar"))
    small = tmp_path / "small"
    if not _mount_tmpfs(small, total // 2):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(OSError) as error:
            run_shard(manifests, small, options, workers=1, progress=False)
        assert error.value.errno == 28  # ENOSPC
        reference_bytes = shard_bytes(reference)
        finished = {p.name for p in small.glob("*.tar")}
        assert finished and all(p.read_bytes() == reference_bytes[p.name] for p in small.glob("*.tar"))
        subprocess.run(["mount", "-o", f"remount,size={total * 4}", str(small)], check=True)
        summary = run_shard(manifests, small, options, workers=1, progress=False)
        assert summary.reused == len(finished)
        assert shard_bytes(small) == reference_bytes
        assert leftovers(small) == []
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
