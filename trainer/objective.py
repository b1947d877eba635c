"""The training objectives, each defined once: the training step minimises it and validation reports
it (the lowest validation value picks the `best` checkpoint), so the two can never disagree.

- pretraining (`compute_loss`): masked-token L1 (+ all-frames L1) + next-sentence BCE;
- separation (`separation_loss`): L1 between `mask * mixture` and the target magnitude, the
  objective of vocal-remover (tsurumeso/vocal-remover), which the user's own code descends from.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from trainer.config import LossConfig
from trainer.corrupt import Corrupted

__all__ = ["compute_loss", "masked_l1", "separation_loss"]


def masked_l1(pred: Tensor, target: Tensor, selected: Tensor) -> Tensor:
    """Mean |pred - target| over the selected frames (all channels and bins); 0 when none is selected."""
    weight = selected[:, None, None, :].to(pred.dtype)
    per_frame_elements = pred.shape[1] * pred.shape[2]
    total = ((pred - target).abs() * weight).sum()
    count = weight.sum() * per_frame_elements
    return total / count.clamp(min=1)


def compute_loss(
    mask: Tensor, nsp_logit: Tensor, corrupted: Corrupted, loss_cfg: LossConfig, nsp: bool
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Masked-token L1 of mask * corrupted vs target (+ all-frames L1) + NSP BCE, in float32.

    Returns (total, parts, reconstruction); `parts` holds the total and each term as 0-d tensors
    (`loss`, `masked_l1`, `all_frames_l1`, `nsp_bce`, `nsp_accuracy`), batch means.
    """
    reconstruction = mask.float() * corrupted.input
    masked = masked_l1(reconstruction, corrupted.target, corrupted.selected)
    all_frames = (reconstruction - corrupted.target).abs().mean()
    logit = nsp_logit.float()
    bce = F.binary_cross_entropy_with_logits(logit, corrupted.nsp_label)
    total = masked + loss_cfg.all_frames_weight * all_frames + (loss_cfg.nsp_weight * bce if nsp else 0.0)
    accuracy = ((logit > 0).float() == corrupted.nsp_label).float().mean()
    parts = {"loss": total, "masked_l1": masked, "all_frames_l1": all_frames, "nsp_bce": bce, "nsp_accuracy": accuracy}
    return total, parts, reconstruction


def separation_loss(mask: Tensor, mixture: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Mean |mask * mixture - target| in float32, and the same for the mixture itself as the estimate
    (the floor any useful mask must beat). Returns (total, parts, estimate); `parts` holds `loss`,
    `l1` and `mixture_l1` as 0-d tensors (batch means)."""
    estimate = mask.float() * mixture
    l1 = (estimate - target).abs().mean()
    floor = (mixture - target).abs().mean()
    return l1, {"loss": l1, "l1": l1, "mixture_l1": floor}, estimate
