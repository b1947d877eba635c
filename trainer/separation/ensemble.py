"""Test-time augmentation and ensembles: the instrumental as the average of several passes.

- **Ensemble** (`--checkpoint` repeated): every separator runs over the whole track and their
  instrumentals are averaged, as MSST's and UVR's ensembles average their models' outputs.
- **TTA** (`--tta`): each separator also masks the stereo-swapped window (its mask swapped back and
  averaged with the straight one, in the same model call: `Separator.stereo_swap`) and runs a second
  time on a window grid that starts half a window earlier, so that every sample that sat at a window's
  edge in the first grid sits near a window's middle in the second (vocal-remover's `--tta` offsets
  its windows by half a window the same way).

With the mixture's phase and one window grid, averaging instrumentals is averaging masks (the
inverse STFT is linear); across grids the instrumentals are what can be averaged. Every pass reads
the same decoded chunks (itertools.tee), so the track is decoded once and memory stays a few
windows per pass. The passes are summed in a fixed order: the result is deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from trainer.separation.separate import Separator

CHUNK_SAMPLES = 65536  # of the averaged output


@dataclass
class Ensemble:
    """One or more separators, each with or without TTA, run as one."""

    separators: list[Separator]
    tta: bool = False
    passes: list[tuple[Separator, int]] = field(init=False)

    def __post_init__(self):
        if not self.separators:
            raise ValueError("an ensemble needs at least one checkpoint")
        rates = {s.stft.sample_rate for s in self.separators}
        if len(rates) > 1:
            raise ValueError(f"the checkpoints of an ensemble must share a sample rate, got {sorted(rates)}")
        for separator in self.separators:
            separator.stereo_swap = self.tta
        self.passes = [(s, 0) for s in self.separators] + ([(s, s.shift) for s in self.separators] if self.tta else [])

    @property
    def sample_rate(self) -> int:
        return self.separators[0].stft.sample_rate

    @property
    def name(self) -> str:
        names = " + ".join(s.name for s in self.separators)
        return names + (" (TTA)" if self.tta else "")

    def instrumental_chunks(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """As `Separator.instrumental_chunks`: float32 `[n, 2]` chunks in, the averaged instrumental
        out, the same total length."""
        if len(self.passes) == 1:
            yield from self.separators[0].instrumental_chunks(chunks)
            return
        from pipeline.audio.reader import SampleReader

        streams = itertools.tee(iter(chunks), len(self.passes))
        readers = []
        for (separator, shift), stream in zip(self.passes, streams):
            reader = SampleReader(separator.instrumental_chunks(_delayed(stream, shift)))
            reader.skip(shift)  # the estimate of the silence put in front
            readers.append(reader)
        while True:
            parts = [reader.read(CHUNK_SAMPLES) for reader in readers]
            if not len(parts[0]):
                return
            total = parts[0].copy()
            for part in parts[1:]:
                total += part
            yield total / np.float32(len(parts))


def _delayed(chunks: Iterator[np.ndarray], samples: int) -> Iterator[np.ndarray]:
    """The stream behind `samples` of silence."""
    if samples:
        yield np.zeros((samples, 2), dtype=np.float32)
    yield from chunks


def load_ensemble(
    checkpoints: list[str],
    device: str = "auto",
    batch_size: int | None = None,
    window_frames: int | None = None,
    overlap: float | None = None,
    tta: bool = False,
) -> Ensemble:
    """An Ensemble of fine-tuned runs, checkpoints or exported folders (ValueError naming a bad one)."""
    from trainer.separation.separate import load_separator

    separators = [load_separator(c, device, batch_size, window_frames, overlap) for c in checkpoints]
    return Ensemble(separators, tta)


__all__ = ["Ensemble", "load_ensemble", "CHUNK_SAMPLES"]
