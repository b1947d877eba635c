"""`trainer summary`: parameters and forward FLOPs per part, activation memory, for a config and crop.

Everything is measured on the meta device (shapes only, no memory, no arithmetic), so even the base
preset at 1024 frames is summarised in seconds on a laptop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer.model.config import ModelConfig
from trainer.model.unet import FrameTransformerUNet, build_model

ROOT = FrameTransformerUNet.__name__


@dataclass
class PartSummary:
    name: str  # e.g. "encoder_stacks.0 (1024 bins)"
    params: int
    forward_flops: int  # per sample


@dataclass
class ModelSummary:
    config: ModelConfig
    frames: int
    parts: list[PartSummary]
    params: int
    forward_flops: int  # per sample, measured with FlopCounterMode
    saved_activation_bytes: int  # per sample: tensors autograd keeps for backward, fp32, training mode
    recomputed_activation_bytes: int  # the same with checkpoint_blocks (transformer blocks recomputed)

    @property
    def training_flops(self) -> int:
        """Forward + backward, the usual 3x forward."""
        return 3 * self.forward_flops

    def weights_and_optimizer_bytes(self) -> int:
        """fp32 weights + gradients + AdamW's two moments."""
        return 16 * self.params


def _part_label(model: FrameTransformerUNet, name: str) -> str:
    group, _, index = name.partition(".")
    if not index:
        return name
    level = int(index)
    if group in ("decoder_stacks", "frame_decoders"):
        level = model.cfg.num_downsamples - level
    return f"{name} (level {level}, {model.cfg.level_bins(level)} bins)"


def _measure(cfg: ModelConfig, frames: int) -> tuple[FrameTransformerUNet, FlopCounterMode, int]:
    """One training-mode forward of one sample on the meta device: FLOPs, and bytes saved for backward."""
    with torch.device("meta"):
        model = build_model(cfg).train()
        x = torch.empty(1, cfg.audio_channels, cfg.bins, frames)
    storages: dict[int, int] = {}

    def remember(tensor):
        storage = tensor.untyped_storage()
        storages[storage._cdata] = storage.nbytes()
        return tensor

    counter = FlopCounterMode(display=False, depth=3)
    with counter, torch.autograd.graph.saved_tensors_hooks(remember, lambda tensor: tensor):
        model(x)
    return model, counter, sum(storages.values())


def summarize(cfg: ModelConfig, frames: int) -> ModelSummary:
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    model, counter, saved_bytes = _measure(cfg, frames)
    _, _, recomputed_bytes = _measure(dataclasses.replace(cfg, checkpoint_blocks=True), frames)
    flops_by_module = {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}

    parts = []
    for group_name, group in model.named_children():
        members = list(group.named_children()) if isinstance(group, torch.nn.ModuleList) else [("", group)]
        for index, module in members:
            name = f"{group_name}.{index}" if index else group_name
            params = sum(p.numel() for p in module.parameters())
            if params:
                parts.append(PartSummary(_part_label(model, name), params, flops_by_module.get(f"{ROOT}.{name}", 0)))
    return ModelSummary(
        cfg,
        frames,
        parts,
        sum(p.numel() for p in model.parameters()),
        counter.get_total_flops(),
        saved_bytes,
        recomputed_bytes,
    )


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def format_summary(summary: ModelSummary, title: str = "") -> str:
    cfg = summary.config
    width = max(len(part.name) for part in summary.parts)
    lines = [
        f"{title or 'model'}: bins {cfg.bins}, {cfg.num_downsamples} downsamplings, "
        f"{cfg.num_encoders} encoder / {cfg.num_decoders} decoder blocks per level from level "
        f"{cfg.first_transformer_level}, position {cfg.position}, frames {summary.frames}",
        "",
        f"{'part':<{width}}  {'params':>12}  {'fwd FLOPs/sample':>17}",
    ]
    for part in summary.parts:
        lines.append(f"{part.name:<{width}}  {part.params:>12,}  {_si(part.forward_flops, 'FLOP'):>17}")
    gib = 2**30
    lines += [
        f"{'total':<{width}}  {summary.params:>12,}  {_si(summary.forward_flops, 'FLOP'):>17}",
        "",
        f"forward FLOPs per sample (measured, FlopCounterMode): {_si(summary.forward_flops, 'FLOP')}; "
        f"forward+backward ~{_si(summary.training_flops, 'FLOP')}",
        f"activation memory per sample (tensors saved for backward, fp32): "
        f"{summary.saved_activation_bytes / gib:.2f} GiB, times the batch size; "
        f"{summary.recomputed_activation_bytes / gib:.2f} GiB with checkpoint_blocks "
        f"({'on' if cfg.checkpoint_blocks else 'off'} here)",
        f"weights + grads + AdamW moments (fp32): {summary.weights_and_optimizer_bytes() / gib:.2f} GiB",
    ]
    return "\n".join(lines)
