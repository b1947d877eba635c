"""The manifests/ folder: tracks.jsonl and failures.jsonl records (`TrackRecord`, `FailureRecord`),
the stages a failure is recorded at, and reading and writing jsonl files of records."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.durable import write_and_rename
from pipeline.records import record_from_dict

DEFAULT_MANIFESTS_DIR = "manifests"
TRACKS_FILE = "tracks.jsonl"
FAILURES_FILE = "failures.jsonl"
MANIFESTS_LOCK = ".lock"  # held by `pipeline ingest` while it runs, and by `pipeline shard` to merge failures
SPLITS = ("train", "val")

# FailureRecord.stage: where a file was given up on.
STAGE_SCAN = "scan"  # walking the roots: broken links, unreadable folders, undecodable names
STAGE_PROBE = "probe"  # ffprobe and content sniffing
STAGE_DECODE = "decode"  # decoding the audio for a shard
STAGE_SHARD = "shard"  # a track the shard stage cannot write (e.g. an id that cannot form a sample key)
STAGE_PAIR = "pair"  # `pipeline pairs`: no partner, no correlation, lengths that differ, unreadable
INGEST_STAGES = (STAGE_SCAN, STAGE_PROBE)  # replaced by every ingest; later stages' records are kept
SHARD_STAGES = (STAGE_DECODE, STAGE_SHARD)  # replaced by every shard run for the tracks it plans


@dataclass
class TrackRecord:
    """One line of tracks.jsonl. `id` is derived from content, never from the path."""

    id: str
    path: str  # absolute
    root: str  # the ingest root (drive) it was found under
    size: int
    mtime: float
    duration: float  # seconds
    sample_rate: int
    channels: int
    codec: str
    artist: str
    album: str
    title: str
    album_key: str  # what the train/val split is decided on
    split: str  # "train" or "val"
    duplicate_of: str | None = None  # id of the track this file duplicates, else None


@dataclass
class FailureRecord:
    """One line of failures.jsonl: a file that could not be used, and why."""

    path: str
    stage: str  # one of the STAGE_* constants
    reason: str  # one line


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def record_to_json(record) -> str:
    # Flat records skip asdict(), whose recursive deep copy was two thirds of the time to write a
    # manifest (pipeline ingest rewrites it after any change); anything nested still goes through it.
    data = {name: getattr(record, name) for name in _field_names(type(record))}
    if not all(type(value) in _JSON_SCALARS for value in data.values()):
        data = asdict(record)
    return json.dumps(data, ensure_ascii=False, sort_keys=False)


def write_jsonl(path: str | os.PathLike, records: Iterable) -> None:
    """Write records to `path`, one JSON object per line, atomically (durable.write_and_rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_and_rename(path) as fh:
        for record in records:
            fh.write(record_to_json(record))
            fh.write("\n")


def read_jsonl(path: str | os.PathLike, cls) -> Iterator:
    """Yield `cls` records from a jsonl file; a missing file yields nothing."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield record_from_dict(cls, json.loads(line))
            except ValueError as exc:  # json.JSONDecodeError and RecordError are both ValueErrors
                raise ValueError(f"{path}:{lineno}: not a valid {cls.__name__} line ({exc})") from exc


def read_tracks(manifests_dir: str | os.PathLike) -> list[TrackRecord]:
    return list(read_jsonl(Path(manifests_dir) / TRACKS_FILE, TrackRecord))


def read_failures(manifests_dir: str | os.PathLike, name: str = FAILURES_FILE) -> list[FailureRecord]:
    return list(read_jsonl(Path(manifests_dir) / name, FailureRecord))


__all__ = [
    "DEFAULT_MANIFESTS_DIR",
    "TRACKS_FILE",
    "FAILURES_FILE",
    "MANIFESTS_LOCK",
    "SPLITS",
    "STAGE_SCAN",
    "STAGE_PROBE",
    "STAGE_DECODE",
    "STAGE_SHARD",
    "INGEST_STAGES",
    "SHARD_STAGES",
    "TrackRecord",
    "FailureRecord",
    "record_to_json",
    "write_jsonl",
    "read_jsonl",
    "read_tracks",
    "read_failures",
    "STAGE_PAIR",
]
