"""Validation with fixed corruptions: the model against two baselines that need no learning.

The corruption generator is seeded afresh for every evaluation, and the eval loader yields the same
batches in the same order, so two evaluations of the same weights on the same shards give the same
numbers (on the same device), during training and from `trainer evaluate` alike. Every L1 is a mean
over all selected frames of all batches (each frame weighted equally, not each batch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from trainer.baselines import copy_nearest, interpolate
from trainer.config import LossConfig
from trainer.corrupt import CorruptConfig, corrupt_batch
from trainer.device import autocast_for, pick_device
from trainer.objective import compute_loss, masked_l1

EVAL_SEED = 1234


@dataclass
class EvalResult:
    batches: int
    samples: int
    selected_frames: int
    model_l1: float  # masked-token L1 of mask * corrupted vs target
    copy_nearest_l1: float
    interpolate_l1: float
    all_frames_l1: float
    nsp_bce: float
    nsp_accuracy: float
    loss: float  # the training objective (objective.compute_loss), for choosing the best checkpoint

    @property
    def ratio_copy(self) -> float:
        return self.model_l1 / self.copy_nearest_l1 if self.copy_nearest_l1 > 0 else float("nan")

    @property
    def ratio_interpolate(self) -> float:
        return self.model_l1 / self.interpolate_l1 if self.interpolate_l1 > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio_copy": self.ratio_copy, "ratio_interpolate": self.ratio_interpolate}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict],
    corrupt_cfg: CorruptConfig,
    device: torch.device,
    loss_cfg: LossConfig | None = None,
    seed: int = EVAL_SEED,
) -> EvalResult:
    """Score `model` (a bare module, not DDP-wrapped) on every batch; restores its train/eval mode."""
    loss_cfg = loss_cfg or LossConfig()
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    # L1s are summed per selected frame (every frame weighs the same, not every batch); the other
    # parts of the objective are batch means, summed per sample.
    sums = dict(model=0.0, copy=0.0, interp=0.0, all=0.0, bce=0.0, correct=0.0, loss=0.0)
    n_batches = n_samples = n_selected = 0
    try:
        for batch in batches:
            clean = batch["spec"].to(device, non_blocking=True)
            group = batch["group"].to(device, non_blocking=True)
            corrupted = corrupt_batch(clean, group, corrupt_cfg, generator)
            with autocast_for(device):
                mask, nsp_logit = model(corrupted.input)
            _, parts, _ = compute_loss(mask, nsp_logit, corrupted, loss_cfg, corrupt_cfg.nsp)
            frames, samples = int(corrupted.selected.sum()), clean.shape[0]
            sums["model"] += float(parts["masked_l1"]) * frames
            sums["copy"] += (
                float(
                    masked_l1(
                        copy_nearest(corrupted.input, corrupted.selected, corrupted.separator),
                        corrupted.target,
                        corrupted.selected,
                    )
                )
                * frames
            )
            sums["interp"] += (
                float(
                    masked_l1(
                        interpolate(corrupted.input, corrupted.selected, corrupted.separator),
                        corrupted.target,
                        corrupted.selected,
                    )
                )
                * frames
            )
            for key, part in (
                ("all", "all_frames_l1"),
                ("bce", "nsp_bce"),
                ("correct", "nsp_accuracy"),
                ("loss", "loss"),
            ):
                sums[key] += float(parts[part]) * samples
            n_batches += 1
            n_samples += samples
            n_selected += frames
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("no validation batches: the shards are empty or unreadable")
    per_frame = max(n_selected, 1)
    return EvalResult(
        batches=n_batches,
        samples=n_samples,
        selected_frames=n_selected,
        model_l1=sums["model"] / per_frame,
        copy_nearest_l1=sums["copy"] / per_frame,
        interpolate_l1=sums["interp"] / per_frame,
        all_frames_l1=sums["all"] / n_samples,
        nsp_bce=sums["bce"] / n_samples,
        nsp_accuracy=sums["correct"] / n_samples,
        loss=sums["loss"] / n_samples,
    )


def format_table(result: EvalResult, title: str = "") -> str:
    """The printed comparison: ratio < 1 means the model reconstructs better than that baseline."""
    lines = [title] if title else []
    lines += [
        f"{result.batches} batches, {result.samples} samples, {result.selected_frames} selected frames "
        "(fixed corruptions)",
        f"{'':<24}{'masked-token L1':>16}{'model / this':>14}",
        f"{'model':<24}{result.model_l1:>16.5f}{1.0:>14.3f}",
        f"{'copy nearest frame':<24}{result.copy_nearest_l1:>16.5f}{result.ratio_copy:>14.3f}",
        f"{'linear interpolation':<24}{result.interpolate_l1:>16.5f}{result.ratio_interpolate:>14.3f}",
        f"NSP accuracy {result.nsp_accuracy:.3f} (BCE {result.nsp_bce:.4f}); all-frames L1 {result.all_frames_l1:.5f}; "
        f"val loss {result.loss:.5f}",
    ]
    return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint: str, shards: str, batches: int, device: str = "auto", split: str = "val", batch_size: int | None = None
) -> tuple[EvalResult, str]:
    """Load a checkpoint (with its own config) and evaluate it; returns the result and the printed table."""
    from trainer.checkpoint import load_checkpoint, read_checkpoint_config, resolve_checkpoint
    from trainer.config import load_config
    from trainer.data import eval_loader
    from trainer.model import build_model

    path = resolve_checkpoint(checkpoint)
    cfg = load_config(base=read_checkpoint_config(path))
    dev = pick_device(device)
    model = build_model(cfg.model).to(dev)
    meta = load_checkpoint(path, model, device=dev)
    loader = eval_loader(
        shards,
        batch_size=batch_size or cfg.data.val_batch_size,
        crop_frames=cfg.data.crop_frames,
        max_batches=batches,
        split=split,
    )
    result = evaluate(model, loader, cfg.corrupt, dev, cfg.loss)
    return result, format_table(result, title=f"{path} (step {meta.get('step')}) on {shards} [{split}]")
