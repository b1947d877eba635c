"""Shards -> batches: where the shards are (shards.py), reading them (reader.py), one sample -> a crop
-> a batch (crops.py), and the training and evaluation streams and loaders (loader.py).

`from trainer.data import train_loader` etc. is the package's API (like `trainer.model`)."""

from trainer.data.crops import Crop, collate, crop_sample, track_group
from trainer.data.loader import check_bins, eval_loader, train_loader
from trainer.data.shards import resolve_shards, shard_bins, shard_stft

__all__ = [
    "Crop",
    "check_bins",
    "collate",
    "crop_sample",
    "eval_loader",
    "resolve_shards",
    "shard_bins",
    "shard_stft",
    "track_group",
    "train_loader",
]
