"""`pipeline make-demo`: a synthetic collection to try the pipeline on."""

from __future__ import annotations

import click

from pipeline.cli_types import Float, Int


# --- make-demo: a synthetic collection ------------------------------------------------------------
@click.command("make-demo")
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
    """Make a synthetic demo collection (two "drives" of albums in six formats; songs with a voice, each
    album's last track an instrumental) under OUT_DIR, and
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
