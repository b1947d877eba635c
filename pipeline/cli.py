"""`pipeline` command line: drives -> manifests/ -> shards/.

Each command parses options here and imports its implementation lazily, so `--help` stays fast
and a command's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import click

from pipeline import format as fmt
from pipeline.cli_types import MAX_WORKERS, Float, Int, Size, check_memory


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Turn a music collection spread over several drives into STFT training shards.

    \b
    pipeline ingest /mnt/ssd1 /mnt/ssd2 /mnt/ssd3   # -> manifests/tracks.jsonl
    pipeline pairs /mnt/stems                       # -> manifests/pairs.jsonl (separation)
    pipeline status                                 # what is ingested, sharded, left
    pipeline shard                                  # -> shards/train-000000.tar ...
    pipeline shard --pairs --out pair-shards        # pairs.jsonl -> mixture + target shards
    pipeline verify                                 # re-read every shard against its index
    pipeline preview shards/                        # a picture of the first samples
    pipeline make-demo                              # a synthetic collection to try it on
    """


# Commands in the order the data flows: drives -> manifests -> shards, then the tools around them.


# --- ingest: drives -> manifests/ -----------------------------------------------------------------
@main.command("ingest")
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
@main.command()
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
@main.command()
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


# --- shard: manifests/ -> shards/ -----------------------------------------------------------------
@main.command()
@click.option(
    "--manifests",
    type=click.Path(file_okay=False),
    default=fmt.DEFAULT_MANIFESTS_DIR,
    show_default=True,
    help="Folder holding tracks.jsonl (failures.jsonl gets the decode failures).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=fmt.DEFAULT_SHARDS_DIR,
    show_default=True,
    help="Folder for {split}-NNNNNN.tar and {split}.json.",
)
@click.option("--workers", type=Int(1, MAX_WORKERS), default=None, help="Local worker processes  [default: all cores].")
@click.option(
    "--scheduler",
    metavar="ADDR",
    default=None,
    help="Run on a Dask cluster, e.g. tcp://host:8786 (workers must see the same paths).",
)
@click.option(
    "--clip-frames",
    type=Int(1, 2**20),
    default=fmt.DEFAULT_CLIP_FRAMES,
    show_default=True,
    help="STFT frames per sample.",
)
@click.option(
    "--shard-size",
    type=Size(1000, 10**13),
    default=fmt.DEFAULT_SHARD_SIZE,
    show_default=True,
    help="Target shard size (1GB, 500MB, 64MiB).",
)
@click.option(
    "--n-fft",
    type=Int(2, 2**16, even=True),
    default=fmt.DEFAULT_N_FFT,
    show_default=True,
    help="FFT size (bins = n_fft/2).",
)
@click.option("--hop", type=Int(1, 2**16), default=fmt.DEFAULT_HOP, show_default=True, help="STFT hop in samples.")
@click.option("--seed", type=Int(0, 2**63 - 1), default=0, show_default=True, help="Seed of the track interleaving.")
@click.option(
    "--encoding",
    type=click.Choice(fmt.ENCODINGS),
    default=fmt.DEFAULT_ENCODING,
    show_default=True,
    help="How magnitudes are stored: log8-zstd (8-bit log scale, 80 dB, zstd; ~1.3x a 320 kbps MP3), log8 "
    "(the same codes with gzip: slower, for sets begun before log8-zstd) or float16 (~4.4x).",
)
@click.option("--force", is_flag=True, help="Rebuild when the manifest or options changed since the last run.")
@click.option(
    "--append",
    is_flag=True,
    help="Shard tracks added to the manifest into new shards after the existing ones (kept byte for byte).",
)
@click.option("--pairs", "use_pairs", is_flag=True, help="Shard MANIFESTS/pairs.jsonl (mixture + target samples).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def shard(
    manifests,
    out,
    workers,
    scheduler,
    clip_frames,
    shard_size,
    n_fft,
    hop,
    seed,
    encoding,
    force,
    append,
    use_pairs,
    quiet,
) -> None:
    """Decode every track of the manifest into STFT shards: exact, resumable, parallel.

    With --pairs, every pair of MANIFESTS/pairs.jsonl instead: mixture and target magnitude on the
    same clip grid (give another --out than the pretraining shards).
    """
    import os

    from pipeline.shard.plan import ShardOptions
    from pipeline.shard.run import ShardError, run_shard

    # each worker holds a clip's STFT (mixture and target for pairs) and the audio behind it
    arrays = 2 if use_pairs else 1
    clip_bytes = clip_frames * (n_fft // 2 + 1) * fmt.CHANNELS * 4 * 3 * arrays + clip_frames * hop * fmt.CHANNELS * 4
    check_memory(
        f"{workers or os.cpu_count()} workers' clips",
        (workers or os.cpu_count() or 1) * clip_bytes,
        "--clip-frames, --n-fft, --hop, --workers",
    )
    try:
        options = ShardOptions(
            stft=fmt.STFTParams(n_fft=n_fft, hop=hop),
            clip_frames=clip_frames,
            shard_bytes=shard_size,
            seed=seed,
            sample_kind=fmt.SAMPLE_KIND_PAIRS if use_pairs else fmt.SAMPLE_KIND_SPEC,
            encoding=encoding,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        summary = run_shard(
            manifests,
            out,
            options,
            workers=workers,
            scheduler=scheduler,
            force=force,
            progress=not quiet,
            append=append,
        )
    except ShardError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        where = exc.filename or out
        raise click.ClickException(
            f"{where}: {exc.strerror or exc}; finished shards are kept, fix this and rerun to resume"
        ) from exc
    splits = ", ".join(f"{split} {count}" for split, count in summary.splits.items())
    message = (
        f"{summary.shards} shards ({splits}) in {out}: {summary.written} written, {summary.reused} kept; "
        f"{summary.samples} samples, {summary.seconds / 3600:.2f} h audio in {summary.wall_seconds:.0f} s"
    )
    failures_file = f"{manifests}/{fmt.PAIR_FAILURES_FILE if use_pairs else fmt.FAILURES_FILE}"
    if summary.failures:
        message += f"; {summary.failures} tracks failed (see {failures_file})"
    click.echo(message)
    if summary.empty_splits():
        # shards without a sample would only surface later, as a trainer that finds nothing to read
        shortest = fmt.min_valid_frames(clip_frames)
        raise click.ClickException(
            f"split {', '.join(summary.empty_splits())} of {out} holds no sample: its tracks failed (see "
            f"{failures_file}) or are shorter than a sample's {shortest} frames "
            f"({shortest * hop / fmt.SAMPLE_RATE:.2f} s at --clip-frames {clip_frames}); fix the files or "
            "choose a smaller --clip-frames, and rerun"
        )
    if summary.empty_shards:
        click.echo(f"warning: {summary.empty_shards} shards hold no sample (their tracks failed)", err=True)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=fmt.DEFAULT_SHARDS_DIR,
    show_default=True,
    help="Shard folder to check.",
)
def verify(out) -> None:
    """Re-read every shard against its index; exit 1 on any problem."""
    from pipeline.shard.verify import verify_shards

    report = verify_shards(out)
    for problem in report.problems:
        click.echo(problem, err=True)
    click.echo(report.summary())
    if report.problems:
        raise SystemExit(1)


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option(
    "--out", type=click.Path(dir_okay=False), default="preview.png", show_default=True, help="PNG file to write."
)
@click.option("--n", "count", type=Int(1, 64), default=4, show_default=True, help="Number of samples to show.")
def preview(source: str, out: str, count: int) -> None:
    """Log-magnitude spectrograms of the first samples of SOURCE (a shard .tar or a shard folder)."""
    from pipeline.shard.preview import run_preview

    try:
        path = run_preview(source, out, count)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}")


# --- make-demo: a synthetic collection ------------------------------------------------------------
@main.command("make-demo")
@click.argument("out_dir", type=click.Path(file_okay=False), default="demo/collection")
@click.option("--artists", type=Int(1, 1000), default=3, show_default=True, help="Artists (each gets a folder).")
@click.option(
    "--albums", "albums_per_artist", type=Int(1, 100), default=2, show_default=True, help="Albums per artist."
)
@click.option("--tracks", "tracks_per_album", type=Int(1, 100), default=4, show_default=True, help="Tracks per album.")
@click.option("--min-seconds", type=Float(1.0, 3600.0), default=30.0, show_default=True, help="Shortest track.")
@click.option("--max-seconds", type=Float(1.0, 3600.0), default=60.0, show_default=True, help="Longest track.")
@click.option("--seed", type=Int(0, 2**31 - 1), default=0, show_default=True, help="Seed of the synthetic music.")
@click.option(
    "--pair-songs",
    type=Int(0, 1000),
    default=8,
    show_default=True,
    help="Separation pairs made under OUT_DIR/pairs (0: none).",
)
def make_demo(
    out_dir, artists, albums_per_artist, tracks_per_album, min_seconds, max_seconds, seed, pair_songs
) -> None:
    """Make a synthetic demo collection (two "drives" of albums in six formats) under OUT_DIR, and
    separation pairs (a synthetic voice over accompaniment, mixture = sum) under OUT_DIR/pairs:
    song folders in pairs/stems, and pairs/mixtures + pairs/instrumentals (instrumentals 120 ms late).

    Existing files are kept, so re-running only fills in what is missing. Prints the roots to
    pass to `pipeline ingest`, one per line.
    """
    from pipeline.demo.collection import make_demo_collection
    from pipeline.demo.pairs import make_demo_pairs

    if min_seconds > max_seconds:
        raise click.BadParameter(
            f"{min_seconds:g} is more than --max-seconds {max_seconds:g}", param_hint="--min-seconds"
        )

    roots = make_demo_collection(
        out_dir,
        artists=artists,
        albums_per_artist=albums_per_artist,
        tracks_per_album=tracks_per_album,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        seed=seed,
    )
    if pair_songs:
        make_demo_pairs(f"{out_dir}/pairs", songs=pair_songs, seed=seed + 1)
    for root in roots:
        click.echo(root)
