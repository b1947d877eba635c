"""`pipeline shard --append`: new tracks go into new shards after the existing ones, which stay byte
for byte; appending A then B gives the same bytes however the runs are interrupted (kill -9)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from pipeline import format as fmt
from pipeline.shard.faults import FAULT_ENV
from pipeline.shard.run import ShardError, run_shard
from pipeline.shard.verify import verify_shards
from trainer.data import resolve_shards

from support import CLI_OPTIONS, OPTIONS, run_cli, shard_bytes

BATCH_A = ("track06", "track07")  # a train and a val track
BATCH_B = ("track08",)


def manifest(collection, base: Path, name: str, leave_out: tuple[str, ...]) -> Path:
    _, _, records = collection
    folder = base / name
    fmt.write_jsonl(folder / fmt.TRACKS_FILE, [r for r in records if r.id not in leave_out])
    return folder


@pytest.fixture(scope="module")
def manifests(collection, tmp_path_factory):
    """Three manifests of one collection: without A and B, with A, with A and B."""
    base = tmp_path_factory.mktemp("append")
    return (
        manifest(collection, base, "m0", BATCH_A + BATCH_B),
        manifest(collection, base, "mA", BATCH_B),
        manifest(collection, base, "mB", ()),
    )


@pytest.fixture(scope="module")
def first_set(manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "out"
    run_shard(manifests[0], out, OPTIONS, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def appended(manifests, first_set, tmp_path_factory):
    """The reference: the first set, then A appended, then B appended, uninterrupted."""
    out = tmp_path_factory.mktemp("appended") / "out"
    shutil.copytree(first_set, out)
    run_shard(manifests[1], out, OPTIONS, workers=1, progress=False, append=True)
    run_shard(manifests[2], out, OPTIONS, workers=1, progress=False, append=True)
    return out


def tars(out: Path) -> dict[str, bytes]:
    return {name: data for name, data in shard_bytes(out).items() if name.endswith(".tar")}


def test_append_keeps_every_shard_and_adds_new_ones_the_trainer_finds(manifests, first_set, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_set, out)
    before = tars(out)
    inodes = {name: (out / name).stat().st_ino for name in before}
    with pytest.raises(ShardError, match="2 tracks added.*rerun with --append"):
        run_shard(manifests[1], out, OPTIONS, workers=1, progress=False)
    assert shard_bytes(out) == shard_bytes(first_set)  # a refusal changes nothing

    summary = run_shard(manifests[1], out, OPTIONS, workers=1, progress=False, append=True)
    after = tars(out)
    assert {name: after[name] for name in before} == before
    assert {name: (out / name).stat().st_ino for name in before} == inodes  # not even rewritten
    new = sorted(set(after) - set(before))
    assert all(name.startswith("train") for name in before)  # the first set has no val track
    assert new == [fmt.shard_name("train", len(before)), "val-000000.tar"] and summary.reused == len(before)
    assert summary.written == 2 and summary.shards == len(after)
    assert verify_shards(out).problems == []
    assert sorted(Path(p).name for p in resolve_shards(str(out))) == sorted(n for n in after if n.startswith("train"))
    index = fmt.read_index(out / fmt.index_name("train"))
    assert index.totals["tracks"] == 7 and index.totals["samples"] == sum(e.nsamples for e in index.shardlist)

    again = run_shard(manifests[1], out, OPTIONS, workers=1, progress=False)  # no --append: unchanged, a no-op
    assert again.written == 0 and tars(out) == after


def test_only_additions_can_be_appended(manifests, appended, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(appended, out)
    reference = shard_bytes(out)
    with pytest.raises(ShardError, match="cannot append: manifest: 0 tracks added, 3 removed"):
        run_shard(manifests[0], out, OPTIONS, workers=1, progress=False, append=True)
    with pytest.raises(ShardError, match="cannot append: clip_frames 16 -> 8"):
        options = type(OPTIONS)(clip_frames=8, shard_bytes=OPTIONS.shard_bytes)
        run_shard(manifests[2], out, options, workers=1, progress=False, append=True)
    with pytest.raises(ShardError, match="choose one"):
        run_shard(manifests[2], out, OPTIONS, workers=1, progress=False, append=True, force=True)
    with pytest.raises(ShardError, match="3 removed.*--force to rebuild"):  # no --append either
        run_shard(manifests[0], out, OPTIONS, workers=1, progress=False)
    assert shard_bytes(out) == reference


def append_cmd(manifests: Path, out: Path) -> list[str]:
    return ["shard", "--append", "--manifests", str(manifests), "--out", str(out), "--workers", "1", *CLI_OPTIONS]


def kill_then_finish(manifests, first_set, appended, tmp_path, point: str, killed_batch: int) -> None:
    out = tmp_path / "out"
    shutil.copytree(first_set, out)
    if killed_batch == 2:
        assert run_cli(*append_cmd(manifests[1], out)).returncode == 0
    index_before = (out / "train.json").read_bytes()
    result = run_cli(*append_cmd(manifests[killed_batch], out), env={FAULT_ENV: point})
    assert result.returncode == -signal.SIGKILL, result.stderr
    # the set being extended stays usable: its index is kept until the new one replaces it whole
    assert (out / "train.json").read_bytes() == index_before
    assert all(
        shard_bytes(out)[e.url] == shard_bytes(appended)[e.url] for e in fmt.read_index(out / "train.json").shardlist
    )
    for batch in range(killed_batch, 3):
        result = run_cli(*append_cmd(manifests[batch], out))
        assert result.returncode == 0, result.stderr
    assert shard_bytes(out) == shard_bytes(appended)


def test_killed_append_resumes_to_the_same_bytes(manifests, first_set, appended, tmp_path):
    kill_then_finish(manifests, first_set, appended, tmp_path, "renamed:1", killed_batch=1)


@pytest.mark.slow
@pytest.mark.parametrize("point, batch", [("decode:2", 1), ("state:1", 1), ("index:1", 1), ("tar-member:1", 2)])
def test_append_killed_anywhere_resumes_to_the_same_bytes(manifests, first_set, appended, tmp_path, point, batch):
    kill_then_finish(manifests, first_set, appended, tmp_path, point, killed_batch=batch)
