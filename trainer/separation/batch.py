"""`trainer separate` over a collection: which files, under which names, what is skipped, and the summary.

Made for 500 albums and reruns: a folder is walked recursively and its tree mirrored under `--out`
(`--out/<folder>/<sub folders>/<name>_<stem>.<ext>`; a file given by itself goes to `--out`), so an
output's name is a function of the input's path alone, never of the other inputs or their order.
Two inputs that would write the same output (`x.flac` and `x.wav` in one folder with the default
`--filename`) both fail with a reason instead of one being renamed. A song whose outputs all exist is
skipped (a rerun after a kill does only what is left; `--overwrite` redoes it), one with only some of
them is a failure (never overwrite a file we did not just decide to write). Outputs are written under
temporary names and renamed when complete; temporaries of our own output names left by a killed run
are deleted before a folder is written to. `--out` inside an input folder is refused: the next run
would separate its own outputs. One run at a time writes into an `--out` (it holds a lock on the
folder itself for the run, leaving no file; a second run is refused at once with a one-line message).
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.durable import exclusive

DEFAULT_FILENAME = "{name}_{stem}.{ext}"
FILENAME_FIELDS = {
    "name": "the input's file name without its extension",
    "input_ext": "the input's extension (mp3, flac, ...)",
    "stem": "instrumental or vocals",
    "ext": "the output format's extension (flac, wav)",
}
STEM_CHOICES = {"instrumental": ("instrumental",), "vocals": ("vocals",), "both": ("instrumental", "vocals")}


def check_filename(template: str, stems: tuple[str, ...]) -> None:
    """ValueError naming --filename when the template cannot give every song and stem its own file."""
    try:
        fields = {f for _, f, spec, conv in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"--filename {template!r}: {exc}") from None
    unknown = sorted(fields - set(FILENAME_FIELDS))
    if unknown:
        raise ValueError(
            f"--filename {template!r}: unknown field {{{unknown[0]}}} (known: {', '.join(sorted(FILENAME_FIELDS))})"
        )
    if "name" not in fields:
        raise ValueError(f"--filename {template!r}: needs {{name}}, or every song would write the same file")
    if len(stems) > 1 and "stem" not in fields:
        raise ValueError(f"--filename {template!r}: needs {{stem}} with --stems both (two files per song)")
    parts = Path(template).parts
    if Path(template).is_absolute() or ".." in parts or not template.strip():
        raise ValueError(f"--filename {template!r}: must be a relative name inside --out (no '..')")


@dataclass
class Job:
    """One input file and the outputs it is to write, by stem."""

    source: str
    targets: dict[str, Path]


def walk(inputs: Iterable[str]) -> Iterator[tuple[str, Path]]:
    """(audio file, its output folder relative to --out) for every input: a file as given goes to
    --out itself, a folder's files to `<folder name>/<sub folders>`. Hidden entries are skipped."""
    from pipeline.ingest.sniff import AUDIO_EXTENSIONS

    for item in inputs:
        if not os.path.isdir(item):
            yield item, Path()
            continue
        top = Path(os.path.abspath(item)).name
        for folder, dirs, files in os.walk(item):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            relative = Path(top) / os.path.relpath(folder, item)
            for name in sorted(files):
                if name.rpartition(".")[2].lower() in AUDIO_EXTENSIONS and not name.startswith("."):
                    yield os.path.join(folder, name), Path(os.path.normpath(relative))


def check_out_dir(out_dir: str | os.PathLike, inputs: Iterable[str]) -> None:
    """ValueError naming --out when it cannot take the outputs: not a folder, not writable, or inside
    (or equal to) an input folder."""
    from pipeline.durable import check_writable

    out = os.path.realpath(out_dir)
    for item in inputs:
        if os.path.isdir(item):
            folder = os.path.realpath(item)
            if out == folder or out.startswith(folder.rstrip(os.sep) + os.sep):
                raise ValueError(
                    f"--out {out_dir} is inside the input folder {item}: a later run would separate its own "
                    "outputs; give a folder outside it"
                )
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir}: exists and is not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
        check_writable(out_dir)
    except OSError as exc:
        raise ValueError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None


def plan(
    inputs: list[str], out_dir: str | os.PathLike, template: str, stems: tuple[str, ...], ext: str
) -> tuple[list[Job], list[tuple[str, str]]]:
    """The jobs, and (input, reason) for the inputs that cannot be done: a missing input, or two
    inputs that would write the same file (both fail: no name may depend on the other inputs)."""
    jobs, failed = [], []
    for source, folder in walk(inputs):
        if not os.path.exists(source):
            failed.append((source, "no such file"))
            continue
        base, _, input_ext = Path(source).name.rpartition(".")
        name = base or input_ext  # a name without a dot has no extension
        fields = {"name": name, "input_ext": input_ext if base else ""}
        targets = {s: Path(out_dir) / folder / template.format(**fields, stem=s, ext=ext) for s in stems}
        jobs.append(Job(source, targets))
    owners: dict[Path, list[Job]] = {}
    for job in jobs:
        for target in job.targets.values():
            owners.setdefault(target, []).append(job)
    clashes = {id(j): target for target, js in owners.items() if len(js) > 1 for j in js}
    for job in jobs:
        if id(job) in clashes:
            target = clashes[id(job)]
            others = [j.source for j in owners[target] if j is not job]
            failed.append(
                (
                    job.source,
                    f"{others[0]} would also write {target}; add {{input_ext}} to --filename, "
                    'e.g. --filename "{name}.{input_ext}_{stem}.{ext}"',
                )
            )
    return [j for j in jobs if id(j) not in clashes], failed


def remove_stale_outputs(jobs: list[Job]) -> int:
    """Delete the temporaries of our own output names left by killed runs (a live writer's are kept)."""
    from pipeline.durable import remove_stale_temporaries

    by_folder: dict[Path, set[str]] = {}
    for job in jobs:
        for target in job.targets.values():
            by_folder.setdefault(target.parent, set()).add(target.stem)  # staged_path's temporaries keep no suffix
    return sum(
        remove_stale_temporaries(folder, only=names.__contains__)
        for folder, names in by_folder.items()
        if folder.is_dir()
    )


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cleaned: int = 0

    def line(self) -> str:
        parts = [f"{len(self.done)} done", f"{len(self.skipped)} skipped (outputs exist; --overwrite redoes them)"]
        parts.append(f"{len(self.failed)} failed")
        if self.cleaned:
            parts.append(f"{self.cleaned} unfinished files of a killed run removed")
        return "separated: " + ", ".join(parts)


def run_jobs(
    jobs: list[Job],
    failed: list[tuple[str, str]],
    separate_one: Callable[[Job, str], list[str]],
    overwrite: bool = False,
) -> Summary:
    """Run `separate_one(job, label)` (it returns warnings) for every job not skipped; a job that
    raises a reading or writing error is a failure with its reason, and the others go on."""
    from pipeline.audio.decode import DecodeError
    from pipeline.ingest.probe import ProbeError

    summary = Summary(failed=list(failed), cleaned=remove_stale_outputs(jobs))
    for index, job in enumerate(jobs):
        existing = [t for t in job.targets.values() if t.exists()]
        if existing and not overwrite:
            if len(existing) == len(job.targets):
                summary.skipped.append(job.source)
            else:
                missing = next(t for t in job.targets.values() if not t.exists())
                summary.failed.append(
                    (job.source, f"{existing[0]} exists but {missing} does not (--overwrite redoes the song)")
                )
            continue
        try:
            for target in job.targets.values():
                target.parent.mkdir(parents=True, exist_ok=True)
            summary.warnings += separate_one(job, f"[{index + 1}/{len(jobs)}] {Path(job.source).name}")
        except FileNotFoundError:
            summary.failed.append((job.source, "no such file"))
        except (DecodeError, ProbeError, OSError, RuntimeError, ValueError) as exc:
            message = " ".join(str(exc).split())
            summary.failed.append((job.source, message.removeprefix(f"{job.source}: ")))
        else:
            summary.done.append(job.source)
    return summary


def separate_inputs(
    inputs: list[str],
    checkpoints: list[str],
    out_dir: str | os.PathLike,
    *,
    stems: str = "both",
    template: str = DEFAULT_FILENAME,
    output_format: str = "flac",
    bit_depth: str | None = None,
    overwrite: bool = False,
    device: str = "auto",
    batch_size: int | None = None,
    window_frames: int | None = None,
    overlap: float | None = None,
    tta: bool = False,
    progress: bool | None = None,
) -> Summary:
    """`trainer separate`: every option is checked (ValueError naming it) before a model is loaded
    or a file written; then every input is done, skipped or failed with its reason."""
    import sys

    from trainer.separation.ensemble import load_ensemble
    from trainer.separation.separate import output_subtype, write_stems

    chosen = STEM_CHOICES[stems]
    check_filename(template, chosen)
    subtype = output_subtype(output_format, bit_depth)
    check_out_dir(out_dir, inputs)
    busy = f"--out {out_dir}: another trainer separate is writing there; wait for it to end or choose another --out"
    # a second run would delete the first's temporaries as a killed run's and race it for the same names
    with exclusive(out_dir, busy):  # the folder itself: no lock file among the user's outputs
        ensemble = load_ensemble(checkpoints, device, batch_size, window_frames, overlap, tta)
        jobs, failed = plan(inputs, out_dir, template, chosen, output_format)
        if not jobs and not failed:
            failed.append((", ".join(inputs), "no audio files"))
        show = sys.stderr.isatty() if progress is None else progress
        write = lambda job, label: write_stems(ensemble, job.source, job.targets, subtype, show, label)  # noqa: E731
        return run_jobs(jobs, failed, write, overwrite)


__all__ = [
    "separate_inputs",
    "DEFAULT_FILENAME",
    "FILENAME_FIELDS",
    "STEM_CHOICES",
    "Job",
    "Summary",
    "check_filename",
    "check_out_dir",
    "plan",
    "remove_stale_outputs",
    "run_jobs",
    "walk",
]
