"""The pretraining objective, defined once: the training step minimises it and validation reports it
(the lowest validation value picks the `best` checkpoint), so the two can never disagree:
masked-token L1 (+ all-frames L1) + pair-task BCE (`compute_loss`). The separation objective is
`trainer.separation.task.separation_loss`.

Two choices of pretraining are config values (docs/experiments.md says why each exists):
- what the head means (`model.output`, `reconstruct`): "mask", the original sigmoid mask times the
  corrupted input; "mask_fill", a gate on the input plus a predicted fill value, gate 0 on [MASK]
  frames (their input is the mask value, not music, so a mask of it cannot be the answer);
  "mask_refine", the same gate, but the fill is a learned per-bin factor on the linear interpolation
  across the [MASK] frames (which the model sees as such): the network starts at that estimate and
  learns corrections from context instead of the whole spectrum; "mask_detect", mask_refine plus
  a per-frame noise weight: a frame judged to be the noised tenth of 80/10/10 (a rule on the share of
  loud bins, which noise at ~0.5 of the crop's max everywhere cannot hide, plus a learned logit) is
  left out of the interpolation's sources and filled like a [MASK] frame; "mask_pair", MixIT's
  two-output form for the mixture pretext: two masks of the input, one estimate per source, and per
  sample the cheaper of the two assignments of estimates to (primary, interferer) is scored;
- where the L1 is taken (`loss.domain`): "linear" magnitudes (normalised to the crop's max), or
  "log": log(x + loss.log_eps), where a quiet bin counts as much as a loud one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.config import LOSS_DOMAINS, LossConfig
from trainer.pretrain.baselines import interpolate
from trainer.pretrain.corrupt import Corrupted

__all__ = ["compute_loss", "masked_l1", "pair_estimates", "reconstruct", "to_loss_domain", "LOSS_DOMAINS"]


def masked_l1(pred: Tensor, target: Tensor, selected: Tensor) -> Tensor:
    """Mean |pred - target| over the selected frames (all channels and bins); 0 when none is selected."""
    weight = selected[:, None, None, :].to(pred.dtype)
    per_frame_elements = pred.shape[1] * pred.shape[2]
    total = ((pred - target).abs() * weight).sum()
    count = weight.sum() * per_frame_elements
    return total / count.clamp(min=1)


# mask_detect's rule for the noised tenth of 80/10/10 (max(U(0, 1), x) in every bin): the share of a
# frame's values at or above DETECT_LEVEL of the crop's max. On the Wesnoth train crops (24 896 intact
# frames, 464 noised; benchmarks/gap_fills.py, docs/experiments.md): music at most 0.020, noise at least 0.725.
DETECT_LEVEL, DETECT_MIDPOINT, DETECT_SLOPE = 0.25, 0.4, 60.0


def noise_logit(inp: Tensor) -> Tensor:
    """[B, T] the rule's logit that a frame is the corruption's noise (0 at DETECT_MIDPOINT)."""
    loud_share = (inp >= DETECT_LEVEL).float().mean(dim=(1, 2))
    return DETECT_SLOPE * (loud_share - DETECT_MIDPOINT)


def pair_estimates(
    head: Tensor, corrupted: Corrupted, loss_cfg: LossConfig | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`mask_pair`: (primary estimate, interferer estimate, masked L1, all-frames L1), the two L1s
    (0-d, in the loss domain) summed over both sources under the assignment taken.

    Each mask times the input estimates one source; per sample the assignment of estimates to
    (primary, interferer) that costs less in the loss as trained (the masked term plus
    `all_frames_weight` times the all-frames term) is taken, as MixIT and permutation-invariant
    training do, so the order of the two outputs means nothing. A sample without an interferer has
    silence as its second source. Without `loss_cfg`: LossConfig's defaults.
    """
    loss_cfg = loss_cfg or LossConfig()
    inp = corrupted.input
    channels = inp.shape[1]
    head = head.float()
    first, second = head[:, :channels] * inp, head[:, channels : 2 * channels] * inp
    other = corrupted.interferer if corrupted.interferer is not None else torch.zeros_like(corrupted.target)
    weight = corrupted.selected[:, None, None, :].to(first.dtype)
    selected_elements = (weight.sum() * channels * inp.shape[2]).clamp(min=1)

    def error(estimate: Tensor, reference: Tensor) -> Tensor:
        return (to_loss_domain(estimate, loss_cfg) - to_loss_domain(reference, loss_cfg)).abs()

    def per_sample(primary_estimate: Tensor, other_estimate: Tensor) -> tuple[Tensor, Tensor]:
        """[B] each sample's share of the masked term and its all-frames L1, both sources summed."""
        errors = error(primary_estimate, corrupted.target) + error(other_estimate, other)
        return (errors * weight).sum(dim=(1, 2, 3)) / selected_elements, errors.mean(dim=(1, 2, 3))

    masked_kept, all_kept = per_sample(first, second)
    masked_swapped, all_swapped = per_sample(second, first)
    weight_all = loss_cfg.all_frames_weight / inp.shape[0]
    swap = masked_swapped + weight_all * all_swapped < masked_kept + weight_all * all_kept
    masked = torch.where(swap, masked_swapped, masked_kept).sum()
    all_frames = torch.where(swap, all_swapped, all_kept).mean()
    swap = swap[:, None, None, None]
    return torch.where(swap, second, first), torch.where(swap, first, second), masked, all_frames


def reconstruct(head: Tensor, corrupted: Corrupted, output: str = "mask", loss_cfg: LossConfig | None = None) -> Tensor:
    """The model's estimate of the clean target from its head output (see the module docstring);
    `mask_pair` assigns its outputs by `loss_cfg`'s loss (LossConfig's defaults without one)."""
    inp = corrupted.input
    head = head.float()
    if output == "mask":
        return head * inp
    if output == "mask_pair":
        return pair_estimates(head, corrupted, loss_cfg)[0]
    if output not in ("mask_fill", "mask_refine", "mask_detect"):
        raise ValueError(f"unknown model output {output!r}")
    channels = inp.shape[1]
    gate, fill = head[:, :channels], head[:, channels : 2 * channels]
    masked = corrupted.masked
    if masked is None:
        return gate * inp + (1.0 - gate) * fill
    gate = gate.masked_fill(masked[:, None, None, :], 0.0)
    if output == "mask_fill":
        return gate * inp + (1.0 - gate) * fill
    # the sigmoid's odds s / (1 - s) as the factor: 1 at s = 0.5 (fill_prior 0.5 starts at the estimate)
    factor = fill / (1.0 - fill).clamp(min=1e-6)
    if output == "mask_refine":
        fill = (interpolate(inp, masked, corrupted.separator) * factor).clamp(max=1.0)
        return gate * inp + (1.0 - gate) * fill
    # mask_detect: a frame judged to be noise is no source of the interpolation and is itself filled
    # with weight `noise` (the rule's logit plus a learned one, the third head group's mean over bins;
    # [MASK] and separator frames are known by rule and never judged). The hard choice of sources
    # carries no gradient; the blend weight does.
    learned = torch.logit(head[:, 2 * channels :].mean(dim=(1, 2)), eps=1e-6)
    noise = torch.sigmoid(learned + noise_logit(inp)).masked_fill(masked | corrupted.separator, 0.0)
    missing = masked | (noise.detach() > 0.5)
    fill = (interpolate(inp, missing, corrupted.separator) * factor).clamp(max=1.0)
    kept = gate * inp + (1.0 - gate) * fill
    noise = noise[:, None, None, :]
    return (1.0 - noise) * kept + noise * fill


def to_loss_domain(x: Tensor, loss_cfg: LossConfig) -> Tensor:
    if loss_cfg.domain == "linear":
        return x
    return torch.log(x.clamp(min=0) + loss_cfg.log_eps) - math.log(loss_cfg.log_eps)


def compute_loss(
    head: Tensor, nsp_logit: Tensor, corrupted: Corrupted, loss_cfg: LossConfig, nsp: bool, output: str = "mask"
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Masked-token L1 of the reconstruction vs target (+ all-frames L1) + pair-task BCE, in float32.

    Both L1s are in `loss_cfg.domain`; with `mask_pair` each is the sum of both sources' under the
    cheaper assignment (pair_estimates), and the mixture parts score the estimate assigned to the
    primary, an assignment made knowing the targets. Returns (total, parts, reconstruction); `parts` holds the total
    and each term as 0-d tensors (`loss`, `masked_l1`, `all_frames_l1`, `nsp_bce`, `nsp_accuracy`, and
    with the mixture pretext `mix_l1` and `mix_pass_through_l1` on the frames holding an interferer),
    batch means; the L1s are in the loss domain (evaluation always adds linear L1).
    """
    if output == "mask_pair":  # both sources count, under the cheaper assignment, in both terms
        reconstruction, _, masked, all_frames = pair_estimates(head, corrupted, loss_cfg)
        pred, target = to_loss_domain(reconstruction, loss_cfg), to_loss_domain(corrupted.target, loss_cfg)
    else:
        reconstruction = reconstruct(head, corrupted, output)
        pred, target = to_loss_domain(reconstruction, loss_cfg), to_loss_domain(corrupted.target, loss_cfg)
        masked = masked_l1(pred, target, corrupted.selected)
        all_frames = (pred - target).abs().mean()
    logit = nsp_logit.float()
    bce = F.binary_cross_entropy_with_logits(logit, corrupted.nsp_label)
    total = masked + loss_cfg.all_frames_weight * all_frames + (loss_cfg.nsp_weight * bce if nsp else 0.0)
    accuracy = ((logit > 0).float() == corrupted.nsp_label).float().mean()
    parts = {"loss": total, "masked_l1": masked, "all_frames_l1": all_frames, "nsp_bce": bce, "nsp_accuracy": accuracy}
    if corrupted.mixed is not None:  # the mixture pretext: is the model better than passing the mixture on?
        parts["mix_l1"] = masked_l1(pred, target, corrupted.mixed)
        parts["mix_pass_through_l1"] = masked_l1(to_loss_domain(corrupted.input, loss_cfg), target, corrupted.mixed)
    return total, parts, reconstruction
