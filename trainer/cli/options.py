"""What the `trainer` commands share: the help text for --shards, the training options of `pretrain`
and `finetune` and the settings they stand for, the inference options of `separate` and
`evaluate-separation`, and turning a loader worker's error into one line."""

from __future__ import annotations

import click

from trainer.cli.types import DEVICE, MAX_WORKERS, Float, Int

SHARDS_HELP = "a shard directory (its {split}.json), an index JSON, a brace pattern, or http(s):// URLs"


def one_line(exc: Exception) -> click.ClickException:
    """A loader worker's error reaches us as "Caught X in DataLoader worker process N." plus the worker's
    traceback; its last line is the original "X: message", which is what the user needs."""
    message = str(exc).strip()
    if message.startswith("Caught ") and "Original Traceback" in message:
        message = message.splitlines()[-1]
    return click.ClickException(message)


def training_options(run_default: str, set_example: str):
    """The options `pretrain` and `finetune` share (preset or config, run folder, budget, device, --set)."""
    options = [
        click.option(
            "--preset",
            default=None,
            help="Training preset: trainer/configs/NAME.yaml (tiny, small, base: mixture pretext; recipe, original).",
        ),
        click.option(
            "--config",
            "config_file",
            default=None,
            type=click.Path(exists=True, dir_okay=False),
            help="Training config YAML instead of a preset.",
        ),
        click.option(
            "--run",
            "run_dir",
            default=None,
            type=click.Path(file_okay=False),
            help=f"Run directory (default {run_default}). An existing run continues from its last checkpoint.",
        ),
        click.option("--steps", type=Int(1), default=None, help="Total optimiser steps (run.steps)."),
        click.option("--batch-size", type=Int(1), default=None, help="Per-rank micro-batch (data.batch_size)."),
        click.option("--workers", type=Int(0), default=None, help="Loader workers per rank (data.num_workers)."),
        click.option("--resume", is_flag=True, help="Require a checkpoint in --run to continue from."),
        click.option("--compile", "use_compile", is_flag=True, help="torch.compile the model (run.compile)."),
        click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="SECTION.KEY=VALUE",
            help=f"Override any config value, e.g. {set_example} (repeatable).",
        ),
    ]

    def apply(command):
        for option in reversed(options):  # click lists options in decorator order, top first
            command = option(command)
        return command

    return apply


def training_settings(preset, config_file, run_dir, steps, batch_size, workers, use_compile, overrides, run_prefix):
    """The --set overrides the shortcut flags stand for, and the run folder (default runs/PREFIX+NAME)."""
    from pathlib import Path

    if preset and config_file:
        raise click.UsageError("give --preset or --config, not both")
    flags = {
        "run.steps": steps,
        "data.batch_size": batch_size,
        "data.num_workers": workers,
        "run.compile": True if use_compile else None,
    }
    all_overrides = list(overrides) + [f"{key}={value}" for key, value in flags.items() if value is not None]
    name = preset or (Path(config_file).stem if config_file else "tiny")
    run_path = Path(run_dir) if run_dir else Path("runs") / f"{run_prefix}{name}"
    return all_overrides, run_path


def inference_options(command):
    """The knobs `separate` and `evaluate-separation` share: where and how the model runs."""
    options = [
        click.option(
            "--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."
        ),
        click.option(
            "--batch-size",
            type=Int(1, 2**16),
            default=None,
            help="Windows per model call [default: 2 on CPU, 16 on GPU].",
        ),
        click.option(
            "--threads", type=Int(1, MAX_WORKERS), default=None, help="CPU threads for the model [default: torch's]."
        ),
        click.option(
            "--window",
            "window_frames",
            type=Int(2, 2**20),
            default=None,
            help="STFT frames per window [default: the run's crop].",
        ),
        click.option(
            "--overlap",
            type=Float(0.0, 1.0, high_open=True),
            default=None,
            help="Cross-faded share of a window [default: 0.25].",
        ),
        click.option(
            "--tta",
            is_flag=True,
            help="Test-time augmentation: also the stereo-swapped input and a grid shifted by half a window, "
            "averaged (about 4x the model time).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
