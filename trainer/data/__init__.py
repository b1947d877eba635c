"""Shards -> batches: where the shards are, reading them, cropping samples and the loaders.

`from trainer.data import train_loader` etc. is the package's API (like `trainer.model`)."""

from trainer.data.loader import collate, crop_sample, eval_loader, resolve_shards, track_group, train_loader

__all__ = ["resolve_shards", "train_loader", "eval_loader", "crop_sample", "collate", "track_group"]
