"""`pipeline verify`: a clean shard set passes; each kind of damage is reported and fails the exit code."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import format as fmt
from pipeline.cli import main
from pipeline.shard.verify import verify_shards

from support import CLIP_FRAMES


@pytest.fixture
def shards(clean, tmp_path) -> Path:
    out = tmp_path / "shards"
    shutil.copytree(clean, out)
    return out


def verify_cli(out: Path):
    return CliRunner().invoke(main, ["verify", "--out", str(out)])


def rewrite_index(out: Path, split: str, change) -> None:
    index = fmt.read_index(out / fmt.index_name(split))
    change(index)
    fmt.write_index(out / fmt.index_name(split), index)


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def forged_shard(path: Path, spec: np.ndarray, meta: fmt.SampleMeta, encoding: str | None) -> int:
    """A one-sample shard; `encoding` None: `spec` as a plain .npy whatever its dtype, with the json as is."""
    if encoding is None:
        buf = io.BytesIO()
        np.save(buf, spec, allow_pickle=False)
        members = {"spec.npy": buf.getvalue(), "json": fmt.encode_meta(meta)}
    else:
        members = fmt.encode_sample({"spec": spec}, meta, encoding)
    with tarfile.open(path, "w") as tar:
        key = fmt.sample_key(meta.track_id, meta.clip)
        for suffix, data in members.items():
            add_member(tar, f"{key}.{suffix}", data)
    return path.stat().st_size


def test_clean_shards_pass(shards):
    result = verify_cli(shards)
    assert result.exit_code == 0, result.output
    index = fmt.read_index(shards / "train.json")
    assert (
        result.output.startswith("ok:")
        and f"{index.totals['samples'] + fmt.read_index(shards / 'val.json').totals['samples']} samples"
        in result.output
    )


def test_truncated_shard_is_reported(shards):
    victim = shards / "train-000001.tar"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    result = verify_cli(shards)
    assert result.exit_code == 1
    assert f"{victim}: " in result.output and "index says" in result.output
    assert f"{victim}: unreadable after" in result.output


def test_wrong_counts_missing_and_stray_shards_are_reported(shards):
    def miscount(index):
        index.shardlist[0].nsamples += 1

    rewrite_index(shards, "train", miscount)
    (shards / "val-000000.tar").unlink()
    shutil.copyfile(shards / "train-000000.tar", shards / "train-000099.tar")
    problems = verify_shards(shards).problems
    assert any("train-000000.tar" in p and "index says" in p for p in problems)
    assert any("val-000000.tar: listed in val.json but missing" in p for p in problems)
    assert any("train-000099.tar: shard not listed" in p for p in problems)
    assert any("totals.samples" in p for p in problems)


@pytest.mark.parametrize("damage", ["float32", "float16 in log8", "shape", "padding", "stft"])
def test_bad_samples_are_reported(shards, damage):
    good = np.zeros((2, 1024, CLIP_FRAMES), dtype=np.float16)
    good[:, :, :10] = 1.0
    meta = fmt.SampleMeta(track_id="forged", clip=0, start_frame=0, valid_frames=10, album_key="x/y")
    spec = {"float32": good.astype(np.float32), "shape": good[:, :512], "padding": good + 1}.get(damage, good)
    if damage == "stft":
        meta.stft = {**meta.stft, "hop": 512}
    if damage == "float32":  # a float16 set
        rewrite_index(shards, "train", lambda index: setattr(index, "encoding", "float16"))
    path = shards / "train-000050.tar"
    size = forged_shard(path, spec, meta, None if damage in ("float32", "float16 in log8") else fmt.DEFAULT_ENCODING)

    def add(index):
        index.shardlist.append(fmt.ShardEntry(path.name, 1, size))
        index.totals["samples"] += 1
        index.totals["bytes"] += size

    rewrite_index(shards, "train", add)
    problems = verify_shards(shards).problems
    if damage == "float32":  # the real shards are log8 under an index now saying float16
        problems = [p for p in problems if "train-000050.tar" in p]
    expected = {
        "float32": "float32",
        "float16 in log8": (
            f"members missing {list(fmt.sample_arrays(fmt.SAMPLE_KIND_SPEC, fmt.DEFAULT_ENCODING))} extra ['spec.npy'] "
            f"(the index says {fmt.DEFAULT_ENCODING})"
        ),
        "shape": "spec is (2, 512, 16), expected (2, 1024, 16)",
        "padding": "non-zero frames after valid_frames",
        "stft": "differs from the index",
    }[damage]
    assert len(problems) == 1 and "train-000050.tar: sample forged_00000" in problems[0] and expected in problems[0]


def test_pickled_npy_is_refused(shards):
    path = shards / "train-000051.tar"
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    meta = fmt.SampleMeta(track_id="pickled", clip=0, start_frame=0, valid_frames=CLIP_FRAMES, album_key="x/y")
    rewrite_index(shards, "train", lambda index: setattr(index, "encoding", "float16"))
    with tarfile.open(path, "w") as tar:
        add_member(tar, "pickled_00000.spec.npy", buf.getvalue())
        add_member(tar, "pickled_00000.json", fmt.encode_meta(meta))

    def add(index):
        index.shardlist.append(fmt.ShardEntry(path.name, 1, path.stat().st_size))

    rewrite_index(shards, "train", add)
    problems = verify_shards(shards).problems
    assert any("pickled_00000: unreadable magnitude (spec.npy: " in p and "array of numbers" in p for p in problems)


def test_empty_folder_and_bad_index_fail(tmp_path):
    result = verify_cli(tmp_path)
    assert result.exit_code == 1 and "no shard index" in result.output
    (tmp_path / "train.json").write_text(json.dumps({"shardlist": []}))
    result = verify_cli(tmp_path)
    assert result.exit_code == 1 and "train.json: unreadable shard index" in result.output
