"""`trainer finetune`, `separate` and `evaluate-separation`: the separation commands.

Each parses its options here and imports its implementation lazily, so `--help` stays fast.
"""

from __future__ import annotations

import click

from trainer.cli.options import SHARDS_HELP, one_line, training_options, training_settings


@click.command()
@click.option("--shards", required=True, help=f"Pair shards (`pipeline shard --pairs`): {SHARDS_HELP}.")
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
@training_options(run_default="runs/finetune-PRESET", set_example="--set optim.lr=1e-4 --set model.mask_prior=0.5")
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

    all_overrides, run_path = training_settings(
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
        raise one_line(exc) from exc


@click.command()
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
        raise one_line(exc) from exc
    for error in errors:
        click.echo(f"trainer separate: error: {error}", err=True)
    click.echo(f"separated {len(written) // 2} files into {out_dir}" + (f"; {len(errors)} failed" if errors else ""))
    if errors:
        raise SystemExit(1)


@click.command("evaluate-separation")
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
        raise one_line(exc) from exc
    click.echo(table)


@click.command("pseudo-label")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True),
    help="The teacher: a fine-tuned run or checkpoint (trainer finetune).",
)
@click.option("--shards", required=True, help=f"Unlabelled pretraining shards (`pipeline shard`): {SHARDS_HELP}.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the pair shards.")
@click.option("--split", default="train", show_default=True, help="The split of --shards to label.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def pseudo_label(checkpoint, shards, out_dir, split, device):
    """Label unlabelled shards with a separator: pair shards whose target is the teacher's estimate.

    \b
    trainer pseudo-label --checkpoint runs/teacher --shards shards/ --out pseudo/
    trainer finetune --shards pair-shards/ --set data.extra_shards=pseudo/ --run runs/student

    A rerun skips the shards already written; a folder labelled by another teacher is refused.
    """
    from trainer.separation.pseudo_label import pseudo_label as run

    try:
        index = run(checkpoint, shards, out_dir, split, device)
    except (ValueError, RuntimeError, OSError) as exc:
        raise one_line(exc) from exc
    click.echo(f"{out_dir}: {len(index.shardlist)} pair shards, {index.totals['samples']} clips labelled by {checkpoint}")
