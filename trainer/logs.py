"""What a run records: TensorBoard events, per-step metrics.jsonl, and spectrogram image grids.

Only rank 0 creates a `RunLog`; other ranks get `NullLog`, so the loop never branches on rank to log.
metrics.jsonl has one JSON line per training step (`"split": "train"`) and per validation
(`"split": "val"`), with the wall-clock `time` it was written. On resume it is cut back to the
checkpoint's step, so the file is one consistent history, and TensorBoard events after that step
are purged the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.durable import exclusive
from pipeline.records import record_from_dict

METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"


@dataclass
class MetricsRow:
    """The fields of a metrics.jsonl line that are read back (the values vary by split)."""

    step: int
    split: str


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(line, row) for each well-formed line; a line torn by kill -9, or of the wrong shape, is skipped."""
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            record_from_dict(MetricsRow, row)
        except ValueError:
            continue
        yield line, row


def read_metrics(run_dir: str | os.PathLike, split: str = "train") -> list[dict]:
    """The rows of one split; a last line torn by kill -9 (not yet cut by a resume) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [row for _, row in _rows(path) if row["split"] == split]


def truncate_metrics(run_dir: str | os.PathLike, last_step: int) -> None:
    """Drop lines after `last_step` (written by a run killed after its last checkpoint)."""
    from pipeline.durable import write_text

    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    write_text(path, "".join(line + "\n" for line, row in _rows(path) if row["step"] <= last_step))


def spectrogram_grid(
    clean: torch.Tensor, corrupted: torch.Tensor, reconstruction: torch.Tensor, selected: torch.Tensor | None = None
) -> np.ndarray:
    """[H, W, 3] uint8 image of one sample: clean / corrupted / reconstruction stacked top to bottom.

    Each panel is the channel mean of a [2, F, T] spectrogram, low frequencies at the bottom, on a
    log scale (magnitudes are normalised to [0, 1]; -60 dB is black). Selected frames are marked by a
    bright strip under the corrupted panel.
    """
    from matplotlib import colormaps

    def panel(spec: torch.Tensor) -> np.ndarray:
        mag = spec.detach().float().mean(dim=0).clamp_min(1e-3).log10().div(3.0).add(1.0).clamp(0, 1)
        return mag.flip(0).cpu().numpy()

    width = clean.shape[-1]
    gap = np.full((2, width), np.nan)
    rows = [panel(clean), gap, panel(corrupted)]
    if selected is not None:
        strip = np.where(selected.detach().cpu().numpy(), 1.0, 0.0)[None, :].repeat(3, axis=0)
        rows.append(strip)
    rows += [gap, panel(reconstruction)]
    image = np.concatenate(rows, axis=0)
    rgba = colormaps["magma"](np.nan_to_num(image, nan=0.0))
    rgba[np.isnan(image)] = (1.0, 1.0, 1.0, 1.0)  # white separators between panels
    return (rgba[..., :3] * 255).astype(np.uint8)


class RunLog:
    """TensorBoard + metrics.jsonl for rank 0, the run directory's one writer while it is open."""

    def __init__(self, run_dir: str | os.PathLike, start_step: int = 0, command: str = "trainer pretrain"):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = contextlib.ExitStack()
        # a second pretrain into a busy run would interleave metrics and race the first one's checkpoints
        self._lock.enter_context(
            exclusive(
                self.run_dir / LOCK_FILE,
                per_process=True,
                busy_message=f"{self.run_dir}: another {command} is writing this run (it holds "
                f"{self.run_dir / LOCK_FILE}); wait for it to finish or stop it first",
            )
        )
        truncate_metrics(self.run_dir, start_step)
        # purge from start_step + 1 also when it is 0: a run killed before its first checkpoint leaves points
        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1)
        self.metrics = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")

    def record(self, step: int, split: str, values: dict) -> None:
        """One metrics.jsonl line, flushed so a killed run's history survives up to this step."""
        self.metrics.write(json.dumps({"step": step, "split": split, "time": time.time(), **values}) + "\n")
        self.metrics.flush()

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def image(self, step: int, tag: str, grid: np.ndarray) -> None:
        self.writer.add_image(tag, grid, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def close(self) -> None:
        self.metrics.close()
        self.writer.close()
        self._lock.close()


class NullLog:
    """The log of ranks other than 0: accepts everything, writes nothing."""

    def record(self, step: int, split: str, values: dict) -> None:
        return None

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        return None

    def image(self, step: int, tag: str, grid: np.ndarray) -> None:
        return None

    def text(self, tag: str, text: str, step: int = 0) -> None:
        return None

    def close(self) -> None:
        return None
