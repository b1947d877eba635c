"""`trainer evaluate-separation`: SDR of fine-tuned checkpoints on whole pair tracks, next to the
two references every magnitude-mask model sits between.

The audio comes from the pairs manifest (shards hold no phase) through `pairs.align.paired_chunks`,
so the target is the aligned one the model was trained on; each checkpoint separates the mixture
through `Separator.instrumental_chunks`, the path `trainer separate` takes. Vocals are the residual
(mixture - instrumental) for estimates and references alike.

Two definitions of SDR, per source and track, and their median over tracks:
- **MDX** (the Music Demixing Challenge 2021 and Music-Source-Separation-Training "sdr"):
  10 * log10(sum s^2 / sum (s - s_hat)^2) over the whole track, both channels, eps 1e-7;
- **BSSEval v4** (museval, the SiSEC 2018 / MUSDB18 reference): the median over its 1 s windows,
  so numbers compare with published MUSDB18 tables.

References on the same tracks: the mixture itself as the instrumental estimate (the floor; its
vocals estimate is silence, which BSSEval cannot score: n/a) and the oracle ratio mask
(|target| / |mixture| clipped to [0, 1], mixture phase, the checkpoint's STFT: the ceiling of any
magnitude-mask model at that resolution).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline import format as fmt

MDX_EPS = 1e-7
FLOOR = "mixture as the estimate (floor)"
ORACLE = "oracle ratio mask (ceiling)"


def mdx_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(sum s^2 / sum (s - s_hat)^2), eps as in the MDX challenge's metric."""
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    return float(10 * np.log10((np.sum(reference**2) + MDX_EPS) / (np.sum((reference - estimate) ** 2) + MDX_EPS)))


def bsseval_sdr(references: np.ndarray, estimates: np.ndarray) -> list[float]:
    """museval's BSSEval v4 SDR per source (median over 1 s windows); NaN where it is undefined (a
    silent source)."""
    import museval

    try:
        sdr, _, _, _ = museval.evaluate(references, estimates)
    except ValueError:  # a silent reference or estimate: the metric is undefined
        return [math.nan] * len(references)
    return [float(np.nanmedian(row)) if np.isfinite(row).any() else math.nan for row in sdr]


def oracle_instrumental(mixture: np.ndarray, target: np.ndarray, stft: fmt.STFTParams) -> np.ndarray:
    """The ideal ratio mask |T| / |M| clipped to [0, 1] applied to the mixture, mixture phase."""
    window = torch.hann_window(stft.n_fft, periodic=True)

    def spectrum(signal: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(signal.T, dtype=np.float32))
        return torch.stft(x, stft.n_fft, stft.hop, window=window, center=True, pad_mode="constant", return_complex=True)

    m, t = spectrum(mixture), spectrum(target)
    mask = (t.abs() / m.abs().clamp_min(1e-12)).clamp(0.0, 1.0)
    out = torch.istft(m * mask, stft.n_fft, stft.hop, window=window, center=True, length=len(mixture))
    return out.T.numpy()


@dataclass
class Scores:
    instrumental_mdx: list[float] = field(default_factory=list)
    vocals_mdx: list[float] = field(default_factory=list)
    instrumental_bss: list[float] = field(default_factory=list)
    vocals_bss: list[float] = field(default_factory=list)
    seconds: float = 0.0  # spent separating (a checkpoint or ensemble row; 0 for the references)
    audio_seconds: float = 0.0  # of the tracks separated

    @property
    def time_per_audio_second(self) -> float:
        return self.seconds / self.audio_seconds if self.seconds and self.audio_seconds else math.nan

    def add(self, mixture, instrumental, estimate, bsseval: bool) -> tuple[float, ...]:
        vocals, vocals_estimate = mixture - instrumental, mixture - estimate
        values = [mdx_sdr(instrumental, estimate), mdx_sdr(vocals, vocals_estimate)]
        if bsseval:
            values += bsseval_sdr(np.stack([instrumental, vocals]), np.stack([estimate, vocals_estimate]))
        else:
            values += [math.nan, math.nan]
        for column, value in zip(
            (self.instrumental_mdx, self.vocals_mdx, self.instrumental_bss, self.vocals_bss), values
        ):
            column.append(value)
        return tuple(values)

    def medians(self) -> tuple[float, ...]:
        return tuple(
            _median(c) for c in (self.instrumental_mdx, self.instrumental_bss, self.vocals_mdx, self.vocals_bss)
        )


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def printable(name: str) -> str:
    """A name as one table cell: control characters (a newline in a folder name) escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in name)


def _fmt(value: float) -> str:
    return f"{value:8.2f}" if math.isfinite(value) else f"{'n/a':>8}"


def select_pairs(manifests: str | os.PathLike, split: str = "val", tracks: int | None = None) -> list[fmt.PairRecord]:
    """The first `tracks` pairs of the split, by name: the tracks every row is scored on (a pair
    marked `duplicate_of` is its canonical pair's song, scored once)."""
    path = os.path.join(manifests, fmt.PAIRS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no pairs manifest (run `pipeline pairs` first)")
    pairs = sorted(
        (p for p in fmt.read_pairs(manifests) if p.split == split and p.duplicate_of is None),
        key=lambda p: (p.name, p.id),
    )
    if not pairs:
        raise ValueError(f"{path}: no pairs in split {split!r}")
    return pairs[:tracks] if tracks else pairs


def evaluate_separation(
    checkpoints: list[str],
    manifests: str | os.PathLike,
    split: str = "val",
    tracks: int | None = None,
    bsseval: bool = True,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
    labels: list[str] | None = None,
    window_frames: int | None = None,
    overlap: float | None = None,
    tta: bool = False,
    ensemble: bool = False,
) -> tuple[dict[str, Scores], str]:
    """Score every checkpoint and the two references on the split's pairs; returns (scores by row
    name, checkpoints first in their order, then the ensemble of them all if `ensemble`, then the
    references; the printed table, with each row's separation time). `labels` name the checkpoints'
    rows (default: run/step). `window_frames`, `overlap` and `tta` are `trainer separate`'s. A pair
    whose audio cannot be read is reported and skipped."""
    from tqdm import tqdm

    from pipeline.audio.decode import DecodeError
    from pipeline.pairs.align import paired_chunks
    from pipeline.shard.write import pair_changed
    from trainer.separation.ensemble import Ensemble
    from trainer.separation.separate import load_separator

    if labels is not None and len(labels) != len(checkpoints):
        raise ValueError(f"{len(labels)} labels for {len(checkpoints)} checkpoints")
    if ensemble and len(checkpoints) < 2:
        raise ValueError("--ensemble averages the --checkpoint rows: give at least two")
    path = os.path.join(manifests, fmt.PAIRS_FILE)
    pairs = select_pairs(manifests, split, tracks)
    separators = [load_separator(c, device, batch_size, window_frames, overlap) for c in checkpoints]
    stft = separators[0].stft if separators else fmt.STFTParams()
    runners = [Ensemble([s], tta) for s in separators] + ([Ensemble(separators, tta)] if ensemble else [])
    names = list(labels) if labels else [s.name for s in separators]
    names = [n + (" (TTA)" if tta else "") for n in names]
    names += [f"ensemble of the {len(separators)}" + (" (TTA)" if tta else "")] if ensemble else []
    names += [FLOOR, ORACLE]
    names = [name if names.index(name) == i else f"{name} #{i + 1}" for i, name in enumerate(names)]
    scores = {name: Scores() for name in names}
    lines, skipped = [], []
    show = sys.stderr.isatty() if progress is None else progress
    for pair in tqdm(pairs, desc="evaluate-separation", unit="track", disable=not show):
        changed = pair_changed(pair)
        if changed is not None:
            skipped.append(changed)
            continue
        try:
            chunks = list(paired_chunks(pair, sample_rate=stft.sample_rate))
        except DecodeError as exc:
            skipped.append(str(exc))
            continue
        mixture = np.concatenate([m for m, _ in chunks])
        instrumental = np.concatenate([t for _, t in chunks])
        estimates = []
        for name, runner in zip(names, runners):
            start = time.perf_counter()
            estimates.append(np.concatenate(list(runner.instrumental_chunks(m for m, _ in chunks))))
            scores[name].seconds += time.perf_counter() - start
            scores[name].audio_seconds += len(mixture) / stft.sample_rate
        estimates += [mixture, oracle_instrumental(mixture, instrumental, stft)]
        for name, estimate in zip(names, estimates):
            values = scores[name].add(mixture, instrumental, estimate, bsseval)
            lines.append(
                f"  {printable(pair.name)[:28]:<28} {printable(name)[:44]:<44}" + "".join(_fmt(v) for v in values)
            )
    done = len(pairs) - len(skipped)
    if not done:
        raise ValueError(f"no pair of split {split!r} could be read: {skipped[0]}")
    width = max(len(n) for n in names) + 2
    table = [
        f"evaluate-separation: {done} tracks of split {split} ({path}), whole tracks, 44.1 kHz stereo; "
        f"SDR in dB, median over tracks",
        f"{'':<{width}}{'instrumental':>18}{'vocals (residual)':>20}{'separation':>14}",
        f"{'':<{width}}{'MDX':>8}{'BSSEval4':>10}{'MDX':>10}{'BSSEval4':>10}{'s / audio s':>14}",
    ]
    for name in names:
        inst_mdx, inst_bss, voc_mdx, voc_bss = scores[name].medians()
        speed = scores[name].time_per_audio_second
        speed = f"{speed:14.3f}" if math.isfinite(speed) else ""
        table.append(
            f"{printable(name):<{width}}{_fmt(inst_mdx)}{_fmt(inst_bss):>10}{_fmt(voc_mdx):>10}{_fmt(voc_bss):>10}{speed}"
        )
    if not bsseval:
        table.append("(BSSEval v4 not computed: --no-bsseval)")
    table.append("per track (instrumental MDX, vocals MDX, instrumental BSSEval4, vocals BSSEval4):")
    table += lines
    table += [f"skipped: {reason}" for reason in skipped]
    return scores, "\n".join(table)


__all__ = [
    "evaluate_separation",
    "select_pairs",
    "mdx_sdr",
    "bsseval_sdr",
    "oracle_instrumental",
    "Scores",
    "FLOOR",
    "ORACLE",
]
