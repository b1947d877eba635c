"""`pipeline ingest`, `pipeline pairs`, `pipeline status`: drives -> manifests/, and what is left."""

from __future__ import annotations

import click

from pipeline import format as fmt
from pipeline.cli_types import MAX_WORKERS, Float, Int


# --- ingest: drives -> manifests/ -----------------------------------------------------------------
@click.command("ingest")
# No checks here: a missing, unreadable or non-folder root is an error of that root alone (exit 1
# after the others are ingested), which click's checks would turn into a usage error for all.
@click.argument("roots", nargs=-1, required=True, type=click.Path(readable=False))
@click.option(
    "--manifests",
    "manifests_dir",
    default=fmt.DEFAULT_MANIFESTS_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where tracks.jsonl and failures.jsonl go.",
)
@click.option(
    "--workers",
    type=Int(1, MAX_WORKERS),
    default=None,
    help="Parallel ffprobe runs [default: 2 per core, at most 32].",
)
@click.option(
    "--val-fraction",
    type=Float(0.0, 1.0),
    default=0.02,
    show_default=True,
    help="Share of albums in the val split (at least one album when there are two or more).",
)
@click.option(
    "--follow-outside-links",
    is_flag=True,
    help="Enter directory symlinks that lead outside every root (recorded as scan failures otherwise).",
)
def ingest(roots, manifests_dir, workers, val_fraction, follow_outside_links) -> None:
    """Find and probe every audio file under ROOTS (drives, scanned concurrently).

    Writes MANIFESTS/tracks.jsonl (one line per audio file, duplicates marked) and
    MANIFESTS/failures.jsonl. Re-running probes only new or changed files; an interrupted run
    resumes where it stopped. A root that cannot be read is an error for that root (exit code 1)
    while the others are still ingested.
    """
    from pipeline.durable import FolderBusy
    from pipeline.ingest.run import ingest as run_ingest

    try:
        summary = run_ingest(
            list(roots),
            manifests_dir,
            workers=workers,
            val_fraction=val_fraction,
            follow_outside_links=follow_outside_links,
        )
    except FolderBusy as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # e.g. the manifests folder cannot be written; every finished probe is journaled
        raise click.ClickException(f"{exc.filename or manifests_dir}: {exc.strerror or exc}") from exc
    click.echo(summary.line())
    if summary.root_errors:
        raise SystemExit(1)


# --- pairs: separation collections -> manifests/pairs.jsonl -------------------------------------
@click.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option(
    "--mixtures", type=click.Path(file_okay=False), default=None, help="Folder of mixtures (parallel layout)."
)
@click.option(
    "--targets", type=click.Path(file_okay=False), default=None, help="Folder of instrumentals matched by file name."
)
@click.option(
    "--manifests",
    "manifests_dir",
    default=fmt.DEFAULT_MANIFESTS_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where pairs.jsonl and pair-failures.jsonl go.",
)
@click.option("--workers", type=Int(1, MAX_WORKERS), default=2, show_default=True, help="Pairs checked in parallel.")
@click.option(
    "--val-fraction",
    type=Float(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Share of albums (songs, when untagged) in the val split.",
)
@click.option(
    "--max-offset",
    type=Float(0.0, 60.0),
    default=3.0,
    show_default=True,
    help="Largest offset (seconds) searched between a mixture and its partner.",
)
@click.option(
    "--min-correlation",
    type=Float(0.0, 1.0),
    default=0.2,
    show_default=True,
    help="Below this peak correlation the partner is taken for another song.",
)
@click.option(
    "--max-length-difference",
    type=Float(0.0, 3600.0),
    default=1.0,
    show_default=True,
    help="Seconds the lengths may differ by after the offset.",
)
@click.option(
    "--min-peak-margin",
    type=Float(0.0, 1.0, high_open=True),
    default=0.1,
    show_default=True,
    help="How far the best lag must stand above any other lag 50 ms or more away (share of the peak).",
)
def pairs(
    roots,
    mixtures,
    targets,
    manifests_dir,
    workers,
    val_fraction,
    max_offset,
    min_correlation,
    max_length_difference,
    min_peak_margin,
) -> None:
    """Find mixture/instrumental pairs, align them and write MANIFESTS/pairs.jsonl.

    \b
    ROOTS: folders of song folders, each with mixture.<ext> and instrumental.<ext> or vocals.<ext>
    (the target is then mixture - vocals). --mixtures DIR --targets DIR: two parallel folders whose
    files pair by name. Each pair's offset is estimated (cross-correlation) and applied; a file
    without a partner, a partner that does not correlate or lengths that differ are failures
    (MANIFESTS/pair-failures.jsonl). Re-running redoes only what changed; a killed run resumes.
    """
    from pipeline.durable import FolderBusy
    from pipeline.pairs.run import PairOptions, build_pairs

    if not roots and mixtures is None and targets is None:
        raise click.UsageError("give ROOTS (song folders) or --mixtures DIR --targets DIR")
    try:
        options = PairOptions(max_offset, min_correlation, max_length_difference, val_fraction, min_peak_margin)
        summary = build_pairs(manifests_dir, list(roots), mixtures, targets, options, workers=workers)
    except FolderBusy as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or manifests_dir}: {exc.strerror or exc}") from exc
    click.echo(summary.line())


# --- status: what is done and what is left --------------------------------------------------------
@click.command()
@click.option(
    "--manifests",
    type=click.Path(file_okay=False),
    default=fmt.DEFAULT_MANIFESTS_DIR,
    show_default=True,
    help="Folder holding tracks.jsonl and failures.jsonl.",
)
@click.option(
    "--out",
    "shards",
    type=click.Path(file_okay=False),
    default=fmt.DEFAULT_SHARDS_DIR,
    show_default=True,
    help="Shard folder holding train.json / val.json.",
)
@click.option("--pairs", "use_pairs", is_flag=True, help="Of pairs.jsonl and pair shards (pipeline shard --pairs).")
def status(manifests: str, shards: str, use_pairs: bool) -> None:
    """What is ingested (per root, duplicates, failures by reason), what is sharded, what is left."""
    from pipeline.status import collect_status, format_status

    try:
        click.echo(format_status(collect_status(manifests, shards, pairs=use_pairs)))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
