"""Chunked STFT magnitude of a streamed track, cut into fixed-size float16 clips.

The framing is the one pinned in `format.STFTParams` (centred, zero padded, 1 + N // hop frames,
periodic Hann, Nyquist dropped, |X| unnormalised). The streaming version keeps the samples
from the next unfinished frame on (fewer than n_fft) to finish the frames that straddle a boundary,
so its frames are exactly the frames of the whole-track STFT, and memory is one chunk plus one
clip whatever the track length.

FFT backend: torch on one thread. torch's CPU FFT is MKL's batched DFT in this build; numpy's is
pocketfft. On the 2-core dev VM one 3 s stereo chunk's magnitude takes ~1.0-1.5 ms of CPU with
torch against ~2.9-5.6 ms with `numpy.fft.rfft` (`python benchmarks/shard_memory.py --fft-only`).
One thread because a shard job already runs one worker per core, with ffmpeg decoding in its own
process next to it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import format as fmt
from pipeline.audio.decode import DEFAULT_CHUNK_SAMPLES, decode_chunks

FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class Clip:
    """One sample's worth of spectrogram: frames [start_frame, start_frame + valid_frames) of the track."""

    clip: int  # index of the clip within the track, from 0
    start_frame: int
    valid_frames: int  # the rest, up to clip_frames, is zero padding
    spec: np.ndarray  # float16 [2, bins, clip_frames]


def track_clips(
    path: str | os.PathLike,
    stft: fmt.STFTParams = fmt.STFTParams(),
    clip_frames: int = fmt.DEFAULT_CLIP_FRAMES,
    *,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
) -> Iterator[Clip]:
    """Decode `path` in chunks and yield its clips in order; raises decode.DecodeError on bad files.

    A track shorter than `format.min_valid_frames(clip_frames)` frames yields nothing.
    """
    chunks = decode_chunks(path, sample_rate=stft.sample_rate, chunk_samples=chunk_samples)
    try:
        yield from clips_from_chunks(chunks, stft, clip_frames)
    finally:
        chunks.close()  # a consumer that stops early must not leave ffmpeg running


def clips_from_chunks(chunks: Iterable[np.ndarray], stft: fmt.STFTParams, clip_frames: int) -> Iterator[Clip]:
    """Clips of the signal given as consecutive float32 `[n, 2]` chunks of any sizes."""
    return cut_clips(stft_frame_blocks(chunks, stft), clip_frames)


def stft_magnitude(signal: np.ndarray, stft: fmt.STFTParams = fmt.STFTParams()) -> np.ndarray:
    """Whole-signal reference: float32 `[2, bins, 1 + n // hop]` magnitude of a `[n, 2]` signal."""
    half = stft.n_fft // 2
    channels_first = np.asarray(signal, dtype=np.float32).T
    padded = np.pad(channels_first, ((0, 0), (half, half)))
    return _magnitude(padded, stft, _window(stft))


def to_spec_dtype(magnitude: np.ndarray) -> np.ndarray:
    """float32 magnitude (finite, within float16 range) -> the stored float16, in the same memory layout.

    torch's conversion is vectorised and ~30x faster than numpy's here; both round to nearest even,
    so the bits are the same as `magnitude.astype(np.float16)`. Keeping the layout (frame-major
    from the FFT) leaves the transposition to the float16 copy into the clip, half the bytes.
    """
    with _one_torch_thread():
        return torch.from_numpy(np.asarray(magnitude, dtype=np.float32)).to(torch.float16).numpy()


def stft_frame_blocks(chunks: Iterable[np.ndarray], stft: fmt.STFTParams) -> Iterator[np.ndarray]:
    """Consecutive float32 `[2, bins, k]` blocks of STFT frames, k >= 0, as each chunk completes them."""
    window = _window(stft)
    half = stft.n_fft // 2
    # Samples from the start of the next frame on, beginning with the left "centre" padding; the
    # right padding goes through the same path as one last chunk.
    pending = np.zeros((fmt.CHANNELS, half), dtype=np.float32)
    skip = 0  # samples still to drop before the next frame starts (only when hop > n_fft)
    for chunk in itertools.chain(_channels_first(chunks), [np.zeros((fmt.CHANNELS, half), dtype=np.float32)]):
        if skip:
            dropped = min(skip, chunk.shape[1])
            chunk, skip = chunk[:, dropped:], skip - dropped
        pending = np.concatenate([pending, chunk], axis=1)
        frames = _frames_in(pending.shape[1], stft)
        if frames:
            yield _magnitude(pending, stft, window, frames)
            next_start = frames * stft.hop
            skip = max(0, next_start - pending.shape[1])
            pending = pending[:, next_start:].copy()  # do not keep the chunk-sized buffer alive


def _channels_first(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for chunk in chunks:
        if chunk.ndim != 2 or chunk.shape[1] != fmt.CHANNELS:
            raise ValueError(f"chunks must be [n, {fmt.CHANNELS}], got {chunk.shape}")
        yield chunk.T.astype(np.float32, copy=False)


def cut_clips(frame_blocks: Iterable[np.ndarray], clip_frames: int) -> Iterator[Clip]:
    """Regroup `[2, bins, k]` frame blocks into float16 clips of `clip_frames` frames.

    The tail becomes a zero-padded clip when it has at least `format.min_valid_frames(clip_frames)`
    frames, else it is dropped.
    """
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be positive, got {clip_frames}")
    spec = None
    filled = 0
    clip_index = 0
    for block in frame_blocks:
        block = to_spec_dtype(block)
        used = 0
        while used < block.shape[2]:
            if spec is None:
                spec = np.zeros((block.shape[0], block.shape[1], clip_frames), dtype=fmt.SPEC_DTYPE)
            take = min(clip_frames - filled, block.shape[2] - used)
            spec[:, :, filled : filled + take] = block[:, :, used : used + take]
            filled += take
            used += take
            if filled == clip_frames:
                yield Clip(clip_index, clip_index * clip_frames, clip_frames, spec)
                spec, filled, clip_index = None, 0, clip_index + 1
    if spec is not None and filled >= fmt.min_valid_frames(clip_frames):
        yield Clip(clip_index, clip_index * clip_frames, filled, spec)


def _frames_in(padded_samples: int, stft: fmt.STFTParams) -> int:
    """How many whole frames fit in a buffer whose first sample starts a frame."""
    if padded_samples < stft.n_fft:
        return 0
    return (padded_samples - stft.n_fft) // stft.hop + 1


def _window(stft: fmt.STFTParams) -> torch.Tensor:
    with _one_torch_thread():
        return torch.hann_window(stft.n_fft, periodic=True, dtype=torch.float32)


def _magnitude(padded: np.ndarray, stft: fmt.STFTParams, window: torch.Tensor, frames: int | None = None) -> np.ndarray:
    """float32 `[2, bins, frames]` magnitude (a frame-major view) of the frames starting every hop from `padded[:, 0]`.

    Values are finite and at most the float16 maximum: decoded float WAVs can hold NaN/inf or huge
    samples, which float16 would store as inf/NaN. NaN becomes 0.
    """
    if frames is None:
        frames = _frames_in(padded.shape[1], stft)
    with _one_torch_thread():
        signal = torch.from_numpy(padded)[:, : (frames - 1) * stft.hop + stft.n_fft]
        # Contiguous whatever the caller's layout: MKL picks its kernel by the input strides, and a
        # transposed (Fortran-order) buffer rounds the last bit differently on some CPUs (seen on an
        # AVX-512 Xeon, not on the AMD dev VM), which made chunked and whole-track frames differ.
        windowed = (signal.unfold(-1, stft.n_fft, stft.hop) * window).contiguous()  # [2, frames, n_fft]
        # A view: memory stays frame-major, as the FFT wrote it; transposing now would copy.
        spectrum = torch.fft.rfft(windowed, dim=-1)[:, :, : stft.bins].transpose(1, 2).numpy()
    magnitude = np.abs(spectrum)  # numpy's complex abs is ~15x faster than torch's here; keeps the layout
    if not np.isfinite(magnitude).all():
        np.nan_to_num(magnitude, copy=False, nan=0.0, posinf=FLOAT16_MAX)
    np.minimum(magnitude, FLOAT16_MAX, out=magnitude)
    return magnitude


@contextlib.contextmanager
def _one_torch_thread():
    # Every torch op here runs inside this: a single op on the default 2 threads leaves OpenMP's
    # second thread spin-waiting afterwards, which cost 3-7 ms of CPU per chunk on the dev VM.
    # Scoped rather than a global torch.set_num_threads(1) so importers (tests, the trainer) keep theirs.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
