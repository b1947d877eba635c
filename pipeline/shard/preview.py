"""`pipeline preview`: a picture of the first samples of a shard, to see what the trainer will see."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import format as fmt


@dataclass
class PreviewSample:
    key: str
    spec: np.ndarray  # [2, bins, frames] float16
    meta: fmt.SampleMeta


def first_shard(source: str | os.PathLike) -> Path:
    """A tar file as given, or the first shard listed by a directory's index (train, else val)."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise ValueError(f"{source}: no such shard file or directory")
    for split in fmt.SPLITS:
        index_path = source / fmt.index_name(split)
        if index_path.exists():
            index = fmt.read_index(index_path)
            if index.shardlist:
                return source / index.shardlist[0].url
    tars = sorted(source.glob("*.tar"))
    if not tars:
        raise ValueError(f"{source}: no shard index and no .tar files")
    return tars[0]


def read_samples(shard: str | os.PathLike, n: int) -> list[PreviewSample]:
    """The first `n` samples of a shard, decoded without pickle (a pair sample gives two rows:
    mixture and target)."""
    import tarfile

    import webdataset as wds

    samples = []
    dataset = wds.WebDataset(str(shard), shardshuffle=False, empty_check=False)
    try:
        for raw in dataset:
            try:
                stored, meta = fmt.read_sample(raw)
                arrays = [array.read() for array in stored]
            except ValueError as exc:  # one bad sample does not hide the others
                print(f"warning: {shard}: sample {raw['__key__']!r} skipped ({exc})", file=sys.stderr)
                continue
            labels = (" mixture", " target") if len(arrays) == 2 else ("",)  # a pair: one above the other
            for array, label in zip(arrays, labels):
                samples.append(PreviewSample(raw["__key__"] + label, array, meta))
            if len(samples) >= len(labels) * n:
                break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{shard}: not a readable shard ({exc.__class__.__name__}: {exc})") from exc
    if not samples:
        raise ValueError(f"{shard}: no samples")
    return samples


def log_magnitude_db(spec: np.ndarray, floor_db: float = -80.0) -> np.ndarray:
    """Magnitude -> dB relative to the sample's max, floored, so quiet and loud clips look alike."""
    mag = spec.astype(np.float32)
    ref = max(float(mag.max()), 1e-8)
    return np.maximum(20.0 * np.log10(np.maximum(mag, 1e-10) / ref), floor_db)


def spectrogram_extent(meta: fmt.SampleMeta, frames: int) -> tuple[float, float, float, float]:
    """imshow extent in (seconds within the track, kHz)."""
    stft = fmt.STFTParams.from_dict(meta.stft)
    seconds_per_frame = stft.hop / stft.sample_rate
    start = meta.start_frame * seconds_per_frame
    top_khz = stft.bins * stft.sample_rate / stft.n_fft / 1000.0
    return (start, start + frames * seconds_per_frame, 0.0, top_khz)


def render_preview(samples: list[PreviewSample], out: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), 1, figsize=(11, 2.6 * len(samples)), squeeze=False)
    for ax, sample in zip(axes[:, 0], samples):
        frames = sample.spec.shape[-1]
        mono = sample.spec.astype(np.float32).mean(axis=0)
        image = ax.imshow(
            log_magnitude_db(mono),
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=spectrogram_extent(sample.meta, frames),
        )
        valid_end = spectrogram_extent(sample.meta, sample.meta.valid_frames)[1]
        if sample.meta.valid_frames < frames:
            ax.axvline(valid_end, color="cyan", linestyle="--", linewidth=1, label="padding starts")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_title(f"{sample.meta.album_key}  |  track {sample.meta.track_id}  clip {sample.meta.clip}", fontsize=9)
        ax.set_ylabel("kHz")
        fig.colorbar(image, ax=ax, label="dB re max", pad=0.01)
    axes[-1, 0].set_xlabel("time in track (s)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def run_preview(source: str | os.PathLike, out: str | os.PathLike, n: int) -> Path:
    shard = first_shard(source)
    return render_preview(read_samples(shard, n), out)
