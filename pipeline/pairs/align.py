"""Line up a mixture and its partner: estimate the offset, then stream both on the mixture's grid.

Separately obtained instrumentals are often shifted by tens to hundreds of milliseconds (another
master, another encoder's delay). The offset is the lag that maximises the normalised
cross-correlation of the two mono signals over the mixture's first `window_seconds`, searched
within +-`max_offset` seconds, computed with one FFT (sample-exact at 44.1 kHz: a 30 s window and
+-3 s cost one 2**21-point FFT). The peak value says whether the partner belongs to the mixture at
all: the right instrumental correlates strongly (it is most of the mixture), another song does not.
The peak must also be clear: music repeats (a beat, a bar, a held note), so the best lag of a
partner that is not there, or that lies beyond the searched range, is one of many near-equal lags;
the true lag of the right partner stands above every lag more than `PEAK_EXCLUSION` away from it.
A peak of the opposite sign that beats the positive one is a polarity-inverted partner.

`target_energies` then streams the whole pair once: a target that is (nearly) silent, or that is
(nearly) the mixture itself, teaches nothing and poisons evaluation, so the pair is refused.

`paired_chunks` is what every reader of a pair uses (shard stage, evaluation): the mixture and the
target, sample-aligned and of the mixture's length, as equal-length chunks; memory is a chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline import format as fmt
from pipeline.audio.decode import DEFAULT_CHUNK_SAMPLES, decode_chunks
from pipeline.audio.reader import SampleReader

DEFAULT_MAX_OFFSET = 3.0  # seconds
DEFAULT_WINDOW = 30.0  # seconds of the mixture that are correlated
DEFAULT_MIN_CORRELATION = 0.2
DEFAULT_MAX_LENGTH_DIFFERENCE = 1.0  # seconds, after the offset
DEFAULT_MIN_PEAK_MARGIN = 0.1  # the runner-up lag must score below (1 - this) x the peak
PEAK_EXCLUSION = 0.05  # seconds around the peak that belong to it (its own main lobe)
DEGENERATE_DB = 30.0  # a target this far below the mixture is silence; a mixture this close to the target is it


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
    return aligned_chunks(
        pair.mixture_path, pair.target_path, pair.offset_seconds, pair.target_kind, sample_rate, chunk_samples
    )


def aligned_chunks(
    mixture_path: str,
    partner_path: str,
    offset_seconds: float,
    target_kind: str,
    sample_rate: int = fmt.SAMPLE_RATE,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`paired_chunks` of two files not yet recorded as a pair (the pairs stage checks them with it)."""
    mixture = SampleReader(decode_chunks(mixture_path, sample_rate=sample_rate, chunk_samples=chunk_samples))
    partner = None
    try:
        partner = _shifted_reader(partner_path, round(offset_seconds * sample_rate), sample_rate)
        while True:
            mix = mixture.read(chunk_samples)
            if not len(mix):
                return
            other = partner.read(len(mix))
            if len(other) < len(mix):
                other = np.concatenate([other, np.zeros((len(mix) - len(other), fmt.CHANNELS), np.float32)])
            yield mix, (mix - other if target_kind == fmt.TARGET_RESIDUAL else other)
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


@dataclass(frozen=True)
class Alignment:
    """The correlation search's answer: the best lag, and what competes with it."""

    offset: float  # seconds: partner(t + offset) best matches mixture(t)
    correlation: float  # normalised cross-correlation at `offset`
    runner_up: float  # the best correlation more than PEAK_EXCLUSION away from `offset`
    runner_up_offset: float
    inverted: float  # the most negative correlation (a polarity-inverted partner peaks there)
    inverted_offset: float

    def problem(self, min_correlation: float, min_peak_margin: float, max_offset: float) -> str | None:
        """Why this is no match (one line, without the file names), or None."""
        if -self.inverted > max(self.correlation, min_correlation):
            return (
                f"polarity-inverted: it correlates at {self.inverted:.3f} "
                f"(offset {self.inverted_offset * 1000:+.1f} ms) against {self.correlation:.3f} upright: "
                "invert it (ffmpeg -af volume=-1) and re-run"
            )
        if self.correlation < min_correlation:
            return f"no match (correlation {self.correlation:.3f} < {min_correlation:g} within +-{max_offset:g} s)"
        if self.runner_up > (1.0 - min_peak_margin) * self.correlation:
            return (
                f"no match: no clear peak within +-{max_offset:g} s (best {self.correlation:.3f} at "
                f"{self.offset * 1000:+.1f} ms, next {self.runner_up:.3f} at {self.runner_up_offset * 1000:+.1f} ms; "
                f"--min-peak-margin {min_peak_margin:g}), or its true offset lies beyond --max-offset"
            )
        return None


def estimate_offset(
    mixture: str,
    partner: str,
    max_offset: float = DEFAULT_MAX_OFFSET,
    window: float = DEFAULT_WINDOW,
    sample_rate: int = fmt.SAMPLE_RATE,
) -> tuple[float, float]:
    """(offset_seconds, correlation): partner(t + offset) best matches mixture(t), |offset| <= max_offset."""
    found = align(mixture, partner, max_offset, window, sample_rate)
    return found.offset, found.correlation


def align(
    mixture: str,
    partner: str,
    max_offset: float = DEFAULT_MAX_OFFSET,
    window: float = DEFAULT_WINDOW,
    sample_rate: int = fmt.SAMPLE_RATE,
) -> Alignment:
    """The normalised cross-correlation of the two over every lag within +-max_offset, summarised.

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
    best, worst = int(np.argmax(scores)), int(np.argmin(scores))
    if norms[best] <= floor:
        raise AlignmentError(f"the partner is silent within +-{max_offset:g} s of the mixture's start")
    lobe = int(PEAK_EXCLUSION * sample_rate)
    rest = scores.copy()
    rest[max(0, best - lobe) : best + lobe + 1] = -np.inf
    runner = int(np.argmax(rest)) if np.isfinite(rest).any() else best
    return Alignment(
        offset=(best - lag_max) / sample_rate,
        correlation=float(scores[best]),
        runner_up=float(rest[runner]) if runner != best else 0.0,
        runner_up_offset=(runner - lag_max) / sample_rate,
        inverted=float(scores[worst]),
        inverted_offset=(worst - lag_max) / sample_rate,
    )


def target_energies(
    mixture: str, partner: str, offset_seconds: float, target_kind: str, sample_rate: int = fmt.SAMPLE_RATE
) -> tuple[float, float, float]:
    """(mixture energy, target energy, energy of the mixture's part orthogonal to the target) over
    the whole aligned pair: the target is silent when the second is tiny, and a scaled copy of the
    mixture when the third is."""
    mix_energy = target_energy = cross = 0.0
    for mix, target in aligned_chunks(mixture, partner, offset_seconds, target_kind, sample_rate):
        mix64, target64 = mix.astype(np.float64), target.astype(np.float64)
        mix_energy += float(np.sum(mix64**2))
        target_energy += float(np.sum(target64**2))
        cross += float(np.sum(mix64 * target64))
    orthogonal = mix_energy - (cross**2 / target_energy if target_energy > 0 else 0.0)
    return mix_energy, target_energy, max(orthogonal, 0.0)


def degenerate_target(mix_energy: float, target_energy: float, orthogonal: float, target_kind: str) -> str | None:
    """Why a pair's target is no separation target (one line), or None."""
    limit = 10 ** (-DEGENERATE_DB / 10)
    if mix_energy <= 0:
        return "the mixture is silent"
    what = "mixture minus the vocals stem" if target_kind == fmt.TARGET_RESIDUAL else "instrumental"
    if target_energy < limit * mix_energy:
        db = 10 * np.log10(max(target_energy, 1e-300) / mix_energy)
        cause = " (the vocals stem is the mixture)" if target_kind == fmt.TARGET_RESIDUAL else ""
        return f"degenerate target: the {what} is (nearly) silent, {db:.1f} dB below the mixture{cause}"
    if orthogonal < limit * mix_energy:
        db = 10 * np.log10(max(orthogonal, 1e-300) / mix_energy)
        cause = " (the vocals stem is silent)" if target_kind == fmt.TARGET_RESIDUAL else ""
        return (
            f"degenerate target: the {what} is (nearly) the mixture itself, nothing else in it is "
            f"{db:.1f} dB below it{cause}"
        )
    return None


__all__ = [
    "AlignmentError",
    "Alignment",
    "paired_chunks",
    "aligned_chunks",
    "estimate_offset",
    "align",
    "target_energies",
    "degenerate_target",
    "DEFAULT_MIN_PEAK_MARGIN",
    "DEFAULT_MAX_OFFSET",
    "DEFAULT_WINDOW",
    "DEFAULT_MIN_CORRELATION",
    "DEFAULT_MAX_LENGTH_DIFFERENCE",
]
