"""`trainer pretrain`, `evaluate`, `preview`, `summary` and `ablate`: the pretraining commands.

Each parses its options here and imports its implementation lazily, so `--help` stays fast.
"""

from __future__ import annotations

import click

from trainer.cli.options import SHARDS_HELP, one_line, training_options, training_settings
from trainer.cli.types import DEVICE, MAX_COUNT, Int


@click.command()
@click.option("--shards", required=True, help=f"Training shards: {SHARDS_HELP}.")
@click.option(
    "--val-shards",
    default=None,
    help="Validation shards (same forms). Default: the val split of --shards when it is a directory.",
)
@training_options(run_default="runs/PRESET", set_example="--set model.bins=128 --set optim.lr=1e-3")
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

    all_overrides, run_path = training_settings(
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
        raise one_line(exc) from exc


@click.command()
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True),
    help="A step-NNNNNNN directory, a last/best file, or a run directory (its last checkpoint).",
)
@click.option("--shards", required=True, help=f"Evaluation shards: {SHARDS_HELP}.")
@click.option("--batches", type=Int(1, 10**6), default=16, show_default=True, help="Batches to score.")
@click.option("--split", default="val", show_default=True, help="Index used when --shards is a directory.")
@click.option("--batch-size", type=Int(1, 2**16), default=None, help="Default: the run's data.val_batch_size.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(checkpoint, shards, batches, split, batch_size, device):
    """Score a checkpoint on the yardstick (16-frame tokens, 15%): L1, LSD and per-band L1 vs copy-nearest
    and interpolation, and the pair task's accuracy vs chance."""
    from trainer.pretrain.evaluate import evaluate_checkpoint

    try:
        _, table = evaluate_checkpoint(checkpoint, shards, batches, device=device, split=split, batch_size=batch_size)
    except (ValueError, RuntimeError, OSError) as exc:
        raise one_line(exc) from exc
    click.echo(table)


@click.command()
@click.option("--shards", required=True, help=f"Training shards: {SHARDS_HELP}.")
@click.option("--val-shards", default=None, help="Evaluation shards. Default: the val split of --shards.")
@click.option(
    "--variants",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML list of {name, preset, set: [...]} rows. Default: trainer/ablations/objectives.yaml.",
)
@click.option("--out", type=click.Path(file_okay=False), default="runs/ablate", show_default=True)
@click.option("--steps", type=Int(1, MAX_COUNT), required=True, help="Training steps of every row.")
@click.option("--batches", type=Int(1, 10**6), default=16, show_default=True, help="Val batches to score.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
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
    "--finetune-steps", type=Int(1, MAX_COUNT), default=None, help="With --pairs: fine-tune steps of every row."
)
@click.option(
    "--tracks",
    type=Int(1, 10**6),
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
        raise one_line(exc) from exc
    click.echo(table)


@click.command()
@click.option("--preset", default="tiny", show_default=True, help="Model preset (trainer/model/presets/NAME.yaml).")
@click.option(
    "--frames",
    type=Int(1, 2**20),
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


@click.command()
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
@click.option("--n", "count", type=Int(1, 16), default=2, show_default=True, help="Samples to show.")
def preview(shards: str, checkpoint: str | None, preset: str, split: str, out: str, count: int) -> None:
    """Clean / corrupted (masked tokens, NSP join, separator) / reconstruction spectrograms as a PNG."""
    from trainer.pretrain.preview import load_preview_batch, render

    try:
        path = render(load_preview_batch(shards, count, checkpoint, preset, split), out)
    except (ValueError, OSError) as exc:
        raise one_line(exc) from exc
    click.echo(f"wrote {path}")
