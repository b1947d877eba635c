"""A small demo collection made with `pipeline.demo.synth`: two "drives" of synthetic albums.

It is built to show every kind of record `pipeline ingest` writes: tracks in six formats, albums
that are tagged and albums known only by their folder names, a symlinked duplicate and a
byte-identical copy on the other drive (both become `duplicate_of` sightings), and a text file
named `.mp3` (a failure with its reason). Total audio is kept near 20 minutes so the whole demo
chain (ingest, shard, pretrain, evaluate) runs in minutes on two cores.

Like the albums a vocal remover is for, the songs are sung (a synthetic voice over the band, as in
the demo's separation pairs, with other voices and other bands), except each album's last track, an
instrumental: a collection without voices has nothing to teach a separator that removes them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.demo.synth import write_track
from pipeline.durable import remove_stale_temporaries, staged_path

DEMO_FORMATS = (".mp3", ".flac", ".ogg", ".m4a", ".opus", ".wav")
DRIVES = ("drive1", "drive2")
NOT_AUDIO_NAME = "liner notes.mp3"
NOT_AUDIO_TEXT = "These are the liner notes, not audio. pipeline ingest reports this file as a failure.\n"


def make_demo_collection(out_dir: str | os.PathLike, artists: int = 3, albums_per_artist: int = 2,
                         tracks_per_album: int = 4, min_seconds: float = 30.0, max_seconds: float = 60.0,
                         seed: int = 0) -> list[Path]:
    """Create (or complete) the demo collection under `out_dir`; return its roots, one per drive.

    Layout: `{drive}/{Artist}/{Album}/{NN} {Title}{ext}`, albums alternating between the drives,
    one format per album. Artists with an even index are tagged (artist, album, title, track);
    the others carry no tags, so their names come from the folders. Existing files are kept, so
    re-running is cheap.
    """
    out = Path(out_dir)
    roots = [out / drive for drive in DRIVES]
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    first_track: Path | None = None
    album_index = 0
    for a in range(artists):
        artist = f"Demo Artist {chr(ord('A') + a)}"
        tagged = a % 2 == 0
        for b in range(albums_per_artist):
            album = f"Album {b + 1} ({2000 + 3 * a + b})"
            ext = DEMO_FORMATS[album_index % len(DEMO_FORMATS)]
            root = roots[album_index % len(roots)]
            album_index += 1
            remove_stale_temporaries(root / artist / album)
            for t in range(tracks_per_album):
                title = f"Song {a + 1}.{b + 1}.{t + 1}"
                seconds = float(rng.uniform(min_seconds, max_seconds))
                track_seed = int(rng.integers(0, 2**31))
                path = root / artist / album / f"{t + 1:02d} {title}{ext}"
                first_track = first_track or path
                if path.exists():
                    continue
                tags = {"artist": artist, "album": album, "title": title, "track": str(t + 1)} if tagged else None
                # staged: an interrupted run never leaves a truncated file a re-run would take as finished
                with staged_path(path) as tmp:
                    sung = t < tracks_per_album - 1 or tracks_per_album == 1
                    write_track(tmp, seconds=seconds, seed=track_seed, tags=tags, sung=sung)
    if first_track is not None:
        _add_duplicates(first_track, roots)
    notes = roots[0] / NOT_AUDIO_NAME
    if not notes.exists():
        notes.write_text(NOT_AUDIO_TEXT, encoding="utf-8")
    return roots


def _add_duplicates(track: Path, roots: list[Path]) -> None:
    """A symlink to `track` on its own drive and a byte-identical copy on the other drive."""
    favourites = roots[0] / "Favourites"
    favourites.mkdir(exist_ok=True)
    link = favourites / track.name
    if not link.is_symlink():
        link.symlink_to(os.path.relpath(track, favourites))
    backup = roots[-1] / "Backup" / track.name
    if not backup.exists():
        backup.parent.mkdir(parents=True, exist_ok=True)
        with staged_path(backup) as tmp:
            shutil.copyfile(track, tmp)
