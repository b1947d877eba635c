"""One sample -> a crop -> a batch: the random crop and stereo swap of a sample, and `collate`, which
normalises each crop by its max into a (shared-memory, in a loader worker) batch tensor. A log8
crop stays quantised until collate writes it into the batch."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import get_worker_info

from pipeline.codec import dequantise
from pipeline.format import CHANNELS, SPEC_DTYPE, SPEC_KEY, read_sample


def track_group(track_id: str) -> int:
    """A stable 63-bit integer for a track id (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(track_id.encode("utf-8"), digest_size=8).digest(), "little") >> 1


@dataclass
class Crop:
    """Where a crop comes from; `collate` copies it into the batch (zero-padded to `crop_frames`)."""

    # [2, F, <= crop_frames] ([4, ...] for a pair): float16 magnitudes (a view of a float16 sample, or
    # a copy), or, with `levels`, a log8 sample's uint8 codes, which collate dequantises straight into
    # the batch with the normalisation folded into the levels (one pass instead of three, half the
    # bytes waiting in the shuffle buffer)
    data: np.ndarray
    crop_frames: int
    swap: bool  # left and right go to the batch in reverse order (in both signals of a pair)
    group: int
    key: str
    url: str = ""  # the shard it came from, for warnings
    levels: np.ndarray | None = None  # [channels, 256] float16: each channel's magnitude per code

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def frames(self) -> np.ndarray:
        """[channels, F, <= crop_frames] float16 magnitudes (codes dequantised here, in a new array)."""
        if self.levels is None:
            return self.data
        out = np.empty(self.data.shape, dtype=SPEC_DTYPE)
        for channel, (codes, levels) in enumerate(zip(self.data, self.levels)):
            dequantise(codes, levels, out[channel])
        return out

    def channel_order(self) -> list[int]:
        """Which stored channel goes to each batch channel: the swap reverses left and right (in both
        signals of a pair; the mixture stays first, the target second)."""
        order = list(range(self.data.shape[0]))
        return [c ^ 1 for c in order] if self.swap else order

    def oriented(self) -> np.ndarray:
        """The float16 frames with the swap applied."""
        frames = self.frames
        if not self.swap:
            return frames
        if frames.shape[0] == CHANNELS:
            return frames[::-1]  # a view
        return frames[self.channel_order()]

    def padded(self) -> np.ndarray:
        """The crop as the batch will hold it before normalisation: [2 or 4, F, crop_frames] float16."""
        out = np.zeros((self.shape[0], self.shape[1], self.crop_frames), dtype=SPEC_DTYPE)
        out[:, :, : self.shape[2]] = self.oriented()
        return out


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
    coded = [a.read_codes(start, start + length) for a in arrays]
    group, url = track_group(meta.track_id), sample.get("__url__", "")
    if all(c is not None for c in coded):  # log8: [channels, F, length] codes and a table per channel
        data = coded[0][0] if len(coded) == 1 else np.concatenate([codes for codes, _ in coded])
        levels = np.stack([levels for _, levels in coded for _ in range(CHANNELS)])
        return Crop(data, crop_frames, swap, group, sample["__key__"], url, levels)
    if len(arrays) == 1:
        frames = arrays[0].read(start, start + length)
        if arrays[0].views_payload and isinstance(sample[SPEC_KEY], bytes):
            frames = frames.copy()
    else:  # one [4, F, length] array of just the crop
        frames = np.concatenate([a.read(start, start + length) for a in arrays])
    return Crop(frames, crop_frames, swap, group, sample["__key__"], url)


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

    A float16 crop is gathered into one reused contiguous buffer, because torch's reductions and
    conversions run about twice as fast on contiguous input; one min/max pass both checks it and
    gives the normalisation peak, then it is converted, scaled and written into the batch in one pass.
    A log8 crop takes one pass: its peak is the level of its highest code, and its codes are looked up
    in levels already divided by it, straight into the batch (the same values, to the bit).
    """
    first = crops[0]
    channels, bins = first.shape[:2]
    if any(crop.shape[:2] != (channels, bins) for crop in crops):
        raise ValueError(
            f"samples of different shapes in one batch ({[c.key for c in crops[:4]]}...): mixed shard kinds?"
        )
    spec = _empty_batch((len(crops), channels, bins, first.crop_frames), dtype)
    gathered = None
    bad = []
    for number, (row, crop) in enumerate(zip(spec, crops)):
        length = crop.shape[2]
        if crop.levels is not None and dtype in (torch.float16, torch.float32):
            if not _write_coded(row, crop, dtype):
                bad.append(number)
                continue
        else:
            if gathered is None:
                gathered = np.empty((channels, bins, first.crop_frames), dtype=SPEC_DTYPE)
            # numpy's strided copy beats torch's here; the swap costs nothing in it
            np.copyto(gathered[:, :, :length], crop.oriented())
            frames = torch.from_numpy(gathered)[:, :, :length]
            low, high = torch.aminmax(frames)
            if not (bool(low >= 0) and bool(torch.isfinite(high))):  # NaN fails both
                bad.append(number)
                continue
            torch.div(frames, _peak(high, dtype), out=row[:, :, :length])
        if length < first.crop_frames:
            row[:, :, length:] = 0
    batch = {
        "spec": spec,
        "group": torch.tensor([c.group for c in crops], dtype=torch.long),
        "key": [c.key for c in crops],
    }
    return batch, bad


def _peak(high: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The divisor of a crop whose largest value is `high`: a 1-element tensor of the output dtype
    (which sets the division's dtype); a silent crop stays 0."""
    return high.float().clamp_(min=torch.finfo(dtype).tiny).reshape(1).to(dtype)


def _write_coded(row: torch.Tensor, crop: Crop, dtype: torch.dtype) -> bool:
    """row[:, :, :length] = the crop's levels divided by its peak, looked up by its codes; False when
    the peak is not finite (a float16 level overflows for a reference above 65504)."""
    channels = crop.shape[0]
    top = crop.data.reshape(channels, -1).max(axis=1)  # levels rise with the code
    high = torch.from_numpy(crop.levels[np.arange(channels), top]).max()
    if not bool(torch.isfinite(high)):
        return False
    tables = torch.empty((channels, crop.levels.shape[1]), dtype=dtype)
    torch.div(torch.from_numpy(crop.levels), _peak(high, dtype), out=tables)  # as the float16 path divides
    out, tables, length = row.numpy(), tables.numpy(), crop.shape[2]
    for channel, stored in enumerate(crop.channel_order()):
        if length == crop.crop_frames:
            dequantise(crop.data[stored], tables[stored], out[channel])
        else:
            out[channel, :, :length] = dequantise(crop.data[stored], tables[stored])
    return True


__all__ = ["Crop", "collate", "crop_sample", "track_group"]
