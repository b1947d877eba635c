"""The probe journal (`DIR/.ingest-journal.jsonl`): both the crash log and the incremental cache of ingest.

Every probe outcome (a track, a failure, or "not audio" for a file only its content nominated) is
appended as one JSON line keyed by path + size + mtime and flushed at once, so a run killed with -9
loses at most the line being written (a torn last line is ignored on load). At the end of a run the
journal is rewritten, atomically, to exactly the files seen, which drops vanished ones. When the
journal is missing, the previous tracks.jsonl serves as the cache for tracks.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline import format as fmt
from pipeline.durable import write_and_rename
from pipeline.ingest.probe import PROBER_VERSION, ProbeResult, decided_by_older_prober

JOURNAL_FILE = ".ingest-journal.jsonl"


def track_outcome(path: str, size: int, mtime: float, result: ProbeResult) -> dict:
    return {
        "path": path,
        "size": size,
        "mtime": mtime,
        "kind": "track",
        "fingerprint": result.fingerprint,
        "duration": result.duration,
        "sample_rate": result.sample_rate,
        "channels": result.channels,
        "codec": result.codec,
        "tags": result.tags,
    }


def failure_outcome(path: str, size: int, mtime: float, reason: str, vanished: bool = False) -> dict:
    """`vanished`: the file was gone when probed (an unplugged drive); never reused, so a rerun after
    it is back probes it again."""
    outcome = {"path": path, "size": size, "mtime": mtime, "kind": "failure", "reason": reason}
    outcome["prober"] = PROBER_VERSION
    return {**outcome, "vanished": True} if vanished else outcome


def ignored_outcome(path: str, size: int, mtime: float) -> dict:
    return {"path": path, "size": size, "mtime": mtime, "kind": "ignored"}


@dataclass
class _Outcome:
    path: str
    size: int
    mtime: float
    kind: str


@dataclass
class _TrackOutcome(_Outcome):
    fingerprint: str
    duration: float
    sample_rate: int
    channels: int
    codec: str
    tags: dict[str, str]


@dataclass
class _FailureOutcome(_Outcome):
    reason: str
    vanished: bool = False
    prober: int = 1  # PROBER_VERSION of the prober that decided it (1: before the field)


PROBE_OUTCOMES = {"track": _TrackOutcome, "failure": _FailureOutcome, "ignored": _Outcome}


def checked_outcome(data, kinds: dict[str, type]) -> dict:
    """A journal line as the outcome dict it was written from, or ValueError (the line is then
    unusable); `kinds` maps each outcome kind to the record its line must fit."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in kinds:
        raise ValueError(f"not a journal outcome (kind {kind!r})")
    fmt.record_from_dict(kinds[kind], data)
    return data


class ProbeJournal:
    """Append-only log of probe outcomes, loaded as {path: outcome} (the last line for a path wins)."""

    def __init__(self, manifests_dir: str | os.PathLike, name: str = JOURNAL_FILE, outcome_kinds: dict | None = None):
        # `pipeline pairs` keeps its own journal (another name and outcome records) with the same guarantees.
        self.path = Path(manifests_dir) / name
        self.outcomes: dict[str, dict] = {}
        self._fh = None
        malformed = 0
        try:
            # errors="replace": a line torn inside a multi-byte character must not stop the load.
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # the torn last line of a killed run
                    try:
                        outcome = checked_outcome(data, outcome_kinds or PROBE_OUTCOMES)
                    except ValueError:
                        malformed += 1
                        continue
                    self.outcomes[outcome["path"]] = outcome
        except FileNotFoundError:
            return  # a first run: nothing journaled yet
        if malformed:
            print(
                f"pipeline ingest: warning: {self.path}: {malformed} line(s) of the wrong shape ignored "
                "(those files are probed again)",
                file=sys.stderr,
            )

    def lookup(self, path: str, size: int, mtime: float) -> dict | None:
        outcome = self.outcomes.get(path)
        if (
            outcome is not None
            and outcome["size"] == size
            and outcome["mtime"] == mtime
            and not outcome.get("vanished")
            and not decided_by_older_prober(outcome)
        ):
            return outcome
        return None

    def append(self, outcome: dict) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = _ends_without_newline(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")
            if torn:  # a killed run's torn last line must not swallow the first new one
                self._fh.write("\n")
        self._fh.write(json.dumps(outcome, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the kernel now: survives kill -9 of this process
        self.outcomes[outcome["path"]] = outcome

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def compact(self, outcomes: Iterable[dict]) -> None:
        """Rewrite the journal to exactly `outcomes` (new file + rename)."""
        self.close()
        with write_and_rename(self.path) as fh:
            for outcome in outcomes:
                fh.write(json.dumps(outcome, ensure_ascii=False) + "\n")


def _ends_without_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, 2) == 0:
                return False
            fh.seek(-1, 2)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def outcomes_from_manifest(manifests_dir: str | os.PathLike) -> dict[str, dict]:
    """The previous tracks.jsonl as a cache, for when the journal is gone. Tags are approximated by
    the recorded names (which were tags or folder names of the same path, so they rebuild the same
    record); the album key is carried as recorded, since it may come from an album-artist tag that
    the record does not keep (a compilation would otherwise move to its track artists' keys)."""
    cache = {}
    for record in read_previous(fmt.read_tracks, manifests_dir, "its tracks are probed again"):
        cache[record.path] = {
            "path": record.path,
            "size": record.size,
            "mtime": record.mtime,
            "kind": "track",
            "fingerprint": record.id,
            "duration": record.duration,
            "sample_rate": record.sample_rate,
            "channels": record.channels,
            "codec": record.codec,
            "tags": {"artist": record.artist, "album": record.album, "title": record.title},
            "album_key": record.album_key,
            "duplicate_of": record.duplicate_of,
        }
    return cache


def read_previous(reader, manifests_dir, consequence: str) -> list:
    """A previous manifest is only a cache: a damaged one is a warning, and the run rebuilds it."""
    try:
        return reader(manifests_dir)
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"pipeline ingest: warning: {exc}; {consequence}", file=sys.stderr)
        return []
