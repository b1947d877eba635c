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

import logging
import random
from collections.abc import Iterator

import torch
import webdataset as wds
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainer.data.crops import Crop, _collate_checked, crop_sample
from trainer.data.reader import DEFAULT_READ_TIMEOUT, ShardReader
from trainer.data.shards import _resolve

log = logging.getLogger(__name__)

# Crops per worker waiting to be drawn: 2 MiB float16 each at the default sizes.
DEFAULT_SHUFFLE_BUFFER = 64
# A stream that skipped this many samples in a row holds nothing to train on: stop instead of spinning.
MAX_SKIPPED_IN_A_ROW = 10_000


# --- streams of samples -------------------------------------------------------------------------


def _resampled(shards: list[str], rng: random.Random) -> Iterator[str]:
    while True:
        yield rng.choice(shards)


class _SampleFilter:
    """Crops and batches of the samples fit to train on; the others are logged (shard, key, reason,
    a running count) and skipped. A sample is unfit when its json or spec.npy cannot be read as the
    contract says (pipeline/format/), its bins differ from the index's (else the first sample's),
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
            shape = crop.shape[:2]
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


def track_of(key: str) -> str:
    """The track (or pair) id of a sample key `{track_id}_{clip:05d}`."""
    return str(key).rsplit("_", 1)[0]


def _only_tracks(samples: Iterator[dict], tracks: frozenset[str], what: str) -> Iterator[dict]:
    """The samples of `tracks`; a RuntimeError when MAX_SKIPPED_IN_A_ROW samples in a row are of none."""
    others = 0
    for sample in samples:
        if track_of(sample.get("__key__", "")) in tracks:
            others = 0
            yield sample
        else:
            others += 1
            if others >= MAX_SKIPPED_IN_A_ROW:
                raise RuntimeError(f"{what}: {others} samples in a row and none of data.tracks ({len(tracks)} ids)")


def _interleaved(main: Iterator, extra: Iterator, extra_share: float, rng: random.Random) -> Iterator:
    """Each item from `extra` with probability `extra_share`, else from `main` (both infinite)."""
    while True:
        yield next(extra) if rng.random() < extra_share else next(main)


class TrainStream(IterableDataset):
    """Infinite shuffled batches for one rank; each DataLoader worker draws its own random stream.

    `tracks` keeps only those tracks' samples (a fine-tune on the first k labelled songs); `extra`
    shards (e.g. pseudo-labelled pairs) give `extra_share` of the crops, the rest come from `shards`.
    """

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
        tracks: frozenset[str] | None = None,
        extra: list[str] | None = None,
        extra_share: float = 0.0,
    ):
        super().__init__()
        self.shards = _rank_share(shards, rank, world_size)
        self.extra = _rank_share(extra, rank, world_size) if extra else []
        self.batch_size, self.crop_frames, self.dtype = batch_size, crop_frames, dtype
        self.seed, self.rank, self.shuffle_buffer = seed, rank, shuffle_buffer
        self.bins, self.read_timeout = bins, read_timeout
        self.tracks, self.extra_share = tracks, extra_share

    def _crops(self, shards: list[str], rng: random.Random, fit: _SampleFilter, tracks) -> Iterator[Crop]:
        reader = ShardReader(max_empty_in_a_row=4 * len(shards) + 16, read_timeout=self.read_timeout)
        samples = reader.samples(_resampled(shards, rng))
        if tracks:
            samples = _only_tracks(samples, tracks, shards[0])
        crops = fit.crops(samples, self.crop_frames, rng)
        return iter(wds.filters.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(crops))

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random(f"train:{self.seed}:{self.rank}:{worker}")
        fit = _SampleFilter(self.bins)
        crops = self._crops(self.shards, rng, fit, self.tracks)
        if self.extra and self.extra_share > 0:
            extra_rng = random.Random(f"train-extra:{self.seed}:{self.rank}:{worker}")
            crops = _interleaved(crops, self._crops(self.extra, extra_rng, fit, None), self.extra_share, extra_rng)
        return fit.batches(crops, self.batch_size, self.dtype, partial=False)


def _rank_share(shards: list[str], rank: int, world_size: int) -> list[str]:
    return shards[rank::world_size] if len(shards) >= world_size else list(shards)


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
    tracks: list[str] | tuple[str, ...] = (),
    extra: str | None = None,
    extra_share: float = 0.0,
) -> DataLoader:
    """Infinite, shuffled, resampled training batches (see the module docstring).

    `tracks` (ids; empty: all) limits the samples of `src`; `extra` is a second source (any form
    `resolve_shards` takes) that gives `extra_share` of the crops (TrainStream).

    `rank`/`world_size` default to the torch.distributed process group (0 / 1 without one).
    The same (seed, num_workers, rank, world_size) gives the same stream of batches.
    `dtype=torch.float16` halves the loader's CPU cost and the host-to-device copy (see
    benchmarks/README.md); convert on the device then.
    """
    _check_sizes(batch_size, crop_frames, read_timeout)
    rank, world_size = _rank_and_world(rank, world_size)
    shards, bins = _resolve(src, split)
    extra_shards = _resolve(extra, split)[0] if extra else None
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
        tracks=frozenset(tracks) or None,
        extra=extra_shards,
        extra_share=extra_share,
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


def check_bins(spec: Tensor, bins: int, shards: str) -> None:
    """ValueError naming the shards when a batch's frequency bins are not the model's (`bins`)."""
    if spec.shape[2] != bins:  # else the model's own shape error, naming no source
        raise ValueError(
            f"{shards}: samples have {spec.shape[2]} frequency bins but model.bins is "
            f"{bins} (for shards of another n_fft: --set model.bins=...)"
        )


__all__ = ["TrainStream", "EvalStream", "train_loader", "eval_loader", "check_bins"]
