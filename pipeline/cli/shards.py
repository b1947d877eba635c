"""`pipeline shard`, `pipeline verify`, `pipeline preview`: manifests/ -> shards/, and checking them."""

from __future__ import annotations

import click

from pipeline import format as fmt
from pipeline.cli_types import MAX_WORKERS, Int, Size, check_memory


# --- shard: manifests/ -> shards/ -----------------------------------------------------------------
@click.command()
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


@click.command()
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


@click.command()
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
