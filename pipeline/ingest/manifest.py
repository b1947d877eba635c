"""Probe outcomes -> manifest records: names, duplicates, splits, atomic writes (the outcomes come
from the probe journal, journal.py).

The ingest state (`DIR/.ingest-state.json`) makes an unchanged re-ingest stat-only: it holds a
digest of everything the manifests are a function of (the scan: paths, roots, sizes, mtimes, link
flags, scan failures; the options; this code) and the stat of the files written. When both still
match, the manifests on disk are exactly what a rebuild would write, and nothing is read or
rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import format as fmt
from pipeline.durable import write_text
from pipeline.format import FailureRecord, TrackRecord
from pipeline.ingest.journal import JOURNAL_FILE, read_previous

STATE_FILE = ".ingest-state.json"


# --- names and splits ----------------------------------------------------------------------

_DISC_FOLDER = re.compile(r"^\s*(cd|dis[ck])\s*\d+\s*$", re.IGNORECASE)
_TRACK_NUMBER = re.compile(r"^\d{1,3}\s*[-._ ]\s*(?=\S)")


def folder_names(path: str, root: str) -> tuple[str, str, str]:
    """(artist, album, title) from `root/.../Artist/Album/[CD1/]NN Title.ext`; "" above the root."""
    prefix = root.rstrip(os.sep) + os.sep
    parts = (path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)).split(os.sep)
    stem = os.path.splitext(parts[-1])[0]
    title = _TRACK_NUMBER.sub("", stem, count=1) or stem
    folders = parts[:-1]
    if folders and _DISC_FOLDER.match(folders[-1]):
        folders = folders[:-1]
    album = folders[-1] if folders else ""
    artist = folders[-2] if len(folders) >= 2 else ""
    return artist, album, title


def normalise_name(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def album_key_of(album_artist: str, album: str) -> str:
    return f"{normalise_name(album_artist)}/{normalise_name(album)}"


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") / 2**64


def assign_splits(album_keys: Iterable[str], val_fraction: float) -> dict[str, str]:
    """album_key -> "train"/"val" by a hash of the key, so an album's split never depends on the
    rest of the collection; with >= 2 albums at least one is val (and one train unless
    val_fraction >= 1): the album with the smallest (largest) hash is moved."""
    hashes = {key: _unit_hash(key) for key in set(album_keys)}
    splits = {key: "val" if h < val_fraction else "train" for key, h in hashes.items()}
    if len(splits) >= 2:
        if "val" not in splits.values():
            splits[min(hashes, key=hashes.get)] = "val"
        if "train" not in splits.values() and val_fraction < 1:
            splits[max(hashes, key=hashes.get)] = "train"
    return splits


# --- records -------------------------------------------------------------------------------


def build_records(
    found: list, outcomes: dict[str, dict], val_fraction: float
) -> tuple[list[TrackRecord], list[FailureRecord]]:
    """Scanned files + their probe outcomes -> (tracks sorted by path, probe failures).

    Sightings of the same content share its id. The canonical one is the smallest path that is not
    itself a symlink (a link in a "Favourites" folder must not name the track), else the smallest
    path; the others carry `duplicate_of` and the canonical's names and split, so one piece of
    content is never in both splits."""
    canonical: dict[str, tuple] = {}  # fingerprint -> (rank, file, outcome) of the canonical sighting
    sightings = []
    failures = []
    for file in found:
        outcome = outcomes.get(file.path)
        if outcome is None or outcome["kind"] == "ignored":
            continue
        if outcome["kind"] == "failure":
            failures.append(FailureRecord(file.path, fmt.STAGE_PROBE, outcome["reason"]))
            continue
        sightings.append((file, outcome))
        rank = (file.is_link, file.path)
        best = canonical.get(outcome["fingerprint"])
        if best is None or rank < best[0]:
            canonical[outcome["fingerprint"]] = (rank, file, outcome)

    names = {fp: _names(file, outcome) for fp, (_, file, outcome) in canonical.items()}
    splits = assign_splits((n[3] for n in names.values()), val_fraction)
    tracks = []
    for file, outcome in sightings:
        fp = outcome["fingerprint"]
        artist, album, title, key = names[fp]
        tracks.append(
            TrackRecord(
                id=fp,
                path=file.path,
                root=file.root,
                size=file.size,
                mtime=file.mtime,
                duration=outcome["duration"],
                sample_rate=outcome["sample_rate"],
                channels=outcome["channels"],
                codec=outcome["codec"],
                artist=artist,
                album=album,
                title=title,
                album_key=key,
                split=splits[key],
                duplicate_of=None if canonical[fp][1] is file else fp,
            )
        )
    tracks.sort(key=lambda t: t.path)
    return tracks, failures


def _names(file, outcome: dict) -> tuple[str, str, str, str]:
    tags = outcome["tags"]
    folder_artist, folder_album, folder_title = folder_names(file.path, file.root)
    artist = tags.get("artist") or tags.get("album_artist") or folder_artist
    album = tags.get("album") or folder_album
    title = tags.get("title") or folder_title
    key = outcome.get("album_key") or album_key_of(tags.get("album_artist") or artist, album)
    return artist, album, title, key


def write_manifest(manifests_dir: str | os.PathLike, tracks: list[TrackRecord], failures: list[FailureRecord]) -> None:
    """tracks.jsonl and failures.jsonl, each atomically. Failures that later stages recorded (e.g.
    decode) are kept for files that are still tracks; ingest's own are replaced."""
    manifests_dir = Path(manifests_dir)
    paths = {t.path for t in tracks}
    previous = read_previous(fmt.read_failures, manifests_dir, "failures of later stages in it are dropped")
    later = [f for f in previous if f.stage not in fmt.INGEST_STAGES and f.path in paths]
    fmt.write_jsonl(manifests_dir / fmt.TRACKS_FILE, tracks)
    fmt.write_jsonl(
        manifests_dir / fmt.FAILURES_FILE, sorted(failures + later, key=lambda f: (f.path, f.stage, f.reason))
    )


# --- the unchanged-run shortcut ------------------------------------------------------------


def _code_files() -> list[Path]:
    """The modules whose code decides the manifests' content."""
    here = Path(__file__).parent
    return sorted(Path(fmt.__file__).parent.glob("*.py")) + [
        here / name
        for name in ("scan.py", "probe.py", "sniff.py", "containers.py", "journal.py", "manifest.py", "run.py")
    ]


def inputs_digest(roots: list[str], found: list, scan_failures: list[FailureRecord], val_fraction: float) -> str:
    """Digest of everything the manifests are built from, given the journal they were built with."""
    digest = hashlib.blake2b(digest_size=16)
    for path in _code_files():
        digest.update(path.read_bytes())
    digest.update(repr((roots, val_fraction)).encode())
    digest.update(repr(sorted((f.path, f.root, f.size, f.mtime, f.is_link) for f in found)).encode())
    digest.update(repr(sorted((f.path, f.reason) for f in scan_failures)).encode())
    return digest.hexdigest()


def _stat_of(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _written_files(manifests_dir: Path) -> dict[str, list[int] | None]:
    return {name: _stat_of(manifests_dir / name) for name in (fmt.TRACKS_FILE, fmt.FAILURES_FILE, JOURNAL_FILE)}


@dataclass
class IngestCounts:
    files: int
    tracks: int
    duplicates: int
    failures: int


@dataclass
class IngestState:
    """`.ingest-state.json`."""

    inputs: str  # inputs_digest()
    files: dict[str, list[int] | None]  # _written_files(): the stat of each file written
    counts: IngestCounts


def unchanged_counts(manifests_dir: str | os.PathLike, digest: str) -> dict | None:
    """The counts saved with the manifests if they are still exactly what `digest` would build.
    A missing, unreadable or malformed state only means the manifests are rebuilt."""
    path = Path(manifests_dir) / STATE_FILE
    try:
        state = fmt.record_from_dict(IngestState, json.loads(path.read_text(encoding="utf-8")))
    except OSError:  # none yet, or unreachable (then writing the manifests reports it)
        return None
    except ValueError as exc:
        print(f"pipeline ingest: warning: {path}: ignored, rebuilding the manifests ({exc})", file=sys.stderr)
        return None
    if state.inputs != digest or state.files != _written_files(Path(manifests_dir)):
        return None
    return asdict(state.counts)


def save_state(manifests_dir: str | os.PathLike, digest: str, counts: dict) -> None:
    manifests_dir = Path(manifests_dir)
    state = {"inputs": digest, "files": _written_files(manifests_dir), "counts": counts}
    write_text(manifests_dir / STATE_FILE, json.dumps(state))


def forget_state(manifests_dir: str | os.PathLike) -> None:
    """Called before anything is written: a run killed half-way must not look unchanged."""
    (Path(manifests_dir) / STATE_FILE).unlink(missing_ok=True)
