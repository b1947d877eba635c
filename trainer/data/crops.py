"""One sample -> a crop -> a batch: the random crop and stereo swap of a sample, and `collate`, which
normalises each crop by its max into a (shared-memory, in a loader worker) batch tensor."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import get_worker_info

from pipeline.format import CHANNELS, SPEC_DTYPE, SPEC_KEY, read_sample


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
    Only the crop's frames are decoded (log8: the compressed chunks that hold them; float16: a view). A
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


__all__ = ["Crop", "collate", "crop_sample", "track_group"]
