"""`trainer preview`: what the model is asked to do — clean / corrupted / reconstruction, per sample.

The corruptions are the validation ones (the evaluation yardstick, freshly seeded generator, fixed
crops), so the picture matches the numbers `trainer evaluate` prints for the same shards. The
reconstruction row is what the model proposes for the selected tokens, pasted into the input: a good
model's row looks like the clean row. For the mixture pretext (corrupt.mix_prob > 0) the rows are the
primary, the primary with an interferer (the model's input, the mixture yardstick of `trainer
evaluate`) and the model's estimate of the primary where the interferer is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.pretrain.corrupt import Corrupted, corrupt_batch
from trainer.pretrain.evaluate import EVAL_SEED, mixture_yardstick, yardstick
from trainer.pretrain.objective import reconstruct


@dataclass
class PreviewBatch:
    keys: list[str]
    corrupted: Corrupted
    clean: torch.Tensor  # [B, 2, F, T]
    reconstruction: torch.Tensor | None  # the model's output on selected frames, the input elsewhere


def load_preview_batch(
    shards: str, count: int, checkpoint: str | None, preset: str, split: str, device: str = "cpu"
) -> PreviewBatch:
    from trainer.config import load_config
    from trainer.data import eval_loader

    model = None
    if checkpoint:
        from trainer.checkpoint import load_checkpoint, read_checkpoint_config, resolve_checkpoint
        from trainer.model import build_model

        path = resolve_checkpoint(checkpoint)
        cfg = load_config(base=read_checkpoint_config(path))
        model = build_model(cfg.model).to(device)
        load_checkpoint(path, model, device=device)
        model.eval()
    else:
        cfg = load_config(preset=preset)
    batches = eval_loader(shards, batch_size=count, crop_frames=cfg.data.crop_frames, max_batches=1, split=split)
    batch = next(iter(batches), None)
    if batch is None:
        raise ValueError(f"{shards}: no {split} samples to preview")
    clean = batch["spec"].to(device)
    generator = torch.Generator(device=device).manual_seed(EVAL_SEED)
    fixed = mixture_yardstick(cfg.corrupt) if cfg.corrupt.mix_prob > 0 else yardstick(cfg.corrupt)
    corrupted = corrupt_batch(clean, batch["group"].to(device), fixed, generator)
    reconstruction = None
    if model is not None:
        with torch.no_grad():
            head, _ = model(corrupted.input)
        predicted = reconstruct(head, corrupted, cfg.model.output, cfg.loss)
        reconstruction = torch.where(corrupted.selected[:, None, None, :], predicted, corrupted.input)
    return PreviewBatch(list(batch["key"]), corrupted, clean, reconstruction)


def _db(spec: torch.Tensor) -> np.ndarray:
    """Channel mean of a [2, F, T] spectrogram in dB re 1.0 (batches are normalised to [0, 1])."""
    mag = spec.detach().float().mean(dim=0).cpu().numpy()
    return np.maximum(20.0 * np.log10(np.maximum(mag, 1e-10)), -80.0)


def _spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def render(preview: PreviewBatch, out: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixture = preview.corrupted.mixed is not None
    if mixture:
        rows = [
            ("primary (the target)", preview.clean),
            ("primary + an interferer (model input)", preview.corrupted.input),
        ]
    else:
        rows = [("clean", preview.clean), ("corrupted (model input)", preview.corrupted.input)]
    if preview.reconstruction is not None:
        if mixture:
            last = "estimate of the primary (mask x input) where the interferer is, input elsewhere"
        else:
            last = "reconstruction (model on selected tokens, input elsewhere)"
        rows.append((last, preview.reconstruction))
    n = len(preview.keys)
    fig, axes = plt.subplots(n * len(rows), 1, figsize=(11, 2.1 * n * len(rows)), squeeze=False)
    frames = preview.clean.shape[-1]
    for i, key in enumerate(preview.keys):
        selected = preview.corrupted.selected[i].cpu().numpy()
        separator = preview.corrupted.separator[i].cpu().numpy()
        label = "continuation" if float(preview.corrupted.nsp_label[i]) > 0.5 else "second half from another track"
        for r, (name, tensor) in enumerate(rows):
            ax = axes[i * len(rows) + r, 0]
            ax.imshow(
                _db(tensor[i]),
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=-80,
                vmax=0,
                extent=(0, frames, 0, tensor.shape[2]),
            )
            if r > 0:
                for start, end in _spans(selected):
                    ax.axvspan(start, end, ymin=0, ymax=0.04, color="cyan")
                for start, end in _spans(separator):
                    ax.axvspan(start, end, ymin=0.96, ymax=1.0, color="lime")
            if not mixture:
                ax.axvline(frames // 2, color="white", linewidth=0.6, linestyle=":")
            ax.set_ylabel("bin")
            title = f"{key}: {name}"
            if r == 0 and not mixture:
                title += f"  |  NSP: {label}"
            ax.set_title(title, fontsize=8, loc="left")
    legend = "cyan: the interferer" if mixture else "cyan: selected tokens, lime: separator, dotted: NSP join"
    axes[-1, 0].set_xlabel(f"frame  ({legend})")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
