"""`trainer export`: a checkpoint as a folder to share, and reading such a folder back.

The folder follows the Hugging Face Hub convention, so it can be pushed as it is:

    model.safetensors   the weights only (float32, or float16 with --half)
    config.json         schema and version, architecture, STFT front end, task and head, inference
                        defaults, the sha256 of the weights and of the pretraining checkpoint it was
                        fine-tuned from, and the training config (without paths) it loads with
    README.md           the model card: data, budget, evaluation, the commands that made it

Every command that takes a checkpoint takes such a folder: `trainer.checkpoint` reads its config
and meta through `read_export`, which checks the schema and the weights' sha256 first, so a damaged,
replaced or foreign folder is one line naming the field, never a wall of missing keys. Nothing is
downloaded: a folder is read from disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SCHEMA = "spectro-bert-checkpoint"
SCHEMA_VERSION = 1
EXPORT_CONFIG = "config.json"
MODEL_CARD = "README.md"
WEIGHTS = "model.safetensors"  # = trainer.checkpoint.WEIGHTS_FILE: the Hub's name
INPUT_SCALING = "STFT magnitude of each window divided by the window's maximum (as training crops are)"
REQUIRED = ("schema", "schema_version", "architecture", "task", "head", "weights", "training_config")


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of the file (the one the shard index records too)."""
    from pipeline.format import file_sha256

    return file_sha256(path)


def is_export(path: str | os.PathLike) -> bool:
    """A folder written by `trainer export` (a config.json next to the weights, no training config.yaml)."""
    path = Path(path)
    return (path / EXPORT_CONFIG).is_file() and not (path / "config.yaml").exists()


_verified: dict[tuple, dict] = {}


def read_export(path: str | os.PathLike) -> dict:
    """config.json of an exported folder, after checking its schema and the weights' sha256;
    ValueError naming the file and the field otherwise. (Checked once per file state.)"""
    path = Path(path)
    config_path, weights = path / EXPORT_CONFIG, path / WEIGHTS
    try:
        stats = (config_path.stat(), weights.stat())
    except OSError as exc:
        raise ValueError(f"{path}: not an exported model ({exc.strerror}: {exc.filename})") from None
    key = (str(path.resolve()), *((s.st_size, s.st_mtime_ns, s.st_ino) for s in stats))
    if key in _verified:
        return _verified[key]
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config_path}: unreadable ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: not a JSON object")
    if config.get("schema") != SCHEMA:
        raise ValueError(f"{config_path}: schema is {config.get('schema')!r}, not {SCHEMA!r} (not our export)")
    version = config.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"{config_path}: schema_version {version!r} is not one we read (1-{SCHEMA_VERSION})")
    missing = [f for f in REQUIRED if f not in config]
    if missing:
        raise ValueError(f"{config_path}: missing field {missing[0]!r}")
    expected = (config["weights"] or {}).get("sha256") if isinstance(config["weights"], dict) else None
    actual = sha256_file(weights)
    if actual != expected:
        raise ValueError(
            f"{weights}: sha256 {actual[:16]}… differs from config.json's weights.sha256 "
            f"{str(expected)[:16]}… (a damaged or replaced file)"
        )
    training = config["training_config"]
    if not isinstance(training, dict) or training.get("model") != config["architecture"]:
        raise ValueError(f"{config_path}: architecture differs from training_config.model")
    if (training.get("run") or {}).get("task") != config["task"]:
        raise ValueError(f"{config_path}: task differs from training_config.run.task")
    _verified[key] = config
    return config


def export_meta(config: dict) -> dict:
    """What `trainer.checkpoint.read_meta` gives for a checkpoint directory, from config.json."""
    return {
        "step": int(config.get("step") or 0),
        "val_loss": config.get("val_loss"),
        "task": config["task"],
        "stft": config.get("stft"),
        "init": (config.get("init") or {}).get("sha256"),
        "exported": True,
    }


def first_difference(ours: object, theirs: object, prefix: str = "") -> str | None:
    """The dotted name of the first field where two nested configs differ, or None."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in list(ours) + [k for k in theirs if k not in ours]:
            found = first_difference(ours.get(key), theirs.get(key), f"{prefix}.{key}" if prefix else str(key))
            if found:
                return found
        return None
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return None if list(ours) == list(theirs) else prefix
    return None if ours == theirs else prefix


def describe_difference(field: str, ours: dict, theirs: dict, theirs_name: str) -> str:
    """`field is X here but Y in theirs_name`."""

    def value(config: object):
        for part in field.split("."):
            config = config.get(part) if isinstance(config, dict) else None
        return config

    return f"{field} is {value(ours)!r} here but {value(theirs)!r} in {theirs_name}"


def _shareable_config(config: dict) -> tuple[dict, dict]:
    """The training config without the paths of the machine it trained on, and what they said."""
    shared = json.loads(json.dumps(config))
    run, data = shared.setdefault("run", {}), shared.setdefault("data", {})
    removed = {"init": bool(run.get("init")), "extra_shards": bool(data.get("extra_shards"))}
    run["init"], data["extra_shards"] = "", ""
    return shared, removed


def export_checkpoint(
    source: str | os.PathLike, out_dir: str | os.PathLike, half: bool = False, card_extras: dict | None = None
) -> Path:
    """Write `out_dir` (model.safetensors, config.json, README.md) from a run, a checkpoint or an
    exported folder; the folder appears whole (built under a temporary name). Returns its path."""
    from safetensors.torch import load_file, save_file

    from pipeline.durable import staged_directory
    from trainer.checkpoint import WEIGHTS_FILE, read_checkpoint_config, read_meta, resolve_checkpoint
    from trainer.config import TASK_SEPARATION, load_config
    from trainer.model_card import model_card
    from trainer.separation.separate import DEFAULT_OVERLAP

    checkpoint = resolve_checkpoint(source)
    training = read_checkpoint_config(checkpoint)
    meta = read_meta(checkpoint)
    cfg = load_config(base=training)  # validates it
    try:
        tensors = load_file(str(checkpoint / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ValueError(f"{checkpoint / WEIGHTS_FILE}: unreadable weights ({exc})") from exc
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values()})
    shared, removed = _shareable_config(cfg.to_dict())
    init = None
    if cfg.run.init:
        init_checkpoint = Path(cfg.run.init)
        init_weights = init_checkpoint / WEIGHTS_FILE
        init = {
            "sha256": sha256_file(init_weights) if init_weights.is_file() else None,
            "step": read_meta(init_checkpoint).get("step") if init_weights.is_file() else None,
        }
        if init["sha256"] is None:
            init["note"] = "the pretraining checkpoint was not found when this folder was exported"
    elif isinstance(meta.get("init"), str) and len(meta["init"]) == 64:  # re-exporting an export
        init = {"sha256": meta["init"], "step": None}
    separation = cfg.run.task == TASK_SEPARATION
    config = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "library": "spectro-bert",
        "architecture": shared["model"],
        "stft": meta.get("stft"),
        "input_scaling": INPUT_SCALING,
        "task": cfg.run.task,
        "head": {
            "output": cfg.model.output,
            "kind": "instrumental mask in [0, 1] (vocals = mixture - instrumental)"
            if separation
            else "pretraining head (two source masks: the mixture pretext's MixIT form) and next-sentence logit"
            if cfg.model.output == "mask_pair"
            else "pretraining head (masked tokens) and next-sentence logit",
        },
        "inference": {
            "window_frames": cfg.data.crop_frames,
            "overlap": DEFAULT_OVERLAP,
            "batch_size": {"cpu": 2, "cuda": 16},
        }
        if separation
        else None,
        "weights": {"file": WEIGHTS, "sha256": None, "dtype": dtypes[0] if len(dtypes) == 1 else dtypes},
        "init": init,
        "step": meta.get("step"),
        "val_loss": meta.get("val_loss"),
        "training_config": shared,
        "removed_paths": removed,
    }
    out_dir = Path(out_dir)
    if out_dir.resolve() == checkpoint.resolve():
        raise ValueError(f"--out {out_dir}: is the checkpoint itself; give another folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS), metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp / WEIGHTS, 0o666 & ~umask)  # safetensors writes 0600; the folder is meant for others
        config["weights"]["sha256"] = sha256_file(tmp / WEIGHTS)
        (tmp / EXPORT_CONFIG).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        (tmp / MODEL_CARD).write_text(model_card(config, card_extras or {}), encoding="utf-8")
    return out_dir


__all__ = [
    "export_checkpoint",
    "EXPORT_CONFIG",
    "INPUT_SCALING",
    "MODEL_CARD",
    "SCHEMA",
    "SCHEMA_VERSION",
    "describe_difference",
    "export_meta",
    "first_difference",
    "is_export",
    "read_export",
    "sha256_file",
]
