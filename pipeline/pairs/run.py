"""`pipeline pairs`: candidates -> probed and aligned pairs -> manifests/pairs.jsonl.

Each candidate's outcome (a pair, or a failure with its reason) is appended to
`.pairs-journal.jsonl` the moment it is known, keyed by both files' paths, sizes and mtimes and the
alignment options, so a run killed at any instant resumes without redoing finished pairs and a
re-run only looks at what changed. pairs.jsonl and pair-failures.jsonl are then rewritten whole
(temporary name, fsync, rename). Work runs in threads: ffprobe and ffmpeg are child processes and
numpy's FFT releases the GIL.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import format as fmt
from pipeline.durable import exclusive, remove_stale_temporaries
from pipeline.ingest.journal import ProbeJournal
from pipeline.ingest.manifest import album_key_of, assign_splits, normalise_name
from pipeline.ingest.probe import ProbeError, probe_file
from pipeline.pairs.align import (
    DEFAULT_MAX_LENGTH_DIFFERENCE,
    DEFAULT_MAX_OFFSET,
    DEFAULT_MIN_CORRELATION,
    DEFAULT_MIN_PEAK_MARGIN,
    AlignmentError,
    align,
    degenerate_target,
    target_energies,
)
from pipeline.pairs.discover import Candidate, discover_parallel, discover_stems
from pipeline.pairs.same import mark_duplicates, once_each, outermost_roots, previous_canonical

JOURNAL_FILE = ".pairs-journal.jsonl"


@dataclass(frozen=True)
class PairOptions:
    max_offset: float = DEFAULT_MAX_OFFSET
    min_correlation: float = DEFAULT_MIN_CORRELATION
    max_length_difference: float = DEFAULT_MAX_LENGTH_DIFFERENCE
    val_fraction: float = 0.1
    min_peak_margin: float = DEFAULT_MIN_PEAK_MARGIN

    def __post_init__(self):
        checks = [
            ("max_offset", self.max_offset, 0.0, 60.0),
            ("min_correlation", self.min_correlation, 0.0, 1.0),
            ("max_length_difference", self.max_length_difference, 0.0, 3600.0),
            ("val_fraction", self.val_fraction, 0.0, 1.0),
            ("min_peak_margin", self.min_peak_margin, 0.0, 1.0),
        ]
        for name, value, low, high in checks:
            if not low <= value <= high:  # NaN fails too
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


@dataclass
class PairsSummary:
    candidates: int = 0
    pairs: int = 0
    failures: int = 0
    duplicates: int = 0  # pairs whose mixture is another pair's (marked duplicate_of)
    checked: int = 0  # candidates probed and aligned this time
    reused: int = 0  # outcomes taken from the journal
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        splits = ", ".join(f"{split} {count}" for split, count in sorted(self.splits.items()))
        return (
            f"pairs: {self.candidates} candidates: {self.pairs} pairs ({splits or 'none'}), "
            f"{self.duplicates} duplicates, {self.failures} failures; "
            f"checked {self.checked}, reused {self.reused}; {self.seconds:.1f} s"
        )


@dataclass
class _Outcome:
    path: str  # _journal_key()
    size: list[int] | None  # mixture's, target's
    mtime: list[float] | None
    kind: str


@dataclass
class _PairOutcome(_Outcome):
    id: str
    mixture_id: str
    duration: float
    target_id: str
    target_duration: float
    offset_seconds: float
    correlation: float
    album_key: str


@dataclass
class _FailureOutcome(_Outcome):
    failed: str
    reason: str


PAIR_OUTCOMES = {"pair": _PairOutcome, "failure": _FailureOutcome}  # what a journal line must fit


def _journal_key(candidate: Candidate, options: PairOptions) -> str:
    alignment = [options.max_offset, options.min_correlation, options.max_length_difference, options.min_peak_margin]
    return json.dumps([candidate.mixture, candidate.target, candidate.target_kind, alignment], ensure_ascii=False)


def _stat(path: str) -> tuple[int, float] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime


def check_candidate(candidate: Candidate, options: PairOptions) -> dict:
    """Probe both files and align them: a journal outcome (kind "pair" or "failure")."""
    try:
        return {"kind": "pair", **_check(candidate, options)}
    except _Failed as exc:
        return {"kind": "failure", "failed": exc.path, "reason": str(exc)}
    except AlignmentError as exc:  # about the mixture (silent)
        return {"kind": "failure", "failed": candidate.mixture, "reason": f"{candidate.mixture}: {exc}"}


class _Failed(Exception):
    """A candidate that is no pair: `path` is the file the failure is recorded under."""

    def __init__(self, path: str, reason: str):
        super().__init__(reason)
        self.path = path


def _check(candidate: Candidate, options: PairOptions) -> dict:
    from pipeline.audio.decode import DecodeError

    probes = {}
    for role, path in (("mixture", candidate.mixture), ("target", candidate.target)):
        try:
            result = probe_file(path)
        except ProbeError as exc:
            raise _Failed(path, f"{role} {path}: {exc}") from exc
        if result is None:
            raise _Failed(path, f"{role} {path}: not audio")
        probes[role] = result
    mixture, target = probes["mixture"], probes["target"]
    if mixture.fingerprint == target.fingerprint:
        raise _Failed(
            candidate.target, f"{candidate.target}: is the mixture itself ({candidate.mixture}, same content)"
        )
    partner = "instrumental" if candidate.target_kind == fmt.TARGET_INSTRUMENTAL else "vocals stem"
    try:
        found = align(candidate.mixture, candidate.target, options.max_offset)
        problem = found.problem(options.min_correlation, options.min_peak_margin, options.max_offset)
        if problem is not None:
            hint = "" if problem.startswith("polarity") else f": the wrong {partner}?"
            raise _Failed(candidate.target, f"{candidate.target}: {problem} against {candidate.mixture}{hint}")
        offset, correlation = found.offset, found.correlation
        difference = target.duration - offset - mixture.duration
        if abs(difference) > options.max_length_difference:
            raise _Failed(
                candidate.target,
                f"{candidate.target}: {target.duration:.2f} s against the mixture's {mixture.duration:.2f} s "
                f"(offset {offset * 1000:+.1f} ms): lengths differ by {difference:+.2f} s, more than "
                f"{options.max_length_difference:g} s",
            )
        offset = round(offset * fmt.SAMPLE_RATE) / fmt.SAMPLE_RATE
        degenerate = degenerate_target(
            *target_energies(candidate.mixture, candidate.target, offset, candidate.target_kind),
            candidate.target_kind,
        )
    except DecodeError as exc:
        raise _Failed(exc.path, str(exc)) from exc
    if degenerate is not None:
        raise _Failed(candidate.target, f"{candidate.target}: {degenerate} ({candidate.mixture})")
    tags = mixture.tags
    if tags.get("album"):
        album_key = album_key_of(tags.get("album_artist") or tags.get("artist", ""), tags["album"])
    elif candidate.album_hint:
        album_key = normalise_name(candidate.album_hint)
    else:
        album_key = f"song/{normalise_name(candidate.name)}"
    offset_samples = round(offset * fmt.SAMPLE_RATE)
    identity = f"{mixture.fingerprint}:{target.fingerprint}:{candidate.target_kind}:{offset_samples}"
    return {
        "id": hashlib.blake2b(identity.encode(), digest_size=16).hexdigest(),
        "mixture_id": mixture.fingerprint,
        "duration": mixture.duration,
        "target_id": target.fingerprint,
        "target_duration": target.duration,
        "offset_seconds": offset_samples / fmt.SAMPLE_RATE,
        "correlation": round(correlation, 6),
        "album_key": album_key,
    }


def build_pairs(
    manifests_dir: str | os.PathLike,
    roots: list[str] = (),
    mixtures: str | None = None,
    targets: str | None = None,
    options: PairOptions = PairOptions(),
    workers: int = 2,
    progress: bool | None = None,
) -> PairsSummary:
    """Find, check and record the pairs under `roots` (stems layout) and/or `mixtures`/`targets`."""
    started = time.perf_counter()
    manifests_dir = Path(manifests_dir)
    candidates, failures = [], []
    for root in roots:
        if not os.path.isdir(root):
            raise ValueError(f"{root}: no such directory")
    for root in outermost_roots(roots):
        found, failed = discover_stems(root)
        candidates += found
        failures += failed
    if (mixtures is None) != (targets is None):
        raise ValueError("--mixtures and --targets go together")
    if mixtures is not None:
        for folder in (mixtures, targets):
            if not os.path.isdir(folder):
                raise ValueError(f"{folder}: no such directory")
        found, failed = discover_parallel(mixtures, targets)
        candidates += found
        failures += failed
    candidates = once_each(candidates)
    summary = PairsSummary(candidates=len(candidates))
    manifests_dir.mkdir(parents=True, exist_ok=True)
    busy = f"{manifests_dir}: another `pipeline ingest` or `pipeline pairs` is writing here"
    with exclusive(manifests_dir / fmt.MANIFESTS_LOCK, busy):
        remove_stale_temporaries(manifests_dir)
        journal = ProbeJournal(manifests_dir, JOURNAL_FILE, PAIR_OUTCOMES)
        try:
            outcomes = _outcomes(candidates, journal, options, workers, summary, progress)
            journal.compact(outcomes[_journal_key(c, options)] for c in candidates)
        finally:
            journal.close()
        records = []
        for candidate in candidates:
            outcome = outcomes[_journal_key(candidate, options)]
            if outcome["kind"] == "failure":
                failures.append(fmt.FailureRecord(outcome["failed"], fmt.STAGE_PAIR, outcome["reason"]))
            else:
                records.append(_record(candidate, outcome))
        mark_duplicates(records, previous_canonical(manifests_dir))
        canonical = {r.id: r for r in records if r.duplicate_of is None}
        splits = assign_splits((r.album_key for r in canonical.values()), options.val_fraction)
        for record in records:
            record.split = splits[canonical[record.duplicate_of or record.id].album_key]
            if record.duplicate_of is not None:
                record.album_key = canonical[record.duplicate_of].album_key
                summary.duplicates += 1
            else:
                summary.splits[record.split] = summary.splits.get(record.split, 0) + 1
        records.sort(key=lambda r: (r.mixture_path, r.target_path))
        failures.sort(key=lambda f: (f.path, f.reason))
        fmt.write_jsonl(manifests_dir / fmt.PAIRS_FILE, records)
        # decode failures of `pipeline shard --pairs` for pairs still recorded are kept
        recorded = {r.mixture_path for r in records} | {r.target_path for r in records}
        later = [f for f in _previous_failures(manifests_dir) if f.stage != fmt.STAGE_PAIR and f.path in recorded]
        fmt.write_jsonl(manifests_dir / fmt.PAIR_FAILURES_FILE, failures + later)
    summary.pairs, summary.failures = len(records) - summary.duplicates, len(failures)
    summary.seconds = time.perf_counter() - started
    return summary


def _previous_failures(manifests_dir: Path) -> list[fmt.FailureRecord]:
    try:
        return fmt.read_failures(manifests_dir, fmt.PAIR_FAILURES_FILE)
    except (ValueError, UnicodeDecodeError):
        print(
            f"pipeline pairs: warning: {manifests_dir / fmt.PAIR_FAILURES_FILE} is unreadable; rewritten",
            file=sys.stderr,
        )
        return []


def _outcomes(candidates, journal, options, workers, summary, progress) -> dict[str, dict]:
    from tqdm import tqdm

    outcomes, pending = {}, []
    for candidate in candidates:
        key = _journal_key(candidate, options)
        stats = [_stat(candidate.mixture), _stat(candidate.target)]
        if None in stats:
            outcomes[key] = {
                "path": key,
                "size": None,
                "mtime": None,
                "kind": "failure",
                "failed": candidate.mixture,
                "reason": "file vanished during the run",
            }
            continue
        sizes, mtimes = [s[0] for s in stats], [s[1] for s in stats]
        known = journal.lookup(key, sizes, mtimes)
        if known is not None:
            outcomes[key] = known
            summary.reused += 1
        else:
            pending.append((candidate, key, sizes, mtimes))
    bar = tqdm(
        total=len(pending),
        unit="pair",
        desc="pairs",
        disable=not (sys.stderr.isatty() if progress is None else progress),
    )
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {
                pool.submit(check_candidate, c, options): (key, sizes, mtimes) for c, key, sizes, mtimes in pending
            }
            for future in as_completed(futures):
                key, sizes, mtimes = futures[future]
                outcome = {"path": key, "size": sizes, "mtime": mtimes, **future.result()}
                journal.append(outcome)  # flushed: a kill after this line keeps the work
                outcomes[key] = outcome
                summary.checked += 1
                bar.update(1)
    finally:
        bar.close()
    return outcomes


def _record(candidate: Candidate, outcome: dict) -> fmt.PairRecord:
    return fmt.PairRecord(
        id=outcome["id"],
        name=candidate.name,
        layout=candidate.layout,
        root=candidate.root,
        mixture_path=candidate.mixture,
        mixture_id=outcome["mixture_id"],
        mixture_size=outcome["size"][0],
        mixture_mtime=outcome["mtime"][0],
        duration=outcome["duration"],
        target_path=candidate.target,
        target_id=outcome["target_id"],
        target_size=outcome["size"][1],
        target_mtime=outcome["mtime"][1],
        target_duration=outcome["target_duration"],
        target_kind=candidate.target_kind,
        offset_seconds=outcome["offset_seconds"],
        correlation=outcome["correlation"],
        album_key=outcome["album_key"],
        split="",
    )


__all__ = [
    "build_pairs",
    "check_candidate",
    "PairOptions",
    "PairsSummary",
    "JOURNAL_FILE",
]
