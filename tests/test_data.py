"""The shard loader (trainer/data/) on tiny shards written here with webdataset.TarWriter."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from pipeline.format import (
    SPEC_DTYPE,
    SampleMeta,
    ShardEntry,
    ShardIndex,
    STFTParams,
    encode_meta,
    encode_sample,
    encode_spec,
    index_name,
    read_sample,
    sample_key,
    shard_name,
    write_index,
)
from trainer.data import Crop, collate, crop_sample, eval_loader, resolve_shards, track_group, train_loader

BINS = 32
CLIP = 64
CROP = 32
CLIPS_PER_TRACK = 3
TRACKS_PER_SHARD = 4


def clip_spec(valid: int, channel_offset: float = 100.0) -> np.ndarray:
    """Frame t holds t + 1 (channel 0) or t + 1 + offset (channel 1); zero padding past `valid`."""
    spec = np.zeros((2, BINS, CLIP), dtype=SPEC_DTYPE)
    frames = np.arange(1, valid + 1, dtype=np.float32)
    spec[0, :, :valid] = frames
    spec[1, :, :valid] = frames + channel_offset
    return spec


def sample(track_id: str, clip: int, valid: int = CLIP) -> dict:
    meta = SampleMeta(
        track_id=track_id,
        clip=clip,
        start_frame=clip * CLIP,
        valid_frames=valid,
        album_key="a",
        stft=STFTParams(n_fft=2 * BINS).to_dict(),
    )
    return {"__key__": sample_key(track_id, clip), "spec.npy": encode_spec(clip_spec(valid)), "json": encode_meta(meta)}


def write_shards(root: Path, split: str, shards: int, short_valid: int | None = None) -> list[Path]:
    """`shards` tars of TRACKS_PER_SHARD tracks x CLIPS_PER_TRACK clips, and the split's index."""
    root.mkdir(parents=True, exist_ok=True)
    entries, paths = [], []
    for number in range(shards):
        path = root / shard_name(split, number)
        with wds.TarWriter(str(path)) as writer:
            for track in range(TRACKS_PER_SHARD):
                track_id = f"{split}{number}t{track}"
                for clip in range(CLIPS_PER_TRACK):
                    last = clip == CLIPS_PER_TRACK - 1
                    writer.write(sample(track_id, clip, short_valid if (last and short_valid) else CLIP))
        entries.append(
            ShardEntry(url=path.name, nsamples=TRACKS_PER_SHARD * CLIPS_PER_TRACK, filesize=path.stat().st_size)
        )
        paths.append(path)
    index = ShardIndex(
        split=split,
        shardlist=entries,
        stft=STFTParams(n_fft=2 * BINS).to_dict(),
        clip_frames=CLIP,
        totals={"samples": shards * TRACKS_PER_SHARD * CLIPS_PER_TRACK},
    )
    write_index(root / index_name(split), index)
    return paths


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, "train", 4, short_valid=20)
    write_shards(root, "val", 2, short_valid=20)
    return root


def take(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def track_of(key: str) -> str:
    return key.rsplit("_", 1)[0]


def shard_of(key: str) -> str:
    """ "train2t1_00000" -> "train2" (the shard that holds the track)."""
    return track_of(key).rsplit("t", 1)[0]


# --- resolve_shards ------------------------------------------------------------------------------


def test_resolve_directory_index_brace_and_single_tar(shard_dir):
    expected = [str(shard_dir / shard_name("train", i)) for i in range(4)]
    assert resolve_shards(str(shard_dir)) == expected
    assert resolve_shards(str(shard_dir / "train.json")) == expected
    assert resolve_shards(str(shard_dir / "train-{000000..000003}.tar")) == expected
    assert resolve_shards(str(shard_dir), split="val") == [str(shard_dir / shard_name("val", i)) for i in range(2)]
    assert resolve_shards(expected[2]) == [expected[2]]


def test_resolve_errors_name_the_source(tmp_path, shard_dir):
    with pytest.raises(ValueError, match="no test.json"):
        resolve_shards(str(shard_dir), split="test")
    with pytest.raises(ValueError, match="nowhere"):
        resolve_shards(str(tmp_path / "nowhere"))
    bad_index = tmp_path / "train.json"
    bad_index.write_text("{}")
    with pytest.raises(ValueError, match="train.json"):
        resolve_shards(str(bad_index))


# --- one sample ---------------------------------------------------------------------------------


def test_a_float16_sample_is_read_as_a_view_of_its_payload():
    raw = sample("t", 0, valid=40)
    (stored,), _ = read_sample(raw)
    view = stored.read(3, 9)
    assert stored.views_payload and view.dtype == SPEC_DTYPE and np.array_equal(view, clip_spec(40)[:, :, 3:9])
    assert np.shares_memory(view, np.frombuffer(raw["spec.npy"], dtype=np.uint8))


@pytest.mark.parametrize("encoding", ["log8", "log8-zstd"])
def test_a_log8_sample_crops_like_its_float16_original_within_the_quantisation(encoding):
    float16 = sample("t", 0, valid=50)
    meta = SampleMeta("t", 0, 0, 50, "a", stft=STFTParams(n_fft=2 * BINS).to_dict())
    log8 = {"__key__": float16["__key__"], **encode_sample({"spec": clip_spec(50)}, meta, encoding)}
    for seed in range(5):
        exact, coded = crop_sample(float16, CROP, random.Random(seed)), crop_sample(log8, CROP, random.Random(seed))
        assert (exact.swap, exact.frames.shape) == (coded.swap, coded.frames.shape)
        ratio = coded.frames.astype(np.float32) / exact.frames.astype(np.float32)
        assert np.all(np.abs(20 * np.log10(ratio)) < 0.17)  # half a 0.315 dB step, + float16 rounding


def test_random_crop_stays_within_valid_frames_and_swaps_half_the_time():
    rng = random.Random(0)
    raw = sample("t", 0, valid=50)
    starts, swaps = set(), 0
    for _ in range(400):
        crop = crop_sample(raw, CROP, rng)
        padded = crop.padded()
        first, last = float(padded[0, 0, 0]), float(padded[0, 0, -1])
        swapped = first > 100
        swaps += swapped
        if swapped:
            first, last = first - 100, last - 100
        assert padded.shape == (2, BINS, CROP)
        assert last - first == CROP - 1 and first >= 1 and last <= 50  # frames [start, start + CROP) inside valid
        starts.add(first - 1)
    assert starts == set(range(0, 50 - CROP + 1))
    assert 150 < swaps < 250


def test_short_valid_is_padded_and_eval_crop_is_centred_without_swap():
    short = crop_sample(sample("t", 0, valid=20), CROP, random.Random(1))
    padded = short.padded()
    channel = padded[0] if padded[0, 0, 0] < 100 else padded[1]
    assert np.array_equal(channel[0, :20], np.arange(1, 21)) and not channel[:, 20:].any()
    centred = crop_sample(sample("t", 0, valid=50), CROP, None)
    assert np.array_equal(centred.padded()[0, 0], np.arange(10, 10 + CROP))  # (50 - 32) // 2 = 9 -> frames 10..41
    assert centred.padded()[1, 0, 0] > 100
    assert centred.group == track_group("t") and centred.key == sample_key("t", 0)


def test_collate_normalises_each_sample_by_its_max():
    crops = [crop_sample(sample(f"t{i}", 0, valid=30 + i), CROP, None) for i in range(3)]
    crops[1].frames[:] = 0
    batch = collate(crops)
    spec = batch["spec"]
    assert spec.dtype == torch.float32 and spec.shape == (3, 2, BINS, CROP)
    assert spec.min() >= 0 and torch.allclose(spec.amax(dim=(1, 2, 3)), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(spec[0], torch.from_numpy(crops[0].padded()).float() / float(crops[0].frames.max()))
    assert batch["group"].dtype == torch.long and batch["key"][2] == sample_key("t2", 0)


def test_collate_applies_the_swap_and_padding():
    crop = crop_sample(sample("t", 0, valid=20), CROP, None)
    crop.swap = True
    spec = collate([crop])["spec"][0]
    assert torch.equal(spec[0, :, :20] * 120, torch.arange(101.0, 121.0).expand(BINS, 20))  # channel 1 first
    assert torch.equal(spec[1, :, :20] * 120, torch.arange(1.0, 21.0).expand(BINS, 20))
    assert not spec[:, :, 20:].any()


def test_collate_swaps_a_full_length_crop_exactly():
    crop = crop_sample(sample("t", 0), CROP, None)  # CLIP valid frames: no padding
    crop.swap = True
    spec = collate([crop])["spec"][0]
    assert torch.equal(spec, torch.from_numpy(crop.padded()).float() / float(crop.frames.max()))
    assert spec[0, 0, 0] > spec[1, 0, 0]  # channel 1 (the larger values) first


def test_collate_float16_matches_float32_to_half_precision():
    crops = [crop_sample(sample(f"t{i}", 0, valid=30 + i), CROP, None) for i in range(2)]
    wide, narrow = collate(crops)["spec"], collate(crops, dtype=torch.float16)["spec"]
    assert narrow.dtype == torch.float16 and torch.equal(narrow.amax(dim=(1, 2, 3)), torch.ones(2, dtype=torch.float16))
    assert torch.allclose(narrow.float(), wide, rtol=1e-3, atol=0)


def _music_like(seed: int, valid: int, channels: int = 2) -> np.ndarray:
    """[channels, BINS, CLIP] magnitudes over ~100 dB (some below log8's 80 dB range), zero past `valid`."""
    values = 10.0 ** np.random.default_rng(seed).uniform(-5, 0, (channels, BINS, CLIP))
    values[:, :, valid:] = 0
    return values.astype(SPEC_DTYPE)


@pytest.mark.parametrize("encoding", ["log8", "log8-zstd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_log8_crop_stays_quantised_until_collate_which_writes_what_decoding_first_would(encoding, dtype):
    """Collate looks codes up in levels divided by the crop's peak: the batch must equal, to the bit,
    the one made from the decoded float16 crop (plain and pair samples, swapped, padded, silent)."""
    from pipeline.format import PairSampleMeta

    stft = STFTParams(n_fft=2 * BINS).to_dict()
    samples = []
    for seed, valid in enumerate((CLIP, 20, 45)):
        meta = SampleMeta(f"t{seed}", 0, 0, valid, "a", stft=stft)
        samples.append(
            {"__key__": f"t{seed}_00000", **encode_sample({"spec": _music_like(seed, valid)}, meta, encoding)}
        )
    silent = SampleMeta("quiet", 0, 0, CLIP, "a", stft=stft)
    samples.append({"__key__": "quiet_00000", **encode_sample({"spec": _music_like(9, 0)}, silent, encoding)})
    pair_meta = PairSampleMeta(track_id="p", clip=0, start_frame=0, valid_frames=50, album_key="a", stft=stft)
    pair = encode_sample({"mix": _music_like(5, 50), "target": _music_like(6, 50) / 4}, pair_meta, encoding)
    for group in (samples, [{"__key__": "p_00000", **pair}] * 3):
        for seed in range(4):
            rng = random.Random(seed)
            crops = [crop_sample(raw, CROP, rng) for raw in group]
            assert all(c.levels is not None and c.data.dtype == np.uint8 for c in crops)
            assert len({c.swap for c in crops}) == 2 or seed  # both orientations seen
            decoded = [Crop(c.frames, c.crop_frames, c.swap, c.group, c.key) for c in crops]
            coded_batch, plain_batch = collate(crops, dtype)["spec"], collate(decoded, dtype)["spec"]
            assert coded_batch.dtype == dtype and torch.equal(coded_batch, plain_batch)


def test_a_log8_crop_whose_levels_overflow_float16_is_refused_like_an_infinite_value():
    meta = SampleMeta("loud", 0, 0, CLIP, "a", stft=STFTParams(n_fft=2 * BINS).to_dict())
    raw = {"__key__": "loud_00000", **encode_sample({"spec": _music_like(1, CLIP)}, meta, "log8-zstd")}
    description = json.loads(raw["json"])
    description["codec"]["spec"]["reference"] = 1e6  # a float16 level above 65504 is inf
    raw["json"] = json.dumps(description).encode()
    with pytest.raises(ValueError, match="not finite"):
        collate([crop_sample(raw, CROP, None)])


def test_track_group_is_stable_and_distinguishes_tracks():
    assert track_group("abc") == track_group("abc") != track_group("abd")
    assert 0 <= track_group("abc") < 2**63


# --- the training stream ---------------------------------------------------------------------------


def test_train_batches_are_infinite_normalised_and_mix_tracks(shard_dir):
    batches = take(train_loader(str(shard_dir), batch_size=8, crop_frames=CROP, num_workers=0, seed=0), 20)
    assert len(batches) == 20  # 160 samples from 48 stored: resampled
    for batch in batches:
        assert batch["spec"].shape == (8, 2, BINS, CROP) and batch["spec"].dtype == torch.float32
        assert torch.allclose(batch["spec"].amax(dim=(1, 2, 3)), torch.ones(8))
        assert batch["group"].tolist() == [track_group(track_of(k)) for k in batch["key"]]
    distinct_tracks = [len(set(b["group"].tolist())) for b in batches]
    assert sum(distinct_tracks) / len(distinct_tracks) > 3  # the shuffle buffer mixes tracks inside a batch


def keys_of(batches) -> list[list[str]]:
    return [b["key"] for b in batches]


def test_same_seed_same_stream_other_seed_other_stream(shard_dir):
    def run(seed, workers):
        return take(train_loader(str(shard_dir), batch_size=4, crop_frames=CROP, num_workers=workers, seed=seed), 12)

    first, again, other = run(3, 0), run(3, 0), run(4, 0)
    assert keys_of(first) == keys_of(again)
    assert all(torch.equal(a["spec"], b["spec"]) for a, b in zip(first, again))
    assert keys_of(first) != keys_of(other)


def test_two_workers_reproducible_and_distinct(shard_dir):
    def run():
        return take(train_loader(str(shard_dir), batch_size=4, crop_frames=CROP, num_workers=2, seed=7), 10)

    first, again = run(), run()
    assert keys_of(first) == keys_of(again)
    assert all(torch.equal(a["spec"], b["spec"]) for a, b in zip(first, again))
    # batches alternate between the workers, whose streams differ
    assert keys_of(first)[0::2] != keys_of(first)[1::2]


def test_ranks_read_disjoint_shards(shard_dir):
    def shards_seen(rank):
        batches = take(
            train_loader(
                str(shard_dir), batch_size=4, crop_frames=CROP, num_workers=0, seed=1, rank=rank, world_size=2
            ),
            12,
        )
        return {shard_of(key) for batch in batches for key in batch["key"]}

    assert shards_seen(0) == {"train0", "train2"}
    assert shards_seen(1) == {"train1", "train3"}
    with pytest.raises(ValueError, match="rank 2"):
        train_loader(str(shard_dir), batch_size=4, crop_frames=CROP, num_workers=0, seed=1, rank=2, world_size=2)


def cut_inside(path: Path, member: int, part: str) -> None:
    """Truncate a tar 100 bytes into the header or the data of its `member`-th file."""
    with tarfile.open(path) as tar:
        info = tar.getmembers()[member]
    offset = info.offset if part == "header" else info.offset_data
    path.write_bytes(path.read_bytes()[: offset + 100])


def test_corrupt_shards_are_named_and_skipped(tmp_path, caplog):
    good, cut_in_data, cut_in_header = write_shards(tmp_path, "train", 3)
    cut_inside(cut_in_data, 7, "data")  # 3 whole samples, then the 4th's spec.npy is cut
    cut_inside(cut_in_header, 6, "header")  # 3 whole samples, then the 4th's first header is cut
    garbage = tmp_path / "train-000003.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    missing = tmp_path / "train-000004.tar"
    pattern = str(tmp_path / "train-{000000..000004}.tar")
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        batches = take(train_loader(pattern, batch_size=4, crop_frames=CROP, num_workers=0, seed=0), 30)
    keys = {key for batch in batches for key in batch["key"]}
    assert {shard_of(k) for k in keys} == {"train0", "train1", "train2"}  # good shard, heads of the cut ones
    for cut in ("train1", "train2"):
        assert {k for k in keys if shard_of(k) == cut} == {sample_key(f"{cut}t0", c) for c in range(3)}
    warned = caplog.text
    for path in (cut_in_data, cut_in_header, garbage, missing):
        assert f"skipping corrupt shard {path}" in warned
    assert "unexpected end of data" in warned and "No such file" in warned
    assert f"skipping corrupt shard {good}" not in warned


def test_only_unreadable_shards_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"garbage" * 10)
    with pytest.raises(RuntimeError, match="none of 1 shards gave a sample in"):
        take(train_loader(str(tmp_path / "a.tar"), batch_size=2, crop_frames=CROP, num_workers=0, seed=0), 1)


# --- the evaluation stream -----------------------------------------------------------------------------


def test_eval_is_finite_deterministic_and_in_order(shard_dir):
    loader = eval_loader(str(shard_dir), batch_size=5, crop_frames=CROP, max_batches=None)
    first, again = list(loader), list(loader)
    assert [len(b["key"]) for b in first] == [5, 5, 5, 5, 4]  # 24 val samples, the last batch partial
    assert keys_of(first) == keys_of(again)
    assert all(torch.equal(a["spec"], b["spec"]) for a, b in zip(first, again))
    stored_order = [
        sample_key(f"val{s}t{t}", c) for s in range(2) for t in range(TRACKS_PER_SHARD) for c in range(CLIPS_PER_TRACK)
    ]
    assert sum(keys_of(first), []) == stored_order
    assert len(list(eval_loader(str(shard_dir), batch_size=5, crop_frames=CROP, max_batches=2))) == 2


# --- HTTP ------------------------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def http_root(shard_dir):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(shard_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base + "train.json", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("http.server did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_resolve_over_http(http_root):
    expected = [f"{http_root}{shard_name('train', i)}" for i in range(4)]
    assert resolve_shards(http_root) == expected
    assert resolve_shards(http_root + "train.json") == expected
    assert resolve_shards(http_root + "train-{000000..000003}.tar") == expected


def test_streams_over_http_with_two_workers(http_root, shard_dir):
    batches = take(train_loader(http_root + "train.json", batch_size=4, crop_frames=CROP, num_workers=2, seed=0), 8)
    assert len(batches) == 8 and all(b["spec"].shape == (4, 2, BINS, CROP) for b in batches)
    remote = list(eval_loader(http_root, batch_size=6, crop_frames=CROP, max_batches=None))
    local = list(eval_loader(str(shard_dir), batch_size=6, crop_frames=CROP, max_batches=None))
    assert keys_of(remote) == keys_of(local)
    assert all(torch.equal(a["spec"], b["spec"]) for a, b in zip(remote, local))
