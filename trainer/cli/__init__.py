"""`trainer` command line: shards/ -> runs/NAME/.

Each command parses options here and imports its implementation lazily, so `--help` stays fast.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """BERT-style pretraining of a spectrogram U-Net frame transformer on pipeline shards.

    \b
    trainer pretrain --shards shards/ --preset tiny --run runs/demo
    trainer evaluate --checkpoint runs/demo/checkpoints/last --shards shards/val.json
    trainer finetune --shards pair-shards/ --init runs/demo --run runs/sep   # separation
    trainer summary --preset base
    """


# Commands are added below, one block per command.


# --- pretrain / evaluate: trainer/loop.py, trainer/evaluate.py ----------------------------------

_SHARDS_HELP = "a shard directory (its {split}.json), an index JSON, a brace pattern, or http(s):// URLs"


def _one_line(exc: Exception) -> click.ClickException:
    """A loader worker's error reaches us as "Caught X in DataLoader worker process N." plus the worker's
    traceback; its last line is the original "X: message", which is what the user needs."""
    message = str(exc).strip()
    if message.startswith("Caught ") and "Original Traceback" in message:
        message = message.splitlines()[-1]
    return click.ClickException(message)


def _training_options(run_default: str, set_example: str):
    """The options `pretrain` and `finetune` share (preset or config, run folder, budget, device, --set)."""
    options = [
        click.option("--preset", default=None, help="Training preset: trainer/configs/NAME.yaml (tiny, small, base)."),
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
        click.option("--steps", type=click.IntRange(min=1), default=None, help="Total optimiser steps (run.steps)."),
        click.option(
            "--batch-size", type=click.IntRange(min=1), default=None, help="Per-rank micro-batch (data.batch_size)."
        ),
        click.option(
            "--workers", type=click.IntRange(min=0), default=None, help="Loader workers per rank (data.num_workers)."
        ),
        click.option("--resume", is_flag=True, help="Require a checkpoint in --run to continue from."),
        click.option("--compile", "use_compile", is_flag=True, help="torch.compile the model (run.compile)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
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


def _training_settings(preset, config_file, run_dir, steps, batch_size, workers, use_compile, overrides, run_prefix):
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


@main.command()
@click.option("--shards", required=True, help=f"Training shards: {_SHARDS_HELP}.")
@click.option(
    "--val-shards",
    default=None,
    help="Validation shards (same forms). Default: the val split of --shards when it is a directory.",
)
@_training_options(run_default="runs/PRESET", set_example="--set model.bins=128 --set optim.lr=1e-3")
def pretrain(
    shards, val_shards, preset, config_file, run_dir, steps, batch_size, workers, resume, use_compile, device, overrides
):
    """Pretrain on shards: masked tokens + next-sentence prediction, checkpoints and logs in --run.

    \b
    trainer pretrain --shards shards/ --preset tiny --run runs/demo
    torchrun --standalone --nproc-per-node=2 -- $(which trainer) pretrain --shards shards/ --preset small
    """

    from trainer.loop import default_val_shards, resolve_run
    from trainer.loop import pretrain as run_pretrain

    all_overrides, run_path = _training_settings(
        preset, config_file, run_dir, steps, batch_size, workers, use_compile, overrides, run_prefix=""
    )
    try:
        cfg, checkpoint = resolve_run(run_path, preset, config_file, all_overrides, resume)
        run_pretrain(
            cfg,
            shards,
            run_path,
            val_shards=val_shards or default_val_shards(shards),
            checkpoint=checkpoint,
            device=device,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise _one_line(exc) from exc


@main.command()
@click.option("--shards", required=True, help=f"Pair shards (`pipeline shard --pairs`): {_SHARDS_HELP}.")
@click.option(
    "--val-shards",
    default=None,
    help="Validation pair shards. Default: the val split of --shards when it is a directory.",
)
@click.option(
    "--init",
    default=None,
    type=click.Path(exists=True),
    help="Pretraining run or checkpoint to start from (its next-sentence head is dropped). Without: from scratch.",
)
@_training_options(run_default="runs/finetune-PRESET", set_example="--set optim.lr=1e-4 --set model.mask_prior=0.5")
def finetune(
    shards,
    val_shards,
    init,
    preset,
    config_file,
    run_dir,
    steps,
    batch_size,
    workers,
    resume,
    use_compile,
    device,
    overrides,
):
    """Fine-tune for separation on pair shards: L1 between mask * mixture and the target magnitude.

    \b
    trainer finetune --shards pair-shards/ --init runs/tiny --preset tiny --run runs/sep-pretrained
    trainer finetune --shards pair-shards/ --preset tiny --run runs/sep-scratch   # the comparison
    """

    from trainer.loop import default_val_shards
    from trainer.loop import pretrain as run_training
    from trainer.separation.finetune import resolve_finetune

    all_overrides, run_path = _training_settings(
        preset, config_file, run_dir, steps, batch_size, workers, use_compile, overrides, run_prefix="finetune-"
    )
    try:
        cfg, checkpoint = resolve_finetune(run_path, preset, config_file, all_overrides, init, resume)
        run_training(
            cfg,
            shards,
            run_path,
            val_shards=val_shards or default_val_shards(shards),
            checkpoint=checkpoint,
            device=device,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise _one_line(exc) from exc


@main.command()
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True),
    help="A step-NNNNNNN directory, a last/best file, or a run directory (its last checkpoint).",
)
@click.option("--shards", required=True, help=f"Evaluation shards: {_SHARDS_HELP}.")
@click.option("--batches", type=click.IntRange(min=1), default=16, show_default=True, help="Batches to score.")
@click.option("--split", default="val", show_default=True, help="Index used when --shards is a directory.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Default: the run's data.val_batch_size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(checkpoint, shards, batches, split, batch_size, device):
    """Score a checkpoint on the yardstick (16-frame tokens, 15%): L1, LSD and per-band L1 vs copy-nearest
    and interpolation, and the pair task's accuracy vs chance."""
    from trainer.pretrain.evaluate import evaluate_checkpoint

    try:
        _, table = evaluate_checkpoint(checkpoint, shards, batches, device=device, split=split, batch_size=batch_size)
    except (ValueError, RuntimeError, OSError) as exc:
        raise _one_line(exc) from exc
    click.echo(table)


# --- separate / evaluate-separation: trainer/separate.py, trainer/evaluate_separation.py -----------


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True),
    help="A fine-tuned run or checkpoint (trainer finetune).",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the separated files."
)
@click.option("--format", "output_format", type=click.Choice(["flac", "wav"]), default="flac", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Windows per model call [default: 2 on CPU, 16 on GPU].",
)
@click.option(
    "--window",
    "window_frames",
    type=click.IntRange(min=2),
    default=None,
    help="Frames per window [default: the run's crop].",
)
@click.option(
    "--overlap", type=click.FloatRange(0.0, 0.9), default=0.25, show_default=True, help="Cross-faded share of a window."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def separate(inputs, checkpoint, out_dir, output_format, device, batch_size, window_frames, overlap, quiet):
    """Separate songs (files or folders) into OUT/<name>_instrumental and OUT/<name>_vocals (44.1 kHz stereo).

    A file that cannot be read is a one-line error (exit code 1); the others are still separated.
    """
    from trainer.separation.separate import separate_files

    try:
        written, errors = separate_files(
            list(inputs),
            checkpoint,
            out_dir,
            output_format,
            device,
            batch_size,
            window_frames,
            overlap,
            progress=False if quiet else None,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise _one_line(exc) from exc
    for error in errors:
        click.echo(f"trainer separate: error: {error}", err=True)
    click.echo(f"separated {len(written) // 2} files into {out_dir}" + (f"; {len(errors)} failed" if errors else ""))
    if errors:
        raise SystemExit(1)


@main.command("evaluate-separation")
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True),
    help="A fine-tuned run or checkpoint; repeat for one row each (e.g. from pretrained and from scratch).",
)
@click.option(
    "--manifests", default="manifests", show_default=True, type=click.Path(file_okay=False), help="Holds pairs.jsonl."
)
@click.option("--split", default="val", show_default=True, help="Pairs of this split are scored.")
@click.option("--tracks", type=click.IntRange(min=1), default=None, help="At most this many tracks (by name).")
@click.option("--bsseval/--no-bsseval", default=True, show_default=True, help="Also BSSEval v4 (museval; slow).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Windows per model call.")
def evaluate_separation(checkpoints, manifests, split, tracks, bsseval, device, batch_size):
    """SDR (MDX and BSSEval v4) of the instrumental and the vocals per track and the median, for each
    checkpoint and for the mixture (floor) and the oracle ratio mask (ceiling), on whole tracks."""
    from trainer.separation.evaluate import evaluate_separation as run

    try:
        _, table = run(list(checkpoints), manifests, split, tracks, bsseval, device, batch_size)
    except (ValueError, RuntimeError, OSError) as exc:
        raise _one_line(exc) from exc
    click.echo(table)


@main.command()
@click.option("--shards", required=True, help=f"Training shards: {_SHARDS_HELP}.")
@click.option("--val-shards", default=None, help="Evaluation shards. Default: the val split of --shards.")
@click.option(
    "--variants",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML list of {name, preset, set: [...]} rows. Default: trainer/ablations/objectives.yaml.",
)
@click.option("--out", type=click.Path(file_okay=False), default="runs/ablate", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), required=True, help="Training steps of every row.")
@click.option("--batches", type=click.IntRange(min=1), default=16, show_default=True, help="Val batches to score.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Applied to every row and fine-tune."
)
@click.option(
    "--pairs",
    default=None,
    help="Pair shards (`pipeline shard --pairs`; same forms as --shards): also fine-tune every row for "
    "separation and score its SDR.",
)
@click.option(
    "--pairs-manifests", default=None, help="With --pairs: the folder holding pairs.jsonl (whole val tracks)."
)
@click.option(
    "--finetune-steps", type=click.IntRange(min=1), default=None, help="With --pairs: fine-tune steps of every row."
)
@click.option(
    "--tracks",
    type=click.IntRange(min=1),
    default=None,
    help="With --pairs: score the first N val tracks [default: all].",
)
@click.option(
    "--scratch-preset",
    default=None,
    help="With --pairs: the preset of the from-scratch fine-tune, the row a pretrain must beat [default: tiny].",
)
@click.option("--bsseval/--no-bsseval", default=True, show_default=True, help="With --pairs: also BSSEval v4 (slow).")
def ablate(
    shards,
    val_shards,
    variants,
    out,
    steps,
    batches,
    device,
    overrides,
    pairs,
    pairs_manifests,
    finetune_steps,
    tracks,
    scratch_preset,
    bsseval,
):
    """Train config variants with the same seed and budget; one yardstick table (OUT/ablation.md).

    With --pairs, every row is then fine-tuned for separation with one budget, plus one from scratch,
    and the table gets each one's instrumental SDR on the same val tracks.

    \b
    trainer ablate --shards demo/shards --steps 60 --out runs/ablate
    trainer ablate --shards demo/shards --steps 60 --pairs demo/pair-shards --pairs-manifests demo/pair-manifests \\
      --finetune-steps 30 --tracks 2
    """
    from trainer.ablations.downstream import downstream_settings
    from trainer.ablations.run import DEFAULT_VARIANTS, read_variants, run_ablation

    try:
        downstream = downstream_settings(pairs, pairs_manifests, finetune_steps, tracks, bsseval, scratch_preset)
        rows = read_variants(variants or DEFAULT_VARIANTS)
        table = run_ablation(rows, shards, out, steps, list(overrides), val_shards, batches, device, downstream)
    except (ValueError, RuntimeError, OSError) as exc:
        raise _one_line(exc) from exc
    click.echo(table)


@main.command()
@click.option("--preset", default="tiny", show_default=True, help="Model preset (trainer/model/presets/NAME.yaml).")
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Crop length T (frames) the FLOPs and activations are measured for.",
)
@click.option(
    "--position",
    type=click.Choice(["relative", "rope"]),
    default=None,
    help="Override the preset's attention position encoding.",
)
def summary(preset, frames, position):
    """Print parameters and forward FLOPs per part, and activation memory, of a model preset."""
    import dataclasses

    from trainer.model import load_model_preset
    from trainer.model.summary import format_summary, summarize

    try:
        cfg = load_model_preset(preset)
        if position:
            cfg = dataclasses.replace(cfg, position=position)
        click.echo(format_summary(summarize(cfg, frames), title=preset))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--shards", required=True, help="Shards to preview (same forms as pretrain --shards).")
@click.option("--checkpoint", default=None, help="Also show the model's reconstruction: a checkpoint or run directory.")
@click.option(
    "--preset",
    default="tiny",
    show_default=True,
    help="Training preset for crop and corruption settings when no --checkpoint is given.",
)
@click.option("--split", default="val", show_default=True, help="Split to read when --shards is a directory.")
@click.option("--out", type=click.Path(dir_okay=False), default="preview-corruptions.png", show_default=True)
@click.option("--n", "count", type=click.IntRange(1, 16), default=2, show_default=True, help="Samples to show.")
def preview(shards: str, checkpoint: str | None, preset: str, split: str, out: str, count: int) -> None:
    """Clean / corrupted (masked tokens, NSP join, separator) / reconstruction spectrograms as a PNG."""
    from trainer.pretrain.preview import load_preview_batch, render

    try:
        path = render(load_preview_batch(shards, count, checkpoint, preset, split), out)
    except (ValueError, OSError) as exc:
        raise _one_line(exc) from exc
    click.echo(f"wrote {path}")
