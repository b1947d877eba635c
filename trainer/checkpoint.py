"""Atomic checkpoints of a run: runs/NAME/checkpoints/step-NNNNNNN/.

One checkpoint is a directory, built under a temporary name (every file fsynced) and renamed into
place (durable.staged_directory), so a directory under a final name is always complete; a temporary
left by kill -9 is deleted on the next save. It holds

    model.safetensors   the weights (no pickle)
    state.pt            optimiser and scheduler state dicts (tensors + plain values: loads with
                        torch.load(weights_only=True))
    meta.json           step, val loss, data position, RNG seeds, time
    config.yaml         the resolved training config, so the directory evaluates on its own

`last` and `best` are small text files naming a checkpoint directory, replaced atomically. Pruning
keeps the `keep_last` newest checkpoints plus the best one (lowest val loss).

A folder written by `trainer export` (trainer/export.py) reads as a checkpoint too: its config.json,
verified (schema, sha256 of the weights), gives the config and the meta; it has no training state.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_model, save_model

from pipeline.durable import remove_stale_temporaries, staged_directory, write_text
from pipeline.records import record_from_dict
from trainer.export import export_meta, is_export, read_export

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
CONFIG_FILE = "config.yaml"
LAST, BEST = "last", "best"
_STEP_DIR = re.compile(r"^step-(\d{7,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories, oldest step first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


@dataclass
class CheckpointMeta:
    """The fields of meta.json that are read back (the rest is a record for people)."""

    step: int
    val_loss: float | None = None


def read_meta(checkpoint: str | os.PathLike) -> dict:
    if is_export(checkpoint):  # a `trainer export` folder: its config.json, verified
        return export_meta(read_export(checkpoint))
    path = Path(checkpoint) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        record_from_dict(CheckpointMeta, meta, where=META_FILE)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint metadata ({exc})") from exc
    return meta


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: dict,
    meta: dict | None = None,
    val_loss: float | None = None,
    keep_last: int = 3,
) -> Path:
    """Write checkpoint `step` atomically, move `last` (and `best` if val_loss improves), prune.

    `model` must be the bare module (not DDP- or compile-wrapped) so that weight names are stable.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(ckpt_dir, only_dead_writers=False)  # the run lock makes us its only writer
    final = ckpt_dir / step_dir_name(step)
    with staged_directory(final) as tmp:
        save_model(model, str(tmp / WEIGHTS_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / STATE_FILE)
        finite_loss = val_loss if val_loss is not None and math.isfinite(val_loss) else None  # JSON has no NaN
        full_meta = {**(meta or {}), "step": step, "val_loss": finite_loss, "saved_at": time.time()}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=1) + "\n", encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    write_text(ckpt_dir / LAST, final.name + "\n")
    if finite_loss is not None:  # a NaN loss compares as neither better nor worse: never `best`
        best = _pointer(ckpt_dir, BEST)
        best_loss = read_meta(best).get("val_loss") if best else None
        if best_loss is None or finite_loss < best_loss:
            write_text(ckpt_dir / BEST, final.name + "\n")
    prune(ckpt_dir, keep_last)
    return final


def prune(ckpt_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints, never the ones `last` or `best` name."""
    ckpt_dir = Path(ckpt_dir)
    keep = {p for p in (_pointer(ckpt_dir, LAST), _pointer(ckpt_dir, BEST)) if p}
    checkpoints = list_checkpoints(ckpt_dir)
    keep.update(checkpoints[-keep_last:] if keep_last > 0 else [])
    for path in checkpoints:
        if path not in keep:
            shutil.rmtree(path)


def _pointer(ckpt_dir: Path, name: str) -> Path | None:
    path = ckpt_dir / name
    if not path.is_file():
        return None
    target = ckpt_dir / path.read_text(encoding="utf-8").strip()
    return target if target.is_dir() else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from: itself, a `last`/`best` pointer file, a checkpoints/ directory
    or a run directory (both via `latest_checkpoint`, as a resume would pick). Raises ValueError
    naming the path if there is none."""
    path = Path(path)
    if path.is_dir() and is_export(path):
        read_export(path)  # schema and sha256 first: a damaged folder is one line naming the field
        return path
    if path.is_file() and path.name in (LAST, BEST):
        target = _pointer(path.parent, path.name)
        if target is None:
            raise ValueError(f"{path}: names a checkpoint that does not exist")
        return target
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        return path
    for ckpt_dir in (path, path / "checkpoints"):
        if ckpt_dir.is_dir():
            target = latest_checkpoint(ckpt_dir)
            if target is not None:
                return target
    raise ValueError(
        f"{path}: no checkpoint found (expected a step-NNNNNNN directory, a last/best file or a run directory)"
    )


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: `last`, else the newest complete directory, else None."""
    ckpt_dir = Path(ckpt_dir)
    return _pointer(ckpt_dir, LAST) or next(reversed(list_checkpoints(ckpt_dir)), None)


def load_checkpoint(
    checkpoint: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Load weights (and optimiser/scheduler state when given) from a checkpoint directory; returns its meta."""
    checkpoint = Path(checkpoint)
    try:
        missing, unexpected = load_model(model, str(checkpoint / WEIGHTS_FILE), strict=False, device=str(device))
    except RuntimeError as exc:  # load_state_dict: one "size mismatch for NAME: ..." line per parameter
        mismatches = [line.strip() for line in str(exc).splitlines() if line.strip().startswith("size mismatch")]
        if not mismatches:
            raise ValueError(f"{checkpoint / WEIGHTS_FILE}: unreadable weights ({exc})") from exc
        raise ValueError(
            f"{checkpoint / WEIGHTS_FILE}: weights do not fit the model ({len(mismatches)} of another "
            f"shape, the first: {mismatches[0]})"
        ) from exc
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ValueError(f"{checkpoint / WEIGHTS_FILE}: unreadable weights ({exc})") from exc
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint / WEIGHTS_FILE}: weights do not fit the model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    if optimizer is not None or scheduler is not None:
        try:
            state = torch.load(checkpoint / STATE_FILE, map_location=device, weights_only=True)
        except Exception as exc:  # torch raises several types for a damaged or foreign file
            raise ValueError(f"{checkpoint / STATE_FILE}: unreadable training state ({exc})") from exc
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    return read_meta(checkpoint)


def read_checkpoint_config(checkpoint: str | os.PathLike) -> dict:
    if is_export(checkpoint):
        return read_export(checkpoint)["training_config"]
    path = Path(checkpoint) / CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint config ({exc})") from exc
    # None (an empty file) would read as "no base config" downstream and silently become the tiny preset
    if not isinstance(config, dict):
        raise ValueError(f"{path}: checkpoint config is not a mapping of sections (got {type(config).__name__})")
    return config
