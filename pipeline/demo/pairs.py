"""The demo's separation pairs: a synthetic lead voice over synthetic accompaniment, mixture = sum.

Both layouts `pipeline pairs` reads, so the demo shows each: song folders (`stems/Demo Song N/`
with `mixture.flac` and either `instrumental.flac` or `vocals.flac`, so both target kinds occur) and
two parallel folders (`mixtures/`, `instrumentals/`) whose instrumentals start 120 ms late in their
files, as separately obtained instrumentals often do: `pipeline pairs` finds and records the offset.
FLAC, muxed bit-exactly (synth.encode), so the files and the pair ids are the same on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.demo.synth import encode, synth_music, synth_voice
from pipeline.durable import staged_path

SAMPLE_RATE = 44100
PARALLEL_OFFSET = 0.12  # seconds the parallel layout's instrumentals start late


def _write(path: Path, signal: np.ndarray) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_path(path) as tmp:  # an interrupted run never leaves a truncated file behind
        encode(signal, SAMPLE_RATE, tmp)


def make_demo_pairs(out_dir: str | os.PathLike, songs: int = 8, seconds: float = 16.0, seed: int = 1) -> Path:
    """Create (or complete) the pairs under `out_dir`; returns it. The last quarter of the songs (at
    least one) go to the parallel layout."""
    out = Path(out_dir)
    parallel = max(1, songs // 4)
    for index in range(songs):
        accompaniment = 0.55 * synth_music(seconds, SAMPLE_RATE, 2, seed=seed * 1000 + index)
        voice = synth_voice(seconds, SAMPLE_RATE, 2, seed=seed * 1000 + index)
        name = f"Demo Song {index + 1}"
        if index >= songs - parallel:
            late = np.zeros((int(PARALLEL_OFFSET * SAMPLE_RATE), 2), dtype=np.float32)
            _write(out / "mixtures" / f"{name}.flac", accompaniment + voice)
            _write(out / "instrumentals" / f"{name}.flac", np.concatenate([late, accompaniment]))
        else:
            folder = out / "stems" / name
            _write(folder / "mixture.flac", accompaniment + voice)
            if index % 2 == 0:
                _write(folder / "instrumental.flac", accompaniment)
            else:
                _write(folder / "vocals.flac", voice)
    return out


__all__ = ["make_demo_pairs", "PARALLEL_OFFSET"]
