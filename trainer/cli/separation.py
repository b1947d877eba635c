"""`trainer finetune`, `separate` and `evaluate-separation`: the separation commands.

Each parses its options here and imports its implementation lazily, so `--help` stays fast.
"""

from __future__ import annotations

import click

from trainer.cli.options import (
    SHARDS_HELP,
    inference_options,
    one_line,
    set_threads,
    training_options,
    training_settings,
)
from trainer.cli.types import DEVICE, MAX_COUNT, Float, Int


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
    "checkpoints",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="A fine-tuned run, checkpoint or exported folder; repeat for an ensemble (the estimates are averaged).",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the separated files."
)
@click.option(
    "--stems",
    type=click.Choice(["both", "instrumental", "vocals"]),
    default="both",
    show_default=True,
    help="Which files to write (vocals = mixture - instrumental).",
)
@click.option(
    "--filename",
    default="{name}_{stem}.{ext}",
    show_default=True,
    help="Output name inside the mirrored folder: {name} {input_ext} {stem} {ext}.",
)
@click.option("--format", "output_format", type=click.Choice(["flac", "wav"]), default="flac", show_default=True)
@click.option(
    "--bit-depth",
    type=click.Choice(["16", "24", "float"]),
    default=None,
    help="Sample format [default: 24 for flac, float for wav]; float needs wav.",
)
@click.option("--overwrite", is_flag=True, help="Redo songs whose outputs exist (default: skip them).")
@inference_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def separate(
    inputs, checkpoints, out_dir, stems, filename, output_format, bit_depth, overwrite, device, batch_size,
    threads, window_frames, overlap, tta, quiet,
):  # fmt: skip
    """Separate songs (files or folders, walked recursively) into instrumental and vocals (44.1 kHz stereo).

    \b
    trainer separate album/ song.mp3 --checkpoint runs/sep --out separated/
      -> separated/album/<sub folders>/<name>_instrumental.flac, ..._vocals.flac; separated/song_...

    A folder's tree is mirrored under --out. Songs whose outputs exist are skipped (--overwrite redoes
    them); a file that cannot be read is a one-line error and the others are still separated; the
    run ends with a summary line (exit code 1 if any failed).
    """
    from trainer.separation.batch import separate_inputs

    set_threads(threads)
    try:
        summary = separate_inputs(
            list(inputs),
            list(checkpoints),
            out_dir,
            stems=stems,
            template=filename,
            output_format=output_format,
            bit_depth=bit_depth,
            overwrite=overwrite,
            device=device,
            batch_size=batch_size,
            window_frames=window_frames,
            overlap=overlap,
            tta=tta,
            progress=False if quiet else None,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise one_line(exc) from exc
    for warning in summary.warnings:
        click.echo(f"trainer separate: warning: {warning}", err=True)
    for source, reason in summary.failed:
        click.echo(f"trainer separate: error: {source}: {reason}", err=True)
    click.echo(f"{summary.line()} (into {out_dir})")
    if summary.failed:
        raise SystemExit(1)


@click.command("evaluate-separation")
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True),
    help="A fine-tuned run, checkpoint or exported folder; repeat for one row each (e.g. pretrained, scratch).",
)
@click.option(
    "--manifests", default="manifests", show_default=True, type=click.Path(file_okay=False), help="Holds pairs.jsonl."
)
@click.option("--split", default="val", show_default=True, help="Pairs of this split are scored.")
@click.option("--tracks", type=Int(1, 10**6), default=None, help="At most this many tracks (by name).")
@click.option("--bsseval/--no-bsseval", default=True, show_default=True, help="Also BSSEval v4 (museval; slow).")
@click.option(
    "--ensemble",
    is_flag=True,
    help="Also a row for the ensemble of all the --checkpoint (their estimates averaged, as separate does).",
)
@inference_options
def evaluate_separation(
    checkpoints, manifests, split, tracks, bsseval, ensemble, device, batch_size, threads, window_frames, overlap, tta
):
    """SDR (MDX and BSSEval v4) of the instrumental and the vocals per track and the median, for each
    checkpoint and for the mixture (floor) and the oracle ratio mask (ceiling), on whole tracks.

    \b
    With separate's knobs (--window, --overlap, --tta, --ensemble) it shows what each buys in dB; the
    last column is each row's separation time per second of audio.
    """
    from trainer.separation.evaluate import evaluate_separation as run

    set_threads(threads)
    try:
        _, table = run(
            list(checkpoints),
            manifests,
            split,
            tracks,
            bsseval,
            device,
            batch_size,
            window_frames=window_frames,
            overlap=overlap,
            tta=tta,
            ensemble=ensemble,
        )
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
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
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
@click.option("--seeds", type=Int(1, 1000), default=2, show_default=True, help="Fine-tunes per point and row.")
@click.option(
    "--seed",
    "only_seed",
    type=Int(0, 999),
    default=None,
    help="Run only this seed's cells (one process per seed); the table shows every cell scored so far.",
)
@click.option("--finetune-steps", type=Int(1, MAX_COUNT), required=True, help="Steps of every fine-tune.")
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
    type=Float(0.0, 1.0),
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
    "--student-steps",
    type=Int(1, MAX_COUNT),
    default=None,
    help="Steps of the pretrain mode's student on the pseudo-labels [default: --finetune-steps].",
)
@click.option(
    "--rounds",
    type=Int(1, 100),
    default=1,
    show_default=True,
    help="Self-training rounds of the pretrain mode: round r's teacher is round r-1's fine-tuned student.",
)
@click.option(
    "--student-remix",
    type=Float(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="data.remix of every student's training (noisy student): share of crops rebuilt as their "
    "instrumental plus another crop's voice; the pretrain route's fine-tune on the k songs is not remixed.",
)
@click.option(
    "--self-train-from",
    metavar="NAME",
    default=None,
    help="An --init row: its fine-tune is the first teacher and its pretrain starts every student "
    "(self-training on top of a pretrain) [default: the scratch model teaches, students start at random].",
)
@click.option(
    "--teacher-steps",
    type=Int(1, MAX_COUNT),
    default=None,
    help="Steps of the first teacher's fine-tune, a row of its own "
    "[default: --finetune-steps: the scratch or --self-train-from row teaches].",
)
@click.option(
    "--long-scratch",
    is_flag=True,
    help="Also a scratch fine-tune of the pretrain route's total steps (the control for added training).",
)
@click.option("--tracks", type=Int(1, 10**6), default=None, help="Score the first N val songs [default: all].")
@click.option("--report", "report_only", is_flag=True, help="Train nothing: the table and plot of what is scored.")
@click.option("--bsseval/--no-bsseval", default=False, show_default=True, help="Also BSSEval v4 (slow).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/label-curve", show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Applied to every fine-tune.")
def label_curve(
    pairs, pairs_manifests, budgets, seeds, only_seed, finetune_steps, preset, inits, init_overrides, pool,
    pseudo_share, modes, student_steps, rounds, student_remix, self_train_from, teacher_steps, long_scratch, tracks,
    report_only, bsseval, out, device, overrides,
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
        student_steps,
        rounds,
        student_remix,
        self_train_from,
        teacher_steps,
    )
    try:
        if only_seed is not None and only_seed >= seeds:
            raise ValueError(f"--seed {only_seed} is outside --seeds {seeds} (seeds 0 .. {seeds - 1})")
        table = run_curve(settings, out, list(overrides), device, only_seed, report_only)
    except (ValueError, RuntimeError, OSError) as exc:
        raise one_line(exc) from exc
    click.echo(table)
