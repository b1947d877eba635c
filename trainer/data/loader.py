"""Shards -> CPU batches: webdataset streaming, random crop, stereo swap, per-sample normalisation.

Only cheap CPU work happens here; every corruption runs later on the training device
(trainer/pretrain/corrupt.py). A batch is a dict:

    spec   FloatTensor [B, 2, F, crop_frames], each sample divided by its crop's max (so in [0, 1]);
           float32 unless the loader is asked for float16. From pair shards (`pipeline shard
           --pairs`) [B, 4, F, crop_frames]: mixture channels then target channels, the same crop,
           swap and scale (the max of both) applied to both
    group  LongTensor [B], a stable integer per track (NSP partners must differ in it)
    key    list[str], the webdataset sample keys

The training stream is infinite: each rank takes its share of the shards (strided, when there are
at least as many shards as ranks) and every loader worker resamples shards from that share with its
own random stream seeded by (seed, rank, worker). Everything random (shard choice, crop, swap,
shuffle buffer) comes from that stream, so the same seed and worker count replay the same batches.
A shard that cannot be read (missing, truncated, garbage, HTTP error, a transfer stalled for
`read_timeout` seconds) is logged with its URL and skipped; the samples read before the error are
kept. A sample that must not be trained on (a `json` or `spec.npy` of the wrong type, dtype or shape,
or values that are not finite and >= 0) is logged with its shard and key and skipped, with a running
count; one bad sample never ends a run. Shards are read with bounded reads, never memory-mapped, so
a file that shrinks while it is read is a truncated shard, not a SIGBUS.
"""

from __future__ import annotations

import hashlib
import logging
import random
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls

from pipeline.format import (
    CHANNELS,
    SPEC_DTYPE,
    SPEC_KEY,
    ShardIndex,
    STFTParams,
    index_name,
    read_index,
    read_sample,
)
from trainer.data.reader import DEFAULT_READ_TIMEOUT, ShardReader, is_url

log = logging.getLogger(__name__)

# Crops per worker waiting to be drawn: 2 MiB float16 each at the default sizes.
DEFAULT_SHUFFLE_BUFFER = 64
# A stream that skipped this many samples in a row holds nothing to train on: stop instead of spinning.
MAX_SKIPPED_IN_A_ROW = 10_000


# --- where the shards are -------------------------------------------------------------------


def _fetch_index(url: str) -> ShardIndex:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return ShardIndex.from_json(response.read().decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{url}: unreadable shard index ({exc})") from exc


def resolve_shards(src: str, split: str = "train") -> list[str]:
    """Shard URLs/paths for `src`, which is one of:

    - a shard directory (local, or an http(s) URL ending in "/"): its `{split}.json` index;
    - an index JSON (local path or URL): its shardlist, relative to the index's location;
    - a brace pattern ("shards/train-{000000..000009}.tar", also as a URL), or one tar.
    Raises ValueError naming `src` when nothing usable is found.
    """
    return _resolve(src, split)[0]


def _resolve(src: str, split: str) -> tuple[list[str], int | None]:
    """(shard URLs/paths, the frequency bins the index declares, or None without an index)."""
    src = str(src)
    if is_url(src):
        if src.endswith("/"):
            src = urllib.parse.urljoin(src, index_name(split))
        if src.endswith(".json"):
            index = _fetch_index(src)
            return _nonempty(src, [urllib.parse.urljoin(src, entry.url) for entry in index.shardlist]), _bins(index)
        return _nonempty(src, expand_urls(src)), None

    path = Path(src).expanduser()
    if path.is_dir():
        index_path = path / index_name(split)
        if not index_path.exists():
            raise ValueError(
                f"{path}: no {index_name(split)} shard index in this directory (run `pipeline shard` first)"
            )
        path = index_path
    if path.suffix == ".json":
        index = read_index(path)
        return _nonempty(src, [str(path.parent / entry.url) for entry in index.shardlist]), _bins(index)
    if "{" in src:
        return _nonempty(src, expand_urls(str(path))), None
    if path.is_file():
        return [str(path)], None
    raise ValueError(f"{src}: not a shard directory, index JSON, brace pattern or tar file")


def _bins(index: ShardIndex) -> int:
    return STFTParams.from_dict(index.stft).bins  # read_index has checked the parameters


def _nonempty(src: str, shards: list[str]) -> list[str]:
    if not shards:
        raise ValueError(f"{src}: lists no shards")
    return shards


# --- one sample: crop, swap -------------------------------------------------------------------


def track_group(track_id: str) -> int:
    """A stable 63-bit integer for a track id (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(track_id.encode("utf-8"), digest_size=8).digest(), "little") >> 1


@dataclass
class Crop:
    """Where a crop comes from; `collate` copies it into the batch (zero-padded to `crop_frames`)."""

    # [2, F, <= crop_frames] float16 ([4, ...] for a pair): a view of a float16 sample, else the decoded crop
    frames: np.ndarray
    crop_frames: int
    swap: bool  # left and right go to the batch in reverse order (in both signals of a pair)
    group: int
    key: str
    url: str = ""  # the shard it came from, for warnings

    def oriented(self) -> np.ndarray:
        """The frames with the swap applied (a view)."""
        if not self.swap:
            return self.frames
        if self.frames.shape[0] == CHANNELS:
            return self.frames[::-1]
        return _swap_pair_channels(self.frames)

    def padded(self) -> np.ndarray:
        """The crop as the batch will hold it before normalisation: [2 or 4, F, crop_frames] float16."""
        out = np.zeros((self.frames.shape[0], self.frames.shape[1], self.crop_frames), dtype=SPEC_DTYPE)
        out[:, :, : self.frames.shape[2]] = self.oriented()
        return out


def _swap_pair_channels(frames: np.ndarray) -> np.ndarray:
    """[L, R, L, R] -> [R, L, R, L]: the mixture stays first, the target second."""
    return frames[[1, 0, 3, 2]]


def crop_sample(sample: dict, crop_frames: int, rng: random.Random | None) -> Crop:
    """Choose `crop_frames` frames of the sample's valid frames (zero-padded if fewer).

    With `rng` the start is uniform and the channels are swapped with p = 0.5; without it the crop
    is centred on the valid frames and the channels stay (the deterministic evaluation crop).
    Only the crop's frames are decoded (log8: the gzip chunks that hold them; float16: a view). A
    float16 payload in `bytes` (read from a stream) is copied out, so that a crop waiting in the
    shuffle buffer holds 2 MiB rather than the whole 4 MiB sample; a view of a mapped shard is kept.
    """
    arrays, meta = read_sample(sample)  # a pair: mixture and target (same shape), given the same crop
    valid = min(int(meta.valid_frames), arrays[0].frames)
    if valid < 1:
        raise ValueError(f"sample {sample['__key__']} has no valid frames")
    length = min(valid, crop_frames)
    slack = valid - length
    start = rng.randint(0, slack) if rng is not None else slack // 2
    swap = rng is not None and rng.random() < 0.5
    if len(arrays) == 1:
        frames = arrays[0].read(start, start + length)
        if arrays[0].views_payload and isinstance(sample[SPEC_KEY], bytes):
            frames = frames.copy()
    else:  # one [4, F, length] array of just the crop
        frames = np.concatenate([a.read(start, start + length) for a in arrays])
    return Crop(frames, crop_frames, swap, track_group(meta.track_id), sample["__key__"], sample.get("__url__", ""))


def _empty_batch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor; in a loader worker, allocated in shared memory (as torch's default_collate
    does), so that handing it to the main process copies nothing: `.share_memory_()` afterwards
    would allocate and copy the whole batch again."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    prototype = torch.empty(0, dtype=dtype)
    storage = prototype._typed_storage()._new_shared(int(np.prod(shape)), device=prototype.device)
    return prototype.new(storage).resize_(*shape)


def collate(crops: list[Crop], dtype: torch.dtype = torch.float32) -> dict:
    """Stack crops into a `dtype` batch normalised per sample by its max (silence stays 0).
    ValueError when a crop holds values that are not finite and >= 0 (the streams skip those)."""
    batch, bad = _collate_checked(crops, dtype)
    if bad:
        raise ValueError(f"samples {[crops[i].key for i in bad]} hold values that are not finite and >= 0")
    return batch


def _collate_checked(crops: list[Crop], dtype: torch.dtype) -> tuple[dict, list[int]]:
    """The batch, and the rows whose values are not all finite and >= 0 (magnitudes never are).

    Each crop is gathered into one reused contiguous buffer, because torch's reductions and
    conversions run about twice as fast on contiguous input; one min/max pass both checks it and
    gives the normalisation peak, then it is converted, scaled and written into the batch in one pass.
    """
    first = crops[0]
    channels, bins = first.frames.shape[:2]
    if any(crop.frames.shape[:2] != (channels, bins) for crop in crops):
        raise ValueError(
            f"samples of different shapes in one batch ({[c.key for c in crops[:4]]}...): mixed shard kinds?"
        )
    spec = _empty_batch((len(crops), channels, bins, first.crop_frames), dtype)
    gathered = np.empty((channels, bins, first.crop_frames), dtype=SPEC_DTYPE)
    bad = []
    for number, (row, crop) in enumerate(zip(spec, crops)):
        length = crop.frames.shape[2]
        # numpy's strided copy beats torch's here; the swap costs nothing in it
        np.copyto(gathered[:, :, :length], crop.oriented())
        frames = torch.from_numpy(gathered)[:, :, :length]
        low, high = torch.aminmax(frames)
        if not (bool(low >= 0) and bool(torch.isfinite(high))):  # NaN fails both
            bad.append(number)
            continue
        # a 1-element divisor of the output dtype sets the division's dtype
        peak = high.float().clamp_(min=torch.finfo(dtype).tiny).reshape(1).to(dtype)
        torch.div(frames, peak, out=row[:, :, :length])
        if length < first.crop_frames:
            row[:, :, length:] = 0
    batch = {
        "spec": spec,
        "group": torch.tensor([c.group for c in crops], dtype=torch.long),
        "key": [c.key for c in crops],
    }
    return batch, bad


# --- streams of samples -------------------------------------------------------------------------


def _resampled(shards: list[str], rng: random.Random) -> Iterator[str]:
    while True:
        yield rng.choice(shards)


class _SampleFilter:
    """Crops and batches of the samples fit to train on; the others are logged (shard, key, reason,
    a running count) and skipped. A sample is unfit when its json or spec.npy cannot be read as the
    contract says (pipeline/format.py), its bins differ from the index's (else the first sample's),
    its channels from the first sample's, or its values are not all finite and >= 0."""

    def __init__(self, bins: int | None):
        self.bins = bins
        self.shape: tuple[int, int] | None = None  # (channels, bins) of the stream
        self.skipped = 0
        self.skipped_in_a_row = 0

    def skip(self, key, url, reason) -> None:
        self.skipped += 1
        self.skipped_in_a_row += 1
        log.warning("skipping sample %s in shard %s: %s (%d skipped so far)", key, url, reason, self.skipped)
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise RuntimeError(f"{self.skipped_in_a_row} samples in a row were unfit to train on (last: {url})")

    def crops(self, samples: Iterator[dict], crop_frames: int, rng: random.Random | None) -> Iterator[Crop]:
        for sample in samples:
            try:
                crop = crop_sample(sample, crop_frames, rng)
            except (ValueError, KeyError, TypeError) as exc:
                self.skip(sample.get("__key__"), sample.get("__url__"), exc)
                continue
            shape = crop.frames.shape[:2]
            if self.shape is None and (self.bins is None or shape[1] == self.bins):
                self.shape = shape
            if shape != self.shape:
                expected = self.shape or (shape[0], self.bins)
                self.skip(
                    crop.key,
                    crop.url,
                    f"{shape[0]} channels x {shape[1]} bins, the shards' samples have {expected[0]} x {expected[1]}",
                )
                continue
            yield crop

    def batches(self, crops: Iterator[Crop], batch_size: int, dtype: torch.dtype, partial: bool) -> Iterator[dict]:
        """Like webdataset's batched(): full batches (and, if `partial`, a last smaller one) of fit crops."""
        pending: list[Crop] = []
        for crop in crops:
            pending.append(crop)
            if len(pending) == batch_size:
                batch, pending = self._collate(pending, dtype)
                if batch is not None:
                    yield batch
        if partial and pending:
            batch, pending = self._collate(pending, dtype)
            if batch is None and pending:  # what is left after dropping the unfit ones is all fit
                batch, _ = self._collate(pending, dtype)
            if batch is not None:
                yield batch

    def _collate(self, crops: list[Crop], dtype: torch.dtype) -> tuple[dict | None, list[Crop]]:
        """(the batch, []) or, when some crops are unfit, (None, the fit ones) to be topped up."""
        batch, bad = _collate_checked(crops, dtype)
        if not bad:
            self.skipped_in_a_row = 0
            return batch, []
        for i in bad:
            self.skip(crops[i].key, crops[i].url, "values that are not finite and >= 0")
        return None, [c for i, c in enumerate(crops) if i not in bad]


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if world_size is None:
        world_size = torch.distributed.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return rank, world_size


class TrainStream(IterableDataset):
    """Infinite shuffled batches for one rank; each DataLoader worker draws its own random stream."""

    def __init__(
        self,
        shards: list[str],
        *,
        batch_size: int,
        crop_frames: int,
        seed: int,
        rank: int,
        world_size: int,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        dtype: torch.dtype = torch.float32,
        bins: int | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ):
        super().__init__()
        self.shards = shards[rank::world_size] if len(shards) >= world_size else list(shards)
        self.batch_size, self.crop_frames, self.dtype = batch_size, crop_frames, dtype
        self.seed, self.rank, self.shuffle_buffer = seed, rank, shuffle_buffer
        self.bins, self.read_timeout = bins, read_timeout

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random(f"train:{self.seed}:{self.rank}:{worker}")
        reader = ShardReader(max_empty_in_a_row=4 * len(self.shards) + 16, read_timeout=self.read_timeout)
        fit = _SampleFilter(self.bins)
        crops = fit.crops(reader.samples(_resampled(self.shards, rng)), self.crop_frames, rng)
        shuffled = wds.filters.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(crops)
        return fit.batches(shuffled, self.batch_size, self.dtype, partial=False)


class EvalStream(IterableDataset):
    """The shards in order, centred crops, no swap: the same batches every time."""

    def __init__(
        self,
        shards: list[str],
        *,
        batch_size: int,
        crop_frames: int,
        max_batches: int | None,
        dtype: torch.dtype = torch.float32,
        bins: int | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ):
        super().__init__()
        self.shards, self.batch_size, self.crop_frames, self.max_batches = shards, batch_size, crop_frames, max_batches
        self.dtype, self.bins, self.read_timeout = dtype, bins, read_timeout

    def __iter__(self) -> Iterator[dict]:
        reader = ShardReader(max_empty_in_a_row=None, read_timeout=self.read_timeout)
        fit = _SampleFilter(self.bins)
        crops = fit.crops(reader.samples(iter(self.shards)), self.crop_frames, None)
        batches = fit.batches(crops, self.batch_size, self.dtype, partial=True)
        for number, batch in enumerate(batches):
            if self.max_batches is not None and number >= self.max_batches:
                return
            yield batch


def train_loader(
    src,
    *,
    batch_size: int,
    crop_frames: int,
    num_workers: int,
    seed: int,
    split: str = "train",
    rank: int | None = None,
    world_size: int | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    dtype: torch.dtype = torch.float32,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> DataLoader:
    """Infinite, shuffled, resampled training batches (see the module docstring).

    `rank`/`world_size` default to the torch.distributed process group (0 / 1 without one).
    The same (seed, num_workers, rank, world_size) gives the same stream of batches.
    `dtype=torch.float16` halves the loader's CPU cost and the host-to-device copy (see
    benchmarks/README.md); convert on the device then.
    """
    _check_sizes(batch_size, crop_frames, read_timeout)
    rank, world_size = _rank_and_world(rank, world_size)
    shards, bins = _resolve(src, split)
    stream = TrainStream(
        shards,
        batch_size=batch_size,
        crop_frames=crop_frames,
        seed=seed,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=shuffle_buffer,
        dtype=dtype,
        bins=bins,
        read_timeout=read_timeout,
    )
    return _loader(stream, num_workers)


def eval_loader(
    src,
    *,
    batch_size: int,
    crop_frames: int,
    max_batches: int | None,
    split: str = "val",
    dtype: torch.dtype = torch.float32,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> DataLoader:
    """At most `max_batches` batches (None: one pass) in shard order, the same every call.

    Every rank gets the same batches; the last batch may be smaller than `batch_size`.
    """
    _check_sizes(batch_size, crop_frames, read_timeout)
    shards, bins = _resolve(src, split)
    stream = EvalStream(
        shards,
        batch_size=batch_size,
        crop_frames=crop_frames,
        max_batches=max_batches,
        dtype=dtype,
        bins=bins,
        read_timeout=read_timeout,
    )
    return _loader(stream, num_workers=0)


def _check_sizes(batch_size: int, crop_frames: int, read_timeout: float) -> None:
    if batch_size < 1 or crop_frames < 1:
        raise ValueError(f"batch_size ({batch_size}) and crop_frames ({crop_frames}) must be >= 1")
    if not read_timeout > 0:
        raise ValueError(f"read_timeout must be > 0 seconds, got {read_timeout}")


def _loader(stream: IterableDataset, num_workers: int) -> DataLoader:
    return DataLoader(
        stream,
        batch_size=None,  # the stream batches itself, before crossing the process boundary
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=2 if num_workers > 0 else None,
    )


__all__ = ["resolve_shards", "train_loader", "eval_loader", "crop_sample", "collate", "track_group"]
