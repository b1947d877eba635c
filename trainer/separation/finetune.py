"""`trainer finetune`: the config of a separation run, from scratch or from a pretraining checkpoint.

The training sections (data, optim, run) come from `--preset`/`--config` as for pretraining, except
the budget: a preset's `finetune.steps` (when > 0) replaces its pretraining `run.steps`. The model
comes from the `--init` checkpoint when there is one (its architecture must match the weights), else
from the preset, so a scratch run with the same preset is the comparison the fine-tune needs.
The separation mask prior (`model.mask_prior`, default SEPARATION_MASK_PRIOR) and `run.task` are set
here; `--set` still overrides anything. Resuming a run uses its saved config, as pretraining does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trainer.checkpoint import latest_checkpoint, read_checkpoint_config, resolve_checkpoint
from trainer.config import TASK_SEPARATION, TrainConfig, load_config, merge, parse_overrides

# The mask starts near the identity: the first estimate is about the mixture (the floor) rather than
# half of it, and the loss starts where "do nothing" is (vocal-remover's masks start unconstrained;
# the pretrained U-Net's own head was trained to output ~1e-3, which would start near silence).
SEPARATION_MASK_PRIOR = 0.9


def resolve_finetune(
    run_dir: str | os.PathLike,
    preset: str | None,
    config_file: str | None,
    overrides: list[str] | tuple[str, ...] = (),
    init: str | None = None,
    resume: bool = False,
) -> tuple[TrainConfig, Path | None]:
    """(config, checkpoint to continue from or None) for `trainer finetune`."""
    checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    if checkpoint is not None:
        saved = read_checkpoint_config(checkpoint)
        if saved.get("run", {}).get("task") != TASK_SEPARATION:
            raise ValueError(f"{run_dir} is a pretraining run; give finetune another --run")
        if init or preset or config_file:
            print(
                f"{run_dir}: continuing from {checkpoint.name} with the run's saved config; "
                "--init/--preset/--config ignored (use --set to change values)",
                file=sys.stderr,
            )
        return load_config(base=saved, overrides=overrides), checkpoint
    if resume:
        raise ValueError(f"{run_dir}: --resume given but there is no checkpoint to continue from")
    base = load_config(preset, config_file).to_dict()
    init_config: dict = {}
    if init:
        source = resolve_checkpoint(init)
        init_config = read_checkpoint_config(source)
        init_model = init_config.get("model")
        if isinstance(init_model, dict):  # its architecture, checked as the separation model it becomes
            init_model = {**init_model, "output": "mask"}
        try:
            checked = TrainConfig.from_dict({"model": init_model, "run": {"task": TASK_SEPARATION}}, str(source))
            base["model"] = checked.model.to_dict()
        except ValueError as exc:
            raise ValueError(f"{source}: unusable model config ({exc})") from exc
        base["run"]["init"] = str(source)
    base["model"]["mask_prior"] = SEPARATION_MASK_PRIOR
    base["model"]["output"] = "mask"  # separation predicts a mask of the mixture, whatever pretraining's head was
    base["run"]["task"] = TASK_SEPARATION
    given = parse_overrides(overrides) if overrides else {}
    data = merge(base, given) if given else base
    if data.get("finetune", {}).get("steps") and "steps" not in given.get("run", {}):
        data["run"]["steps"] = data["finetune"]["steps"]  # --steps (run.steps) still decides when given
    cfg = TrainConfig.from_dict(data, "finetune config" + (" + overrides" if overrides else ""))
    if cfg.run.task != TASK_SEPARATION:
        raise ValueError("trainer finetune trains run.task=separation; use trainer pretrain to pretrain")
    if cfg.finetune.head == "auto":  # decided once, here, and recorded in the run's config
        cfg.finetune.head = "keep" if init and head_is_a_separation_mask(init_config) else "reinit"
    return cfg, None


def head_is_a_separation_mask(checkpoint_config: dict) -> bool:
    """Whether a pretraining checkpoint's head already is what `trainer finetune` trains: a sigmoid
    mask of the input (model.output "mask") taught to keep a primary against an interferer (the
    mixture pretext, corrupt.mix_prob > 0), or a separation checkpoint itself (a model trained on
    pseudo-labels, fine-tuned on true pairs). The person's original objective also has a "mask" head,
    but one trained to output ~0 on [MASK] frames and ~1 elsewhere: a new head is the better start."""
    if (checkpoint_config.get("run") or {}).get("task") == TASK_SEPARATION:
        return True  # a separator (e.g. a self-trained student) fine-tuned further
    model, corrupt = checkpoint_config.get("model") or {}, checkpoint_config.get("corrupt") or {}
    return isinstance(model, dict) and model.get("output", "mask") == "mask" and corrupt.get("mix_prob", 0) > 0


__all__ = ["resolve_finetune", "head_is_a_separation_mask", "SEPARATION_MASK_PRIOR"]
