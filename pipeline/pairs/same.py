"""Which pairs are the same song: roots given twice or nested, a song folder reached twice, and
copies of a song (content-identical mixtures), so that nothing is checked, trained on or scored
twice and no song sits in both splits."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import format as fmt
from pipeline.pairs.discover import Candidate


def outermost_roots(roots: list[str]) -> list[str]:
    """The roots without repeats and without those inside another root (found under the outer one),
    as ingest resolves nested roots: a song folder is found once, whatever the order given."""
    real = sorted({os.path.realpath(r): r for r in roots}.items(), key=lambda item: (len(item[0]), item[0]))
    kept: list[tuple[str, str]] = []
    for path, root in real:
        if not any(path == outer or path.startswith(outer.rstrip(os.sep) + os.sep) for outer, _ in kept):
            kept.append((path, root))
    return [root for _, root in kept]


def once_each(candidates: list[Candidate]) -> list[Candidate]:
    """One candidate per (mixture, target) real-path pair: a song reached twice (a symlinked song
    folder, overlapping roots) is checked and recorded once."""
    seen, unique = set(), []
    for candidate in candidates:
        key = (os.path.realpath(candidate.mixture), os.path.realpath(candidate.target), candidate.target_kind)
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique


def mark_duplicates(records: list[fmt.PairRecord], previous: set[str] = frozenset()) -> None:
    """Pairs whose mixtures have the same content are one song; one of them is canonical, the
    others get `duplicate_of`. The canonical is the pair recorded canonical before (`previous`:
    mixture paths), so a copy made later never takes the song's place or moves it to another
    split; among new ones, the mixture not reached through a symlink, then the oldest file (a copy
    is newer than its original), then the smallest path."""
    best: dict[str, fmt.PairRecord] = {}

    def rank(record: fmt.PairRecord) -> tuple:
        path = record.mixture_path
        via_link = os.path.realpath(path) != os.path.abspath(path)
        return path not in previous, via_link, record.mixture_mtime, path

    for record in records:
        known = best.get(record.mixture_id)
        if known is None or rank(record) < rank(known):
            best[record.mixture_id] = record
    for record in records:
        canonical = best[record.mixture_id]
        record.duplicate_of = None if canonical is record else canonical.id


def previous_canonical(manifests_dir: Path) -> set[str]:
    """Mixture paths of the canonical pairs of the manifest being replaced (a damaged one: none)."""
    try:
        return {p.mixture_path for p in fmt.read_pairs(manifests_dir) if p.duplicate_of is None}
    except (ValueError, UnicodeDecodeError):
        return set()


__all__ = ["outermost_roots", "once_each", "mark_duplicates", "previous_canonical"]
