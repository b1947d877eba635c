"""Run a shard plan: resume bookkeeping, disk preflight, joblib or Dask execution, failures, index.

State lives in `OUT/.state/`: `plan.json` (the plan the folder is being built from), one
`{shard}.json` per finished unit (written by the unit just before its tar is renamed into place),
and `lock`. A unit is finished when its state matches the plan, its tar has the recorded size and
sha256, none of the files it could not find (a drive unplugged mid-run) is back and none of the files
it refused as changed since ingest matches the manifest again; everything else is redone from
scratch, which is exact because units are deterministic. The index `{split}.json` is written
last, atomically; it only ever lists finished shards, and lists all of the split once a run completes
(during `--append` the previous index stays, so training can go on from the shards it lists).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import codec
from pipeline import format as fmt
from pipeline.durable import FolderBusy, check_writable, exclusive, fsync_dir, write_text
from pipeline.shard.append import extend_plan
from pipeline.shard.faults import fault_point
from pipeline.shard.outdir import ForeignFiles, check_indexes, claim, remove_own_temporaries
from pipeline.shard.plan import Plan, PlanRecord, ShardOptions, Unit, describe_changes, make_plan, plan_record
from pipeline.shard.resume import finished_units, stale_files
from pipeline.shard.write import (
    STATE_DIR,
    UnitResult,
    write_unit,
)

PLAN_FILE = "plan.json"


class ShardError(Exception):
    """A refusal or a bad input, with a one-line message for the user."""


@dataclass
class ShardSummary:
    shards: int = 0
    reused: int = 0  # finished units found on disk and kept
    written: int = 0
    samples: int = 0
    failures: int = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)  # split -> shard count
    split_samples: dict[str, int] = field(default_factory=dict)  # split -> samples in its shards
    empty_shards: int = 0  # shards that hold no sample (every track of theirs failed)

    def empty_splits(self) -> list[str]:
        """Splits whose shards hold no sample at all: nothing to train or validate on."""
        return [split for split, samples in self.split_samples.items() if samples == 0]


def run_shard(
    manifests: str | os.PathLike,
    out: str | os.PathLike,
    options: ShardOptions,
    workers: int | None = None,
    scheduler: str | None = None,
    force: bool = False,
    progress: bool = True,
    append: bool = False,
) -> ShardSummary:
    """Build (or finish building) the shard set of `manifests` in `out`; with `append`, add the
    manifest's new tracks to it in new shards (pipeline/shard/append.py)."""
    if append and force:
        raise ShardError("--append keeps the existing shards and --force rebuilds them: choose one")
    started = time.monotonic()
    manifests, out = Path(manifests), Path(out)
    if options.pairs:
        tracks_file, read, making = manifests / fmt.PAIRS_FILE, fmt.read_pairs, "pipeline pairs ROOT..."
    else:
        tracks_file, read, making = manifests / fmt.TRACKS_FILE, fmt.read_tracks, "pipeline ingest ROOT..."
    if not tracks_file.is_file():
        raise ShardError(f"{tracks_file}: no manifest (run `{making}` first)")
    try:
        tracks = read(manifests)  # its errors name the file and line
    except ValueError as exc:
        raise ShardError(str(exc)) from exc
    try:
        plan = make_plan(tracks, options)
    except ValueError as exc:
        raise ShardError(f"{tracks_file}: {exc}") from exc
    # Decode failures are merged into it at the end: refuse a damaged one, or a folder that cannot take it, now.
    _read_failures(manifests, _failures_file(options))
    _check_manifests_writable(manifests, _failures_file(options))
    with _owned_and_locked(out, plan.splits()):
        stored = _stored_plan(out, force)
        if stored is not None and not force and (append or stored.get("appends")):
            plan = _appended_plan(out, stored, tracks, options, plan, append)
        _check_plan(out, plan, stored, force, extends=append)
        remove_own_temporaries(out, STATE_DIR, plan.splits())
        done, pending = finished_units(out, plan, options, workers, progress)
        stale = stale_files(out, plan, done)
        preflight(out, pending, reclaimable=sum(p.stat().st_size for p in stale))
        for path in stale:
            path.unlink(missing_ok=True)
        fsync_dir(out)
        write_text(out / STATE_DIR / PLAN_FILE, json.dumps(plan_record(plan), sort_keys=True))
        results = dict(done)
        for result in _execute(pending, out, options, workers, scheduler, plan, done, progress):
            results[result.name] = result
            if result.failures:
                _merge_failures(manifests, plan, results.values())
        _merge_failures(manifests, plan, results.values())
        fault_point("index")
        _write_indexes(out, plan, results)
    summary = ShardSummary(
        shards=len(plan.units), reused=len(done), written=len(pending), wall_seconds=time.monotonic() - started
    )
    for unit in plan.units:
        result = results[unit.name]
        summary.samples += result.nsamples
        summary.failures += len(result.failures)
        summary.seconds += result.seconds
        summary.splits[unit.split] = summary.splits.get(unit.split, 0) + 1
        summary.split_samples[unit.split] = summary.split_samples.get(unit.split, 0) + result.nsamples
        summary.empty_shards += result.nsamples == 0
    return summary


def _failures_file(options: ShardOptions) -> str:
    return fmt.PAIR_FAILURES_FILE if options.pairs else fmt.FAILURES_FILE


def preflight(out: Path, pending: list[Unit], reclaimable: int = 0) -> None:
    """Refuse before writing or deleting anything when the estimated output does not fit.

    `reclaimable`: bytes of outdated shards this run would delete first; they count as free.
    """
    needed = sum(u.est_bytes for u in pending)
    free = shutil.disk_usage(out).free + reclaimable
    if needed > free:
        counting = f", counting {reclaimable} bytes of outdated shards" if reclaimable else ""
        raise ShardError(
            f"{out}: not enough space for {len(pending)} shards: needs about {needed / 1e9:.2f} GB "
            f"({needed} bytes), {free / 1e9:.2f} GB ({free} bytes) free{counting}; "
            "free space or choose another --out"
        )


@contextmanager
def _owned_and_locked(out: Path, splits: list[str]):
    """Claim `out` (outdir.py: refused when it holds files this tool did not write under its names),
    then hold its lock for the block."""
    try:
        claim(out, STATE_DIR, splits)
        with exclusive(out / STATE_DIR / "lock", f"{out}: another `pipeline shard` is writing here"):
            check_indexes(out, splits)  # again, now that no other run can write here
            yield
    except (FolderBusy, ForeignFiles) as exc:
        raise ShardError(str(exc)) from exc


def _stored_plan(out: Path, force: bool) -> dict | None:
    """`.state/plan.json`, or None when there is none (or it is unreadable and `force` rebuilds)."""
    path = out / STATE_DIR / PLAN_FILE
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        fmt.record_from_dict(PlanRecord, old, where=PLAN_FILE)
    except (OSError, ValueError) as exc:
        if force:
            return None
        raise ShardError(f"{path}: unreadable plan state ({exc}); use --force to rebuild") from exc
    return old


def _appended_plan(out: Path, stored: dict, tracks: list, options: ShardOptions, fresh: Plan, append: bool) -> Plan:
    """With --append: the stored plan extended by the new tracks. Without it, a set built by appends
    keeps its layout while the manifest is unchanged (a rerun resumes it); any change is refused."""
    if not append and (stored["tracks"] != fresh.tracks or stored["options"] != options.to_dict()):
        return fresh  # _check_plan explains the change
    try:
        return extend_plan(stored, tracks, options)
    except ValueError as exc:
        raise ShardError(f"{out}: cannot append: {exc}") from exc


def _check_plan(out: Path, plan: Plan, old: dict | None, force: bool, extends: bool = False) -> None:
    """Refuse a plan other than the stored one, unless `force`, or `extends` (an append, which
    extend_plan has already checked against it)."""
    if old is None:
        stray = sorted(p.name for p in out.iterdir() if fmt.is_shard_name(p.name))
        if stray and not force:
            raise ShardError(
                f"{out}: holds shards ({stray[0]}, ...) of unknown origin; "
                "use --force to replace them or choose another --out"
            )
        return
    if old.get("fingerprint") != plan.fingerprint and not (force or extends):
        added_only = old["options"] == plan.options.to_dict() and set(old["tracks"].items()) <= set(plan.tracks.items())
        hint = (
            "rerun with --append to shard the new tracks into new shards after the existing ones (kept byte for "
            "byte), or --force to rebuild and re-interleave everything"
            if added_only
            else "rerun with --force to rebuild (shards that still match are kept)"
        )
        stored_encoding = old["options"].get("encoding", codec.FLOAT16)
        if stored_encoding != plan.options.encoding:  # e.g. a set begun before the default became log8-zstd
            hint += f", or with --encoding {stored_encoding} to go on in the encoding the set has"
        raise ShardError(f"{out} was built from a different plan ({describe_changes(old, plan)}); {hint}")


def _check_manifests_writable(manifests: Path, failures_file: str) -> None:
    """Decode failures are merged into failures.jsonl under the manifests' lock at the end: a folder
    where neither can be written is refused now, before hours of shards, not after them."""
    try:
        try:
            with exclusive(manifests / fmt.MANIFESTS_LOCK, ""):
                pass
        except FolderBusy:
            pass  # held (by an ingest or another shard run): it can be locked, which is all we ask
        check_writable(manifests)
    except OSError as exc:
        raise ShardError(
            f"{exc.filename or manifests}: cannot write ({exc.strerror or exc}); `pipeline shard` records "
            f"decode failures in {manifests / failures_file}: make the folder writable, then rerun"
        ) from exc


def _execute(
    pending: list[Unit],
    out: Path,
    options: ShardOptions,
    workers: int | None,
    scheduler: str | None,
    plan: Plan,
    done: dict[str, UnitResult],
    progress: bool,
):
    """Yield unit results as units finish, locally with joblib or on a Dask cluster."""
    if not pending:
        return
    from joblib import Parallel, delayed, parallel_config

    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a malformed address
            raise ShardError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from exc
        backend, n_jobs = parallel_config(backend="dask"), -1
    else:
        client = None
        backend, n_jobs = nullcontext(), (workers or -1)
    bar = _AudioProgress(
        total_seconds=plan.seconds, enabled=progress, done_seconds=sum(u.seconds for u in plan.units if u.name in done)
    )
    try:
        with backend:
            # Largest units first keeps the slowest shard from starting last.
            order = sorted(pending, key=lambda u: -u.est_bytes)
            seconds = {u.name: u.seconds for u in order}
            jobs = (delayed(write_unit)(unit, out, options) for unit in order)
            for result in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
                bar.advance(seconds[result.name])
                yield result
            bar.complete()
    finally:
        bar.close()
        if client is not None:
            client.close()
        else:
            _stop_local_workers()


def _stop_local_workers() -> None:
    """Idle loky workers exit slowly at interpreter exit (each tears down torch): kill them now.

    Goes through loky's module-level executor because `get_reusable_executor()` would first
    resize (respawn) it to its default worker count.
    """
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, kill_workers=True)


class _AudioProgress:
    """tqdm in hours of audio, with the speed as a multiple of realtime (of this run's work)."""

    def __init__(self, total_seconds: float, done_seconds: float, enabled: bool):
        from tqdm import tqdm

        self._bar = tqdm(
            total=total_seconds / 3600,
            initial=done_seconds / 3600,
            unit="h",
            disable=not enabled,
            desc="shard",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} h audio [{elapsed}<{remaining}{postfix}]",
        )
        self._started = time.monotonic()
        self._seconds = 0.0

    def advance(self, seconds: float) -> None:
        self._seconds += seconds
        self._bar.set_postfix_str(
            f"{self._seconds / max(1e-9, time.monotonic() - self._started):.1f}x realtime", refresh=False
        )
        self._bar.update(seconds / 3600)

    def complete(self) -> None:
        """Show exactly 100%: summed float hours can end a hair short of the total."""
        self._bar.n = self._bar.total
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _merge_failures(manifests: Path, plan: Plan, results) -> None:
    """failures.jsonl = other stages' records + this plan's decode failures (old ones for the plan's
    tracks are replaced, since a fixed file must stop being reported)."""
    name = _failures_file(plan.options)
    planned = {t.path for u in plan.units for t in u.tracks}
    if plan.options.pairs:
        planned |= {t.target_path for u in plan.units for t in u.tracks}
    ours = {(f["path"], f["stage"]): fmt.record_from_dict(fmt.FailureRecord, f) for r in results for f in r.failures}
    # `pipeline ingest` rewrites failures.jsonl too: wait for it rather than lose either's lines.
    with exclusive(manifests / fmt.MANIFESTS_LOCK, "", wait=True):
        existing = _read_failures(manifests, name)
        kept = [
            f
            for f in existing
            if not (f.stage in fmt.SHARD_STAGES and f.path in planned) and (f.path, f.stage) not in ours
        ]
        merged = kept + sorted(ours.values(), key=lambda f: (f.path, f.stage))
        if merged != existing:
            fmt.write_jsonl(manifests / name, merged)


def _read_failures(manifests: Path, name: str) -> list[fmt.FailureRecord]:
    try:
        return fmt.read_failures(manifests, name)
    except ValueError as exc:
        # fmt names the file and line of a bad record; a decoding error names neither.
        problem = f"{manifests / name}: not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc
        writer = "pipeline pairs" if name == fmt.PAIR_FAILURES_FILE else "pipeline ingest"
        raise ShardError(
            f"{problem}; repair or delete it (`{writer}` rewrites the file), then rerun: finished shards are kept"
        ) from exc


def _write_indexes(out: Path, plan: Plan, results: dict[str, UnitResult]) -> None:
    for split in plan.splits():
        units = [u for u in plan.units if u.split == split]
        states = [results[u.name] for u in units]
        index = fmt.ShardIndex(
            split=split,
            shardlist=[fmt.ShardEntry(s.name, s.nsamples, s.filesize, s.sha256) for s in states],
            stft=plan.options.stft.to_dict(),
            clip_frames=plan.options.clip_frames,
            sample_kind=plan.options.sample_kind,
            encoding=plan.options.encoding,
            totals={
                "samples": sum(s.nsamples for s in states),
                "tracks": sum(s.tracks for s in states),
                "seconds": round(sum(s.seconds for s in states), 3),
                "bytes": sum(s.filesize for s in states),
            },
        )
        fmt.write_index(out / fmt.index_name(split), index)


__all__ = ["run_shard", "preflight", "ShardError", "ShardSummary", "PLAN_FILE"]
