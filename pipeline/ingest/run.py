"""`pipeline ingest`: scan the drives, probe what is new or changed, write the manifests.

Probing runs in threads, not processes. The work is an `ffprobe` child process per file plus a
192 KiB read, both outside the GIL, so threads keep the cores as busy as processes would; in
alternating rounds on the shared 2-core machine (benchmarks/ingest_bench.py, "probe pool" rows)
neither won consistently (ratios from 0.96 to 1.39 either way, within the noise of other users'
load). Threads win on everything else: no worker start-up (most re-ingests probe a handful of
files), nothing to pickle, and each outcome arrives in this process, which appends it to the journal
the moment it is known.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import format as fmt
from pipeline.durable import exclusive, remove_stale_temporaries
from pipeline.ingest.journal import (
    ProbeJournal,
    failure_outcome,
    ignored_outcome,
    outcomes_from_manifest,
    track_outcome,
)
from pipeline.ingest.manifest import (
    build_records,
    forget_state,
    inputs_digest,
    save_state,
    unchanged_counts,
    write_manifest,
)
from pipeline.ingest.probe import ProbeError, probe_file
from pipeline.ingest.scan import FoundFile, RootScan, root_error, scan_roots


def default_workers() -> int:
    # ffprobe is half process start-up (CPU) and half waiting on the drive: 2 per core overlaps both.
    return min(32, 2 * (os.cpu_count() or 1))


@dataclass
class IngestSummary:
    roots: list[str]
    files: int = 0  # candidate files seen on the roots
    tracks: int = 0  # manifest lines, duplicates included
    duplicates: int = 0
    failures: int = 0
    probed: int = 0  # ffprobe runs this time
    reused: int = 0  # outcomes taken from the journal / previous manifest
    root_errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"ingest: {len(self.roots)} roots, {self.files} files: {self.tracks} tracks "
            f"({self.duplicates} duplicates), {self.failures} failures; probed {self.probed}, "
            f"reused {self.reused}; {self.seconds:.1f} s"
            + (f"; {len(self.root_errors)} roots unreadable" if self.root_errors else "")
        )


def ingest(
    roots: list[str],
    manifests_dir: str | os.PathLike = "manifests",
    workers: int | None = None,
    val_fraction: float = 0.02,
    progress: bool | None = None,
    follow_outside_links: bool = False,
) -> IngestSummary:
    """Ingest `roots` into `manifests_dir`/tracks.jsonl and failures.jsonl; return the counts.

    A root that cannot be read is reported on stderr and in `root_errors`; the others are ingested
    and the tracks previously recorded for that root are kept (an unplugged drive does not erase its
    part of the collection). Only files whose (path, size, mtime) changed are probed, and when
    nothing changed at all the manifests are left as they are (see manifest.py, "ingest state").
    `follow_outside_links`: enter directory symlinks that lead outside every root (scan.py)."""
    start = time.perf_counter()
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    roots = list(dict.fromkeys(os.path.abspath(r) for r in roots))
    manifests_dir = Path(manifests_dir)
    summary = IngestSummary(roots)
    scans = scan_roots(roots, follow_outside_links)
    for scan in scans:
        if scan.error:
            summary.root_errors[scan.root] = scan.error
            print(f"pipeline ingest: error: {scan.root}: {scan.error}", file=sys.stderr)
    found = _outermost_sightings(scans)
    # Nested roots report a broken link or unreadable folder once per root that reaches it.
    scan_failures = list({(f.path, f.reason): f for scan in scans for f in scan.failures}.values())

    digest = None if summary.root_errors else inputs_digest(roots, found, scan_failures, val_fraction)
    counts = digest and unchanged_counts(manifests_dir, digest)
    if counts:
        summary.files = summary.reused = counts["files"]
        summary.tracks, summary.duplicates, summary.failures = (
            counts["tracks"],
            counts["duplicates"],
            counts["failures"],
        )
        summary.seconds = time.perf_counter() - start
        return summary

    busy = f"{manifests_dir}: another `pipeline ingest` is writing here"
    with exclusive(manifests_dir / fmt.MANIFESTS_LOCK, busy):
        forget_state(manifests_dir)
        remove_stale_temporaries(manifests_dir)
        journal = ProbeJournal(manifests_dir)
        try:
            outcomes, pending = _reuse_outcomes(found, journal, manifests_dir)
            found += _keep_unreadable_roots(scans, manifests_dir, outcomes)
            summary.reused = len(outcomes)
            summary.probed = _probe_all(
                pending,
                journal,
                outcomes,
                workers or default_workers(),
                sys.stderr.isatty() if progress is None else progress,
            )
            _report_vanished_roots(roots, summary)
            tracks, probe_failures = build_records(found, outcomes, val_fraction)
            failures = scan_failures + probe_failures
            write_manifest(manifests_dir, tracks, failures)
            seen = {f.path for f in found}
            if summary.probed or seen != journal.outcomes.keys():
                journal.compact(outcomes[p] for p in sorted(seen) if p in outcomes)
        finally:
            journal.close()

    summary.files = len(found)
    summary.tracks = len(tracks)
    summary.duplicates = sum(t.duplicate_of is not None for t in tracks)
    summary.failures = len(failures)
    # A file that vanished while we probed (a drive unplugged mid-run) may come back unchanged: the
    # rerun must then redo it, not take the unchanged scan for an up-to-date manifest.
    if digest and not summary.root_errors and not any(o.get("vanished") for o in outcomes.values()):
        save_state(
            manifests_dir,
            digest,
            {
                "files": summary.files,
                "tracks": summary.tracks,
                "duplicates": summary.duplicates,
                "failures": summary.failures,
            },
        )
    summary.seconds = time.perf_counter() - start
    return summary


def _outermost_sightings(scans: list[RootScan]) -> list[FoundFile]:
    """One sighting per path. A file under nested roots (/a and /a/b) is taken from the outermost,
    so its root, and the artist/album read from the folders below it, do not depend on the order
    the roots were given in."""
    found: dict[str, FoundFile] = {}
    for scan in scans:
        for file in scan.files:
            known = found.get(file.path)
            if known is None or len(file.root) < len(known.root):
                found[file.path] = file
    return list(found.values())


def _report_vanished_roots(roots: list[str], summary: IngestSummary) -> None:
    """A root that was readable at the scan but is gone now: its unprobed files are failures, and
    the user gets the same one-line error as for a root that was missing from the start."""
    for root in roots:
        error = None if root in summary.root_errors else root_error(root)
        if error:
            summary.root_errors[root] = f"{error} (it went away during the run; rerun when it is back)"
            print(f"pipeline ingest: error: {root}: {summary.root_errors[root]}", file=sys.stderr)


def _inode_key(file: FoundFile) -> tuple:
    return file.dev, file.ino, file.size, file.mtime


def _reuse_outcomes(
    found: list[FoundFile], journal: ProbeJournal, manifests_dir: Path
) -> tuple[dict[str, dict], dict[tuple, list[FoundFile]]]:
    """Outcomes known for unchanged files, and the rest grouped by inode (a hard link or a symlink
    is probed once, through any of its paths)."""
    outcomes: dict[str, dict] = {}
    missing = []
    lookup = journal.lookup
    for file in found:
        outcome = lookup(file.path, file.size, file.mtime)
        if outcome is None:
            missing.append(file)
        else:
            outcomes[file.path] = outcome
    if missing and not journal.outcomes:
        previous = outcomes_from_manifest(manifests_dir)
        still_missing = []
        for file in missing:
            outcome = previous.get(file.path)
            if outcome is not None and outcome["size"] == file.size and outcome["mtime"] == file.mtime:
                outcomes[file.path] = outcome
            else:
                still_missing.append(file)
        missing = still_missing

    by_inode = {_inode_key(f): outcomes[f.path] for f in found if f.path in outcomes} if missing else {}
    pending: dict[tuple, list[FoundFile]] = {}
    for file in missing:
        known = by_inode.get(_inode_key(file))
        if known is not None:
            outcomes[file.path] = {**known, "path": file.path}
        else:
            pending.setdefault(_inode_key(file), []).append(file)
    return outcomes, pending


def _keep_unreadable_roots(scans: list[RootScan], manifests_dir: Path, outcomes: dict[str, dict]) -> list[FoundFile]:
    """Previous manifest lines of roots that could not be read this time, as if they had been found.
    Whether a path is a symlink is not recorded: a former duplicate is ranked like a symlink, so it cannot
    take the canonical place from the sighting that held it (possibly on a drive still present)."""
    failed = {scan.root for scan in scans if scan.error}
    if not failed:
        return []
    kept = []
    for path, outcome in outcomes_from_manifest(manifests_dir).items():
        record_root = _root_of(path, failed)
        if record_root is not None and path not in outcomes:
            outcomes[path] = outcome
            kept.append(
                FoundFile(
                    path,
                    record_root,
                    outcome["size"],
                    outcome["mtime"],
                    -1,
                    -1,
                    by_extension=True,
                    is_link=outcome["duplicate_of"] is not None,
                )
            )
    return kept


def _root_of(path: str, roots: set[str]) -> str | None:
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return root
    return None


def _interleave_roots(groups: list[list[FoundFile]]) -> list[list[FoundFile]]:
    """Round-robin over roots, so every drive is busy from the start instead of one after another."""
    per_root: dict[str, list] = {}
    for group in sorted(groups, key=lambda g: g[0].path):
        per_root.setdefault(group[0].root, []).append(group)
    queues = list(per_root.values())
    order = []
    for i in range(max((len(q) for q in queues), default=0)):
        order += [q[i] for q in queues if i < len(q)]
    return order


def _probe_one(group: list[FoundFile]) -> list[dict]:
    file = group[0]
    try:
        result = probe_file(file.path, file.by_extension)
    except (ProbeError, OSError) as exc:
        return [failure_outcome(f.path, f.size, f.mtime, str(exc), vanished=not os.path.exists(f.path)) for f in group]
    if result is None:
        return [ignored_outcome(f.path, f.size, f.mtime) for f in group]
    return [track_outcome(f.path, f.size, f.mtime, result) for f in group]


def _probe_all(
    pending: dict[tuple, list[FoundFile]],
    journal: ProbeJournal,
    outcomes: dict[str, dict],
    workers: int,
    progress: bool,
) -> int:
    """Probe each pending inode once; every outcome is journaled the moment it is known."""
    if not pending:
        return 0
    from tqdm import tqdm

    groups = _interleave_roots(list(pending.values()))
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool,
        tqdm(total=len(groups), unit="file", desc="probe", disable=not progress, dynamic_ncols=True) as bar,
    ):
        futures = [pool.submit(_probe_one, group) for group in groups]
        try:
            for future in as_completed(futures):
                for outcome in future.result():
                    journal.append(outcome)
                    outcomes[outcome["path"]] = outcome
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return len(groups)
