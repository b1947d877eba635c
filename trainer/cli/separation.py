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
@click.option(
    "--encoding",
    type=click.Choice(["log8-zstd", "log8", "float16"]),  # pipeline.format.ENCODINGS, not imported at start-up
    default=None,
    help="How the magnitudes are stored, as `pipeline shard --encoding` [default: log8-zstd, or what --out holds].",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def pseudo_label(checkpoint, shards, out_dir, split, encoding, device):
    """Label unlabelled shards with a separator: pair shards whose target is the teacher's estimate.

    \b
    trainer pseudo-label --checkpoint runs/teacher --shards shards/ --out pseudo/
    trainer finetune --shards pair-shards/ --set data.extra_shards=pseudo/ --run runs/student

    A rerun skips the shards already written; a folder labelled by another teacher is refused.
    """
    from trainer.separation.pseudo_label import pseudo_label as run

    try:
        index = run(checkpoint, shards, out_dir, split, device, encoding)
    except (ValueError, RuntimeError, OSError) as exc:
        raise one_line(exc) from exc
    click.echo(
        f"{out_dir}: {len(index.shardlist)} pair shards, {index.totals['samples']} clips labelled by {checkpoint}"
    )


def _named_inits(values) -> tuple[tuple[str, str], ...]:
    inits = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path:
            raise click.BadParameter(f"{value!r} is not NAME=CHECKPOINT", param_hint="--init")
        inits.append((name.strip(), path))
    return tuple(inits)


def _row_overrides(values) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        name, sep, override = value.partition(":")  # the name has no colon; a value (a URL) may
        if not sep or not name.strip() or "=" not in override:
            raise click.BadParameter(f"{value!r} is not NAME:SECTION.KEY=VALUE", param_hint="--init-set")
        out.append((name.strip(), override))
    return tuple(out)


def _budgets(value: str) -> tuple[int, ...]:
    try:
        budgets = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of song counts", param_hint="--budgets") from None
    if not budgets or min(budgets) < 1 or len(set(budgets)) != len(budgets):
        raise click.BadParameter(f"{value!r}: distinct song counts >= 1 expected", param_hint="--budgets")
    return tuple(sorted(budgets))


@click.command("label-curve")
@click.option("--pairs", required=True, help=f"Pair shards of the labelled songs: {SHARDS_HELP}.")
@click.option("--pairs-manifests", required=True, type=click.Path(file_okay=False), help="Holds their pairs.jsonl.")
@click.option(
    "--budgets", default="2,4,8,16", show_default=True, help="Labelled songs per point (first k train songs)."
)
@click.option("--seeds", type=click.IntRange(min=1), default=2, show_default=True, help="Fine-tunes per point and row.")
@click.option(
    "--seed",
    "only_seed",
    type=click.IntRange(min=0),
    default=None,
    help="Run only this seed's cells (one process per seed); the table shows every cell scored so far.",
)
@click.option("--finetune-steps", type=click.IntRange(min=1), required=True, help="Steps of every fine-tune.")
@click.option("--preset", default="tiny", show_default=True, help="Training preset of every fine-tune.")
@click.option("--init", "inits", multiple=True, metavar="NAME=CHECKPOINT", help="A pretrained row; repeat for several.")
@click.option(
    "--init-set",
    "init_overrides",
    multiple=True,
    metavar="NAME:SECTION.KEY=VALUE",
    help="An override for the fine-tunes of the --init row NAME only (e.g. its finetune.* protocol).",
)
@click.option(
    "--self-train",
    "pool",
    default=None,
    help="Unlabelled pretraining shards: add self-training (the scratch model labels them for a student).",
)
@click.option(
    "--pseudo-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of the student's crops from the pseudo-labelled pool.",
)
@click.option(
    "--self-train-mode",
    "modes",
    type=click.Choice(["joint", "pretrain"]),
    multiple=True,
    help="joint: a student on the k songs + the pseudo-labels; pretrain: a student on the pseudo-labels, "
    "then fine-tuned on the k songs. Repeat for both [default: joint].",
)
@click.option(
    "--long-scratch", is_flag=True, help="Also a scratch fine-tune of twice the steps (the control for added training)."
)
@click.option("--tracks", type=click.IntRange(min=1), default=None, help="Score the first N val songs [default: all].")
@click.option("--report", "report_only", is_flag=True, help="Train nothing: the table and plot of what is scored.")
@click.option("--bsseval/--no-bsseval", default=False, show_default=True, help="Also BSSEval v4 (slow).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/label-curve", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Applied to every fine-tune.")
def label_curve(
    pairs, pairs_manifests, budgets, seeds, only_seed, finetune_steps, preset, inits, init_overrides, pool,
    pseudo_share, modes, long_scratch, tracks, report_only, bsseval, out, device, overrides,
):  # fmt: skip
    """Separation SDR against the number of labelled songs: from scratch, from each pretrain, self-trained.

    \b
    trainer label-curve --pairs pair-shards/ --pairs-manifests pair-manifests/ --finetune-steps 150 \\
      --init mixture=runs/pretrain-mixture --self-train shards/ --budgets 2,4,8,16 --seeds 2

    Writes OUT/curve.md (table), OUT/curve.png (plot), OUT/curve.json (every song's SDR); a rerun continues.
    """
    from trainer.ablations.curve import CurveSettings, run_curve

    settings = CurveSettings(
        pairs,
        pairs_manifests,
        _budgets(budgets),
        seeds,
        finetune_steps,
        preset,
        _named_inits(inits),
        _row_overrides(init_overrides),
        pool,
        pseudo_share,
        tuple(modes) or ("joint",),
        long_scratch,
        tracks,
        bsseval,
    )
    try:
        if only_seed is not None and only_seed >= seeds:
            raise ValueError(f"--seed {only_seed} is outside --seeds {seeds} (seeds 0 .. {seeds - 1})")
        table = run_curve(settings, out, list(overrides), device, only_seed, report_only)
    except (ValueError, RuntimeError, OSError) as exc:
        raise one_line(exc) from exc
    click.echo(table)
