"""The pretraining task for the shared training loop (trainer/loop.py): masked tokens + next-sentence
prediction on `pipeline shard` shards. It corrupts each batch on the device (corrupt.py), scores the
reconstruction (objective.py) and validates against the no-model baselines (evaluate.py)."""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import TASK_PRETRAIN, FinetuneConfig, TrainConfig
from trainer.data import check_bins
from trainer.device import autocast_for
from trainer.logs import spectrogram_grid
from trainer.pretrain.objective import compute_loss


class PretrainTask:
    name = TASK_PRETRAIN
    image_tag = "train/clean_corrupted_reconstruction"

    def __init__(self, cfg: TrainConfig, shards: str):
        self.cfg, self.shards = cfg, shards

    def build_model(self) -> nn.Module:
        from trainer.model import build_model

        return build_model(self.cfg.model)

    head_prefixes: tuple[str, ...] = ()

    def initialise(self, model: nn.Module, device: torch.device) -> str:
        return "from scratch"

    def finetune_protocol(self) -> FinetuneConfig:
        return FinetuneConfig()  # every weight trained alike

    def to_device(self, batch: dict, device: torch.device) -> dict:
        spec = batch["spec"].to(device, non_blocking=True).float()
        check_bins(spec, self.cfg.model.bins, self.shards)
        return {"spec": spec, "group": batch["group"].to(device, non_blocking=True)}

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator, device: torch.device):
        """(loss, parts, a function drawing the logged image of the first sample)."""
        from trainer.pretrain.corrupt import corrupt_batch

        corrupted = corrupt_batch(batch["spec"], batch["group"], self.cfg.corrupt, generator)
        with autocast_for(device):
            head, nsp_logit = model(corrupted.input)
        loss, parts, reconstruction = compute_loss(
            head, nsp_logit, corrupted, self.cfg.loss, self.cfg.corrupt.nsp, self.cfg.model.output
        )
        return (
            loss,
            parts,
            lambda: spectrogram_grid(corrupted.target[0], corrupted.input[0], reconstruction[0], corrupted.selected[0]),
        )

    def validate(self, model: nn.Module, loader, device: torch.device):
        from trainer.pretrain.evaluate import validate_pretraining

        return validate_pretraining(model, lambda: loader, self.cfg, device)

    def format_validation(self, result, title: str) -> str:
        from trainer.pretrain.evaluate import format_table

        return format_table(result, title=title, masked_tokens=self.cfg.corrupt.select_rate > 0)

    def checkpoint_meta(self) -> dict:
        return {"task": self.name}


__all__ = ["PretrainTask"]
