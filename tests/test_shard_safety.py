"""The shard stage never writes wrong data and never touches what is not its own.

- a track whose file changed since ingest is a failure, not new audio under the old id (issue 10, class 1);
- a manifests folder that cannot take the decode failures is refused before any shard (class 11);
- every shard's sha256 is in its state and index; resume redoes, and `verify` reports, a damaged one (class 12);
- `--out` files under the tool's names that it did not write are refused, never removed (class 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import webdataset as wds

from pipeline import format as fmt
from pipeline.shard.outdir import OWNER_FILE
from pipeline.shard.run import ShardError, run_shard
from pipeline.shard.verify import verify_shards
from pipeline.shard.write import STATE_DIR, read_state, state_path

from support import CLI_OPTIONS, OPTIONS, run_cli, shard_bytes, track_record


def track_ids(out: Path) -> set[str]:
    ids = set()
    for shard in sorted(out.glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            ids.add(fmt.decode_meta(sample[fmt.META_KEY]).track_id)
    return ids


@pytest.fixture
def two_tracks(tmp_path, make_wav):
    """Two 1 s tracks on one drive and their manifest: (manifests, [path a, path b])."""
    drive = tmp_path / "drive"
    paths = [make_wav(drive / "x" / "y" / f"{name}.wav", seconds=1.0) for name in ("a", "b")]
    manifests = tmp_path / "manifests"
    records = [track_record(p, f"track{p.stem}", drive, "x/y", "train", 1.0) for p in paths]
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, records)
    return manifests, paths


def test_a_file_changed_since_ingest_is_a_failure_and_not_written(two_tracks, tmp_path):
    manifests, (changed, kept) = two_tracks
    original, before = changed.read_bytes(), changed.stat()
    noise = np.random.default_rng(0).uniform(-1, 1, (3 * 22050, 2))
    soundfile.write(changed, noise, 22050, subtype="PCM_16")  # 3 s of noise where 1 s of music was
    out = tmp_path / "out"
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    [failure] = fmt.read_failures(manifests)
    assert (failure.path, failure.stage) == (str(changed), fmt.STAGE_SHARD)
    assert failure.reason.startswith("changed since ingest: re-run pipeline ingest (size ")
    assert summary.failures == 1 and track_ids(out) == {"trackb"}
    assert verify_shards(out).problems == []

    # Same size, another mtime (content rewritten in place): refused as well.
    changed.write_bytes(original)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    run_shard(manifests, tmp_path / "other", OPTIONS, workers=1, progress=False)
    [failure] = fmt.read_failures(manifests)
    assert failure.reason.startswith("changed since ingest") and "(mtime " in failure.reason

    # Restored as the manifest knows it (a backup): the rerun redoes the unit and shards it.
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    assert summary.written == 1 and summary.failures == 0 and fmt.read_failures(manifests) == []
    assert track_ids(out) == {"tracka", "trackb"}


def _read_only(folder: Path) -> bool:
    """Make `folder` read-only for this process: a read-only tmpfs as root (who ignores modes)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    content = tmp = folder.with_name(folder.name + ".content")
    shutil.copytree(folder, content)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        return False
    shutil.copytree(tmp, folder, dirs_exist_ok=True)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    return True


def _writable_again(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o755)
    else:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_manifests_are_refused_before_any_shard(two_tracks, tmp_path):
    manifests, _ = two_tracks
    (manifests / fmt.MANIFESTS_LOCK).touch()  # an ingest left its lock file: opening it is not enough
    if not _read_only(manifests):
        pytest.skip("cannot make a read-only folder here")
    try:
        with pytest.raises(ShardError, match=r"cannot write .*make the folder writable, then rerun"):
            run_shard(manifests, tmp_path / "out", OPTIONS, workers=1, progress=False)
        assert not list((tmp_path / "out").glob("*.tar"))
    finally:
        _writable_again(manifests)


def test_checksums_are_recorded_and_a_flipped_bit_is_caught_and_redone(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    for split in ("train", "val"):
        for entry in fmt.read_index(out / fmt.index_name(split)).shardlist:
            assert entry.sha256 == fmt.file_sha256(out / entry.url) == read_state(out, entry.url).sha256
    damaged = out / "train-000001.tar"
    with open(damaged, "r+b") as fh:  # one bit inside a spectrogram: same size, valid tar
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0x10]))
    problem, *decoding = verify_shards(out).problems  # log8: the gzip member's CRC catches it too
    assert problem.startswith(f"{damaged}: sha256 ") and "differs from the index's" in problem
    assert all("unreadable magnitude" in p for p in decoding)
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    assert summary.written == 1 and shard_bytes(out) == shard_bytes(clean)
    assert verify_shards(out).problems == []


def test_a_state_from_before_checksums_is_adopted_not_redone(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    for path in (out / STATE_DIR).glob("*.tar.json"):
        state = path.read_text().replace(f'"sha256": "{read_state(out, path.name[:-5]).sha256}", ', "")
        path.write_text(state)
    assert read_state(out, "train-000000.tar").sha256 == ""
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    assert summary.written == 0 and shard_bytes(out) == shard_bytes(clean)
    assert read_state(out, "train-000000.tar").sha256 == fmt.file_sha256(out / "train-000000.tar")
    assert state_path(out, "train-000000.tar").is_file()


# --- class 2: the output folder holds only what the tool wrote -------------------------------------


def test_user_files_under_the_tools_names_are_refused_and_kept(collection, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.json").write_text('{"my": "own training config"}\n')
    (out / "val.json").write_text("[1, 2, 3]\n")
    before = shard_bytes(out)
    for force in ([], ["--force"]):
        result = run_cli("shard", "--manifests", str(manifests), "--out", str(out), *CLI_OPTIONS, *force)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert f"{out}: holds train.json, val.json, not written by `pipeline shard` here" in result.stderr
        assert shard_bytes(out) == before and sorted(p.name for p in out.iterdir()) == ["train.json", "val.json"]


@pytest.mark.parametrize(
    "foreign",
    ["train-000000.tar", "val-000003.tar", ".state/notes.txt", ".state"],
    ids=["shard", "val", "state-dir", "state-file"],
)
def test_foreign_shards_or_state_folder_are_refused_even_with_force(collection, tmp_path, foreign):
    _, manifests, _ = collection
    out = tmp_path / "other-dataset"
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_bytes(b"someone else's data")
    with pytest.raises(ShardError, match="move (it|them) away or choose another --out"):
        run_shard(manifests, out, OPTIONS, workers=1, force=True, progress=False)
    assert (out / foreign).read_bytes() == b"someone else's data"
    assert [p.name for p in out.iterdir()] == [foreign.split("/")[0]]


def test_a_user_file_dropped_into_a_shard_folder_is_refused_and_others_are_left_alone(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    others = {"notes.json": b"{}", "README.txt": b"mine", ".draft.tmp-1": b"an editor's temporary"}
    for name, data in others.items():
        (out / name).write_bytes(data)
    summary = run_shard(manifests, out, OPTIONS, workers=1, force=True, progress=False)
    assert summary.written == 0 and all((out / n).read_bytes() == d for n, d in others.items())
    (out / "val.json").write_text('{"my": "val config"}')
    with pytest.raises(ShardError, match=r"val.json: not a shard index written by `pipeline shard`"):
        run_shard(manifests, out, OPTIONS, workers=1, force=True, progress=False)
    assert (out / "val.json").read_text() == '{"my": "val config"}'


def test_a_shard_folder_from_before_the_owner_record_is_still_the_tools(collection, clean, tmp_path):
    _, manifests, _ = collection
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    (out / STATE_DIR / OWNER_FILE).unlink()
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    assert summary.written == 0 and (out / STATE_DIR / OWNER_FILE).is_file()
