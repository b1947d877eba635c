"""`pipeline` command line: drives -> manifests/ -> shards/.

Each command parses options here and imports its implementation lazily, so `--help` stays fast
and a command's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Turn a music collection spread over several drives into STFT training shards.

    \b
    pipeline ingest /mnt/ssd1 /mnt/ssd2 /mnt/ssd3   # -> manifests/tracks.jsonl
    pipeline shard                                  # -> shards/train-000000.tar ...
    """


# Commands are added below, one block per command.


@main.command()
@click.option("--manifests", type=click.Path(file_okay=False), default="manifests", show_default=True,
              help="Folder holding tracks.jsonl and failures.jsonl.")
@click.option("--out", "shards", type=click.Path(file_okay=False), default="shards", show_default=True,
              help="Shard folder holding train.json / val.json.")
def status(manifests: str, shards: str) -> None:
    """What is ingested (per root, duplicates, failures by reason), what is sharded, what is left."""
    from pipeline.status import collect_status, format_status

    try:
        click.echo(format_status(collect_status(manifests, shards)))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", type=click.Path(dir_okay=False), default="preview.png", show_default=True,
              help="PNG file to write.")
@click.option("--n", "count", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Number of samples to show.")
def preview(source: str, out: str, count: int) -> None:
    """Log-magnitude spectrograms of the first samples of SOURCE (a shard .tar or a shard folder)."""
    from pipeline.preview import run_preview

    try:
        path = run_preview(source, out, count)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}")


# --- make-demo -----------------------------------------------------------------------------
@main.command("make-demo")
@click.argument("out_dir", type=click.Path(file_okay=False), default="demo/collection")
@click.option("--artists", default=3, show_default=True, help="Artists (each gets its own folder).")
@click.option("--albums", "albums_per_artist", default=2, show_default=True, help="Albums per artist.")
@click.option("--tracks", "tracks_per_album", default=4, show_default=True, help="Tracks per album.")
@click.option("--min-seconds", default=30.0, show_default=True, help="Shortest track.")
@click.option("--max-seconds", default=60.0, show_default=True, help="Longest track.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic music.")
def make_demo(out_dir, artists, albums_per_artist, tracks_per_album, min_seconds, max_seconds, seed) -> None:
    """Make a synthetic demo collection (two "drives" of albums in six formats) under OUT_DIR.

    Existing files are kept, so re-running only fills in what is missing. Prints the roots to
    pass to `pipeline ingest`, one per line.
    """
    from pipeline.demo import make_demo_collection

    roots = make_demo_collection(out_dir, artists=artists, albums_per_artist=albums_per_artist,
                                 tracks_per_album=tracks_per_album, min_seconds=min_seconds,
                                 max_seconds=max_seconds, seed=seed)
    for root in roots:
        click.echo(root)
