"""Where the pairs are: the two layouts separation collections come in.

- **stems**: a folder per song holding `mixture.<ext>` and stems (MUSDB18-HQ, Music-Source-
  Separation-Training). The target is `instrumental.<ext>` (or `accompaniment.<ext>`) when present,
  else the mixture minus `vocals.<ext>`.
- **parallel**: two folders, mixtures and instrumentals, whose files are matched by their path
  relative to the folder without the extension (vocal-remover's layout: `mixtures/Album/Song.flac`
  pairs with `instrumentals/Album/Song.wav`).

Only names are looked at here (no file is opened); a file without a partner is a failure with its
reason. Whether a file is audio, and whether the partners belong together, is decided later
(probe and alignment).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline import format as fmt
from pipeline.ingest.sniff import AUDIO_EXTENSIONS

MIXTURE_NAMES = ("mixture", "mix")
INSTRUMENTAL_NAMES = ("instrumental", "accompaniment")
VOCALS_NAMES = ("vocals", "vocal")


@dataclass(frozen=True)
class Candidate:
    """Two files that should form a pair (not yet checked)."""

    name: str
    layout: str
    root: str
    mixture: str  # absolute paths
    target: str
    target_kind: str
    album_hint: str  # the folder a song's album is taken from when the mixture has no album tag


def _is_audio_name(name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot and stem and ext.lower() in AUDIO_EXTENSIONS and not name.startswith("."))


def _walk(root: Path, outside: tuple[Path, ...] = ()):
    """(folder, sorted file names) for every folder under root, each real folder once: first the
    real tree, then what directory symlinks add (so a song is named by its real folder, not by a
    link to it, and symlink loops end); folders whose real path is one of `outside` (the other
    role's folder nested in this one) are not entered."""
    seen: set[tuple[int, int]] = set()
    excluded = {os.path.realpath(p) for p in outside}
    links: list[str] = []

    def visit(top, follow: bool):
        for folder, dirs, files in os.walk(top, followlinks=follow):
            try:
                st = os.stat(folder)
            except OSError:
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen or os.path.realpath(folder) in excluded:
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if not follow:
                links.extend(os.path.join(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d)))
            yield Path(folder), sorted(files)

    yield from visit(root, False)
    for link in links:
        yield from visit(link, True)


def _by_stem(files: list[str]) -> dict[str, list[str]]:
    stems: dict[str, list[str]] = defaultdict(list)
    for name in files:
        if _is_audio_name(name):
            stems[name.rpartition(".")[0].casefold()].append(name)
    return stems


def _one(folder: Path, stems: dict[str, list[str]], names: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(path, None) for the one file under any of `names`, (None, reason) when ambiguous, (None, None) if absent."""
    found = [name for stem in names for name in stems.get(stem, [])]
    if len(found) > 1:
        return None, f"ambiguous: {', '.join(found)} in {folder}"
    return (str(folder / found[0]), None) if found else (None, None)


def discover_stems(root: str) -> tuple[list[Candidate], list[fmt.FailureRecord]]:
    """Song folders under `root` (stems layout)."""
    root_path = Path(os.path.abspath(root))
    candidates, failures = [], []
    for folder, files in _walk(root_path):
        stems = _by_stem(files)
        mixture, problem = _one(folder, stems, MIXTURE_NAMES)
        instrumental, problem_i = _one(folder, stems, INSTRUMENTAL_NAMES)
        vocals, problem_v = _one(folder, stems, VOCALS_NAMES)
        problem = problem or problem_i or (problem_v if not instrumental else None)
        if problem:
            failures.append(fmt.FailureRecord(str(folder), fmt.STAGE_PAIR, problem))
            continue
        if mixture is None:
            if instrumental or vocals:
                failures.append(
                    fmt.FailureRecord(
                        instrumental or vocals, fmt.STAGE_PAIR, f"no partner: {folder} has stems but no mixture.<ext>"
                    )
                )
            continue
        if instrumental is None and vocals is None:
            failures.append(
                fmt.FailureRecord(
                    mixture,
                    fmt.STAGE_PAIR,
                    f"no partner: {folder} has no {'/'.join(INSTRUMENTAL_NAMES)} or {'/'.join(VOCALS_NAMES)} stem",
                )
            )
            continue
        kind = fmt.TARGET_INSTRUMENTAL if instrumental else fmt.TARGET_RESIDUAL
        relative = folder.relative_to(root_path)
        candidates.append(
            Candidate(
                name=folder.name if relative.parts else root_path.name,
                layout=fmt.LAYOUT_STEMS,
                root=str(root_path),
                mixture=mixture,
                target=instrumental or vocals,
                target_kind=kind,
                album_hint="",  # a song folder is a song; its parent (train/, test/) is no album
            )
        )
    return candidates, failures


def _relative_stems(root: Path, outside: Path) -> tuple[dict[str, str], set[str], list[fmt.FailureRecord]]:
    """({relative path without extension (casefolded): absolute path} of the audio files under root,
    the keys held by several files, their failures); `outside` (nested in root) is not entered."""
    found: dict[str, list[str]] = defaultdict(list)
    for folder, files in _walk(root, (outside,)):
        for name in files:
            if _is_audio_name(name):
                relative = (folder / name).relative_to(root)
                found[str(relative.with_suffix("")).casefold()].append(str(folder / name))
    unique, ambiguous, failures = {}, set(), []
    for key, paths in found.items():
        if len(paths) > 1:
            ambiguous.add(key)
            names = ", ".join(Path(p).name for p in paths)
            for path in paths:
                failures.append(fmt.FailureRecord(path, fmt.STAGE_PAIR, f"ambiguous: {len(paths)} files ({names})"))
        else:
            unique[key] = paths[0]
    return unique, ambiguous, failures


def discover_parallel(mixtures: str, targets: str) -> tuple[list[Candidate], list[fmt.FailureRecord]]:
    """Files of `mixtures` matched with the files of `targets` by relative path without extension."""
    mix_root, target_root = Path(os.path.abspath(mixtures)), Path(os.path.abspath(targets))
    if os.path.realpath(mix_root) == os.path.realpath(target_root):
        raise ValueError(
            f"--mixtures and --targets are the same folder ({mixtures}): every file would pair with itself"
        )
    mix_files, mix_ambiguous, failures = _relative_stems(mix_root, target_root)
    target_files, target_ambiguous, target_failures = _relative_stems(target_root, mix_root)
    failures += target_failures
    candidates = []
    for key in sorted(mix_files):
        mixture = mix_files[key]
        target = target_files.get(key)
        if target is None:
            reason = (
                f"no partner: its instrumental is ambiguous (several files named {key}.* in {targets})"
                if key in target_ambiguous
                else f"no partner: no file named {key}.* in {targets}"
            )
            failures.append(fmt.FailureRecord(mixture, fmt.STAGE_PAIR, reason))
            continue
        parent = str(Path(mixture).relative_to(mix_root).parent)
        candidates.append(
            Candidate(
                name=Path(mixture).stem,
                layout=fmt.LAYOUT_PARALLEL,
                root=str(mix_root),
                mixture=mixture,
                target=target,
                target_kind=fmt.TARGET_INSTRUMENTAL,
                album_hint="" if parent == "." else parent,
            )
        )
    for key in sorted(set(target_files) - set(mix_files)):
        reason = (
            f"no partner: its mixture is ambiguous (several files named {key}.* in {mixtures})"
            if key in mix_ambiguous
            else f"no partner: no file named {key}.* in {mixtures}"
        )
        failures.append(fmt.FailureRecord(target_files[key], fmt.STAGE_PAIR, reason))
    return candidates, failures


__all__ = ["Candidate", "discover_stems", "discover_parallel", "MIXTURE_NAMES", "INSTRUMENTAL_NAMES", "VOCALS_NAMES"]
