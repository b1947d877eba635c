"""The separation task for the shared training loop (trainer/loop.py): mixture -> instrumental masks on
`pipeline shard --pairs` shards. The model is the pretraining U-Net without its next-sentence head; its
mask head is the task-specific part, freshly initialised at `model.mask_prior` (near 1: the mask starts
close to the identity, so the first estimate is the mixture, the floor, instead of silence). `--init`
loads every other weight from a pretraining checkpoint.

The objective (`separation_loss`) is defined once here: the training step minimises it and validation
reports it (the lowest validation value picks the `best` checkpoint), so the two can never disagree.
It is the L1 between `mask * mixture` and the target magnitude, the objective of vocal-remover
(tsurumeso/vocal-remover), which the user's own code descends from.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from trainer.config import TASK_SEPARATION, FinetuneConfig, TrainConfig
from trainer.data import check_bins
from trainer.device import autocast_for
from trainer.logs import spectrogram_grid
from trainer.separation.remix import remix

# Heads that belong to one task: not carried from a pretraining checkpoint into a separation model.
PRETRAIN_ONLY = ("nsp_head.",)
SEPARATION_HEAD = ("mask_head.",)


def separation_loss(mask: Tensor, mixture: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Mean |mask * mixture - target| in float32, and the same for the mixture itself as the estimate
    (the floor any useful mask must beat). Returns (total, parts, estimate); `parts` holds `loss`,
    `l1` and `mixture_l1` as 0-d tensors (batch means)."""
    estimate = mask.float() * mixture
    l1 = (estimate - target).abs().mean()
    floor = (mixture - target).abs().mean()
    return l1, {"loss": l1, "l1": l1, "mixture_l1": floor}, estimate


class NoNextSentence(nn.Module):
    """Stands in for the dropped next-sentence head: no parameters, a zero logit per sample."""

    def forward(self, features: Tensor, frames: int) -> Tensor:
        return features.new_zeros(features.shape[0] // frames)


def build_separation_model(cfg: TrainConfig) -> nn.Module:
    """The U-Net of `cfg.model` with its mask head at `model.mask_prior` and no next-sentence head."""
    from trainer.model import build_model

    model = build_model(cfg.model)
    model.nsp_head = NoNextSentence()
    return model


def _model_difference(model_config: dict | None, checkpoint: Path) -> str:
    """The first architecture field where the model to fill and the checkpoint's differ, in words."""
    from trainer.checkpoint import read_checkpoint_config
    from trainer.export import describe_difference, first_difference

    theirs = {"model": read_checkpoint_config(checkpoint).get("model") or {}}
    ours = {"model": {k: v for k, v in (model_config or {}).items() if k not in ("mask_prior", "output")}}
    field = first_difference(ours, {"model": {k: v for k, v in theirs["model"].items() if k in ours["model"]}})
    if field is None:
        return "the checkpoint's tensors do not match its own model config (a damaged checkpoint)"
    return describe_difference(field, ours, theirs, "the checkpoint") + " (set by --set model.*?)"


def load_pretrained(
    model: nn.Module,
    init: str | os.PathLike,
    device: torch.device,
    keep_head: bool = False,
    model_config: dict | None = None,
) -> Path:
    """Every weight of a pretraining checkpoint except its next-sentence head and, unless `keep_head`,
    its mask head; ValueError naming the checkpoint and the first field of `model_config` (the
    model's config, as a dict) that differs from the checkpoint's when the architectures differ. Returns the checkpoint
    directory used."""
    from safetensors.torch import load_file

    from trainer.checkpoint import WEIGHTS_FILE, resolve_checkpoint

    path = resolve_checkpoint(init)
    if keep_head:
        from trainer.checkpoint import read_checkpoint_config

        output = (read_checkpoint_config(path).get("model") or {}).get("output", "mask")
        if output != "mask":
            raise ValueError(
                f"{path}: its head (model.output {output}) is not one mask of the input, so it cannot be kept; "
                "use finetune.head=reinit (or auto)"
            )
    try:
        weights = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ValueError(f"{path / WEIGHTS_FILE}: unreadable weights ({exc})") from exc
    dropped = PRETRAIN_ONLY if keep_head else PRETRAIN_ONLY + SEPARATION_HEAD
    kept = {k: v for k, v in weights.items() if not k.startswith(dropped)}
    own = {k: v for k, v in model.state_dict().items() if keep_head or not k.startswith(SEPARATION_HEAD)}
    missing, unexpected = sorted(set(own) - set(kept)), sorted(set(kept) - set(own))
    shapes = [k for k in set(own) & set(kept) if own[k].shape != kept[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: weights do not fit the model: {_model_difference(model_config, path)}")
    model.load_state_dict(kept, strict=False)
    return path


@dataclass
class SeparationValResult:
    batches: int
    samples: int
    l1: float  # mean |mask * mixture - target| (normalised magnitudes), the objective
    mixture_l1: float  # the same with the mixture as the estimate: the floor
    loss: float  # = l1, for choosing the best checkpoint

    @property
    def ratio(self) -> float:
        return self.l1 / self.mixture_l1 if self.mixture_l1 > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio_mixture": self.ratio}


class SeparationTask:
    name = TASK_SEPARATION
    image_tag = "train/mixture_target_estimate"

    def __init__(self, cfg: TrainConfig, shards: str, stft: dict | None = None):
        self.cfg, self.shards, self.stft = cfg, shards, stft

    def build_model(self) -> nn.Module:
        return build_separation_model(self.cfg)

    head_prefixes = SEPARATION_HEAD  # what finetune.trunk_lr_factor and freeze_steps leave alone

    def initialise(self, model: nn.Module, device: torch.device) -> str:
        if not self.cfg.run.init:
            return "from scratch"
        protocol = self.cfg.finetune
        keep = protocol.head == "keep"
        fresh = {name: p.detach().clone() for name, p in model.named_parameters()}  # the seed's scratch init
        path = load_pretrained(model, self.cfg.run.init, device, keep_head=keep, model_config=self.cfg.model.to_dict())
        origin = f"from the pretrained weights of {path} ({'its' if keep else 'a new'} mask head)"
        if (protocol.shrink, protocol.perturb) == (1.0, 0.0):
            return origin
        with torch.no_grad():
            for name, p in model.named_parameters():
                if keep or not name.startswith(SEPARATION_HEAD):  # a new head already is the fresh init
                    p.mul_(protocol.shrink).add_(fresh[name], alpha=protocol.perturb)
        return f"{origin}, shrunk x{protocol.shrink:g} plus x{protocol.perturb:g} a fresh init"

    def finetune_protocol(self) -> FinetuneConfig:
        return self.cfg.finetune if self.cfg.run.init else FinetuneConfig()

    def to_device(self, batch: dict, device: torch.device) -> dict:
        spec = batch["spec"].to(device, non_blocking=True).float()
        if spec.shape[1] != 4:
            raise ValueError(
                f"{self.shards}: not pair shards (samples hold no mix.npy + target.npy); "
                "make them with `pipeline shard --pairs`"
            )
        check_bins(spec, self.cfg.model.bins, self.shards)
        return {"mixture": spec[:, :2], "target": spec[:, 2:]}

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator | None, device: torch.device):
        if generator is not None and self.cfg.data.remix > 0:  # training batches only: validation passes None
            mixture, target, _ = remix(batch["mixture"], batch["target"], self.cfg.data.remix, generator)
            batch = {**batch, "mixture": mixture, "target": target}
        with autocast_for(device):
            mask, _ = model(batch["mixture"])
        loss, parts, estimate = separation_loss(mask, batch["mixture"], batch["target"])
        return loss, parts, lambda: spectrogram_grid(batch["mixture"][0], batch["target"][0], estimate[0])

    @torch.no_grad()
    def validate(self, model: nn.Module, loader, device: torch.device) -> SeparationValResult:
        was_training = model.training
        model.eval()
        sums, batches, samples = {"l1": 0.0, "mixture_l1": 0.0}, 0, 0
        try:
            for batch in loader:
                batch = self.to_device(batch, device)
                _, parts, _ = self.loss(model, batch, None, device)
                n = batch["mixture"].shape[0]
                for key in sums:
                    sums[key] += float(parts[key]) * n
                batches, samples = batches + 1, samples + n
        finally:
            model.train(was_training)
        if not batches:
            raise ValueError("no validation batches: the shards are empty or unreadable")
        l1 = sums["l1"] / samples
        return SeparationValResult(batches, samples, l1, sums["mixture_l1"] / samples, l1)

    def format_validation(self, result: SeparationValResult, title: str) -> str:
        verdict = "beats" if result.ratio < 1 else "does not beat"
        return "\n".join(
            ([title] if title else [])
            + [
                f"{result.batches} batches, {result.samples} samples (centred crops)",
                f"{'':<26}{'L1 to the target':>18}{'model / this':>14}",
                f"{'model (mask * mixture)':<26}{result.l1:>18.5f}{1.0:>14.3f}",
                f"{'mixture as the estimate':<26}{result.mixture_l1:>18.5f}{result.ratio:>14.3f}",
                f"the model {verdict} the mixture; val loss {result.l1:.5f}",
            ]
        )

    def checkpoint_meta(self) -> dict:
        return {"task": self.name, "stft": self.stft, "init": self.cfg.run.init or None}


__all__ = [
    "PRETRAIN_ONLY",
    "SEPARATION_HEAD",
    "NoNextSentence",
    "SeparationTask",
    "SeparationValResult",
    "build_separation_model",
    "load_pretrained",
    "separation_loss",
]
