"""What the training loop trains: a task supplies the model, one micro-batch's loss, the logged image,
the validation and what a checkpoint must remember. The loop (trainer/loop.py) is the same for all:
AMP, accumulation, schedules, atomic checkpoints, exact resume, TensorBoard, validation.

- `PretrainTask` (trainer/pretrain/task.py): masked tokens + next-sentence prediction on
  `pipeline shard` shards.
- `SeparationTask` (trainer/separation/task.py): mixture -> instrumental masks on
  `pipeline shard --pairs` shards, optionally from a pretraining checkpoint (`--init`).
"""

from __future__ import annotations

from trainer.config import TASK_PRETRAIN, TASK_SEPARATION, TASKS, TrainConfig
from trainer.data import shard_stft
from trainer.pretrain.task import PretrainTask
from trainer.separation.task import SeparationTask


def make_task(cfg: TrainConfig, shards: str):
    if cfg.run.task == TASK_SEPARATION:
        return SeparationTask(cfg, shards, shard_stft(shards))
    return PretrainTask(cfg, shards)


__all__ = ["TASKS", "TASK_PRETRAIN", "TASK_SEPARATION", "PretrainTask", "SeparationTask", "make_task"]
