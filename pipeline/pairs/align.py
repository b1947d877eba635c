"""Line up a mixture and its partner: estimate the offset, then stream both on the mixture's grid.

Separately obtained instrumentals are often shifted by tens to hundreds of milliseconds (another
master, another encoder's delay). The offset is the lag that maximises the normalised
cross-correlation of the two mono signals over the mixture's first `window_seconds`, searched
within +-`max_offset` seconds, computed with one FFT (sample-exact at 44.1 kHz: a 30 s window and
+-3 s cost one 2**21-point FFT). The peak value says whether the partner belongs to the mixture at
all: the right instrumental correlates strongly (it is most of the mixture), another song does not.

`paired_chunks` is what every reader of a pair uses (shard stage, evaluation): the mixture and the
target, sample-aligned and of the mixture's length, as equal-length chunks; memory is a chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from pipeline import format as fmt
from pipeline.audio.decode import DEFAULT_CHUNK_SAMPLES, decode_chunks
from pipeline.audio.reader import SampleReader

DEFAULT_MAX_OFFSET = 3.0  # seconds
DEFAULT_WINDOW = 30.0  # seconds of the mixture that are correlated
DEFAULT_MIN_CORRELATION = 0.2
DEFAULT_MAX_LENGTH_DIFFERENCE = 1.0  # seconds, after the offset


class AlignmentError(Exception):
    """The partner does not line up with the mixture; str() is the one-line reason."""


def _shifted_reader(path: str | os.PathLike, offset_samples: int, sample_rate: int) -> SampleReader:
    """The partner's samples from `offset_samples` on (zeros first when negative)."""
    chunks = decode_chunks(path, sample_rate=sample_rate)
    if offset_samples < 0:
        lead = np.zeros((-offset_samples, fmt.CHANNELS), dtype=np.float32)

        def with_lead():
            yield lead
            yield from chunks

        return SampleReader(with_lead())  # closing it closes the decoder inside (yield from)
    reader = SampleReader(chunks)
    reader.skip(offset_samples)
    return reader


def paired_chunks(
    pair: fmt.PairRecord, sample_rate: int = fmt.SAMPLE_RATE, chunk_samples: int = DEFAULT_CHUNK_SAMPLES
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(mixture, target) float32 `[n, 2]` chunks of equal length covering the mixture; the target is
    the partner shifted by the pair's offset, zero-padded or cut to the mixture's length, and for
    TARGET_RESIDUAL the mixture minus the partner. Raises decode.DecodeError naming the bad file."""
    mixture = SampleReader(decode_chunks(pair.mixture_path, sample_rate=sample_rate, chunk_samples=chunk_samples))
    partner = None
    try:
        partner = _shifted_reader(pair.target_path, round(pair.offset_seconds * sample_rate), sample_rate)
        while True:
            mix = mixture.read(chunk_samples)
            if not len(mix):
                return
            other = partner.read(len(mix))
            if len(other) < len(mix):
                other = np.concatenate([other, np.zeros((len(mix) - len(other), fmt.CHANNELS), np.float32)])
            yield mix, (mix - other if pair.target_kind == fmt.TARGET_RESIDUAL else other)
    finally:
        mixture.close()
        if partner is not None:
            partner.close()


def _mono_head(path: str, seconds: float, sample_rate: int) -> np.ndarray:
    reader = SampleReader(decode_chunks(path, sample_rate=sample_rate))
    try:
        return reader.read(int(seconds * sample_rate)).mean(axis=1, dtype=np.float64)
    finally:
        reader.close()


def estimate_offset(
    mixture: str,
    partner: str,
    max_offset: float = DEFAULT_MAX_OFFSET,
    window: float = DEFAULT_WINDOW,
    sample_rate: int = fmt.SAMPLE_RATE,
) -> tuple[float, float]:
    """(offset_seconds, correlation): partner(t + offset) best matches mixture(t), |offset| <= max_offset.

    Raises AlignmentError when the mixture's window is silent or the partner is silent where it
    should overlap. Raises decode.DecodeError for a file that cannot be decoded.
    """
    lag_max = int(round(max_offset * sample_rate))
    mix = _mono_head(mixture, window, sample_rate)
    other = _mono_head(partner, window + max_offset, sample_rate)
    if not len(mix) or np.sqrt(np.mean(mix**2)) < 1e-5:
        raise AlignmentError(f"the mixture's first {window:g} s are silent: nothing to align on")
    # other_padded[j] = partner[j - lag_max]; lags -lag_max..lag_max are shifts 0..2*lag_max
    padded = np.zeros(len(mix) + 2 * lag_max)
    padded[lag_max : lag_max + min(len(other), len(mix) + lag_max)] = other[: len(mix) + lag_max]
    size = 1 << int(np.ceil(np.log2(len(padded) + len(mix))))
    spectrum = np.fft.rfft(padded, size) * np.conj(np.fft.rfft(mix, size))
    shifts = 2 * lag_max + 1
    dots = np.fft.irfft(spectrum, size)[:shifts]
    energy = np.concatenate([[0.0], np.cumsum(padded**2)])
    window_energy = energy[len(mix) : len(mix) + shifts] - energy[:shifts]
    norms = np.sqrt(np.maximum(window_energy, 0.0)) * np.sqrt(np.sum(mix**2))
    floor = 1e-6 * np.sqrt(np.sum(mix**2)) * np.sqrt(len(mix))
    scores = np.where(norms > floor, dots / np.maximum(norms, floor), 0.0)
    best = int(np.argmax(scores))
    if norms[best] <= floor:
        raise AlignmentError(f"the partner is silent within +-{max_offset:g} s of the mixture's start")
    return (best - lag_max) / sample_rate, float(scores[best])


__all__ = [
    "AlignmentError",
    "paired_chunks",
    "estimate_offset",
    "DEFAULT_MAX_OFFSET",
    "DEFAULT_WINDOW",
    "DEFAULT_MIN_CORRELATION",
    "DEFAULT_MAX_LENGTH_DIFFERENCE",
]
