"""What a rerun of `pipeline shard` keeps: the units whose shard is proven finished (state as planned,
size and sha256 as recorded, inputs unchanged), and the files in the output folder that no finished
unit of the plan accounts for, which go before anything is written."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import format as fmt
from pipeline.shard.plan import Plan, ShardOptions, Unit
from pipeline.shard.write import STATE_DIR, UnitResult, file_changed, read_state, recorded_files, write_state


def finished_units(
    out: Path, plan: Plan, options: ShardOptions, workers: int | None = None, progress: bool = False
) -> tuple[dict[str, UnitResult], list[Unit]]:
    """Finished units (state, size, checksum and inputs as planned) and the units to (re)do."""
    candidates: dict[str, UnitResult] = {}
    for unit in plan.units:
        state = read_state(out, unit.name)
        shard = out / unit.name
        if (
            state is not None
            and state.fingerprint == unit.fingerprint(options)
            and shard.is_file()
            and shard.stat().st_size == state.filesize
            and not any(os.path.exists(path) for path in state.missing)
            and not _changed_back(unit, state)
        ):
            candidates[unit.name] = state
    # Reading every finished shard again costs a pass over the output (threads: hashlib releases
    # the GIL), and is what catches a flipped bit that keeps the size.
    from tqdm import tqdm

    total = sum(state.filesize for state in candidates.values())
    with (
        ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool,
        tqdm(total=total / 1e9, unit="GB", desc="check finished shards", disable=not (progress and total)) as bar,
    ):
        digests = {}
        for name, digest in zip(candidates, pool.map(fmt.file_sha256, (out / name for name in candidates))):
            digests[name] = digest
            bar.update(candidates[name].filesize / 1e9)
    done: dict[str, UnitResult] = {}
    for name, state in candidates.items():
        if not state.sha256:  # a state from before checksums: the size matched, adopt the file's
            state.sha256 = digests[name]
            write_state(out, state)
        if digests[name] == state.sha256:
            done[name] = state
    return done, [u for u in plan.units if u.name not in done]


def _changed_back(unit: Unit, state: UnitResult) -> bool:
    """Whether a file the unit refused as changed since ingest matches its manifest record again."""
    records = {path: (size, mtime) for track in unit.tracks for path, size, mtime in recorded_files(track)}
    return any(
        path in records and os.path.exists(path) and file_changed(path, *records[path]) is None
        for path in state.changed
    )


def stale_files(out: Path, plan: Plan, done: dict[str, UnitResult]) -> list[Path]:
    """Shards, states and indexes not proven to belong to this plan's finished units: they go, so a
    killed run never leaves an old file that could pass for a new one."""
    stale = [p for p in out.iterdir() if fmt.is_shard_name(p.name) and p.name not in done]
    stale += [
        p for p in (out / STATE_DIR).iterdir() if p.name.endswith(".tar.json") and p.name[: -len(".json")] not in done
    ]
    complete = len(done) == len(plan.units)
    wanted = set(plan.splits())
    stale += [
        out / fmt.index_name(split)
        for split in set(fmt.SPLITS) | wanted
        if (out / fmt.index_name(split)).exists()
        and (split not in wanted or not (complete or _lists_only_finished(out / fmt.index_name(split), done)))
    ]
    return stale


def _lists_only_finished(index_path: Path, done: dict[str, UnitResult]) -> bool:
    """Whether an index lists nothing but this plan's finished shards, exactly as they are (the
    index of the set an --append extends): it may stay until the new one replaces it."""
    try:
        index = fmt.read_index(index_path)
    except ValueError:
        return False
    return bool(index.shardlist) and all(
        entry.url in done
        and (done[entry.url].filesize, done[entry.url].sha256, done[entry.url].nsamples)
        == (entry.filesize, entry.sha256, entry.nsamples)
        for entry in index.shardlist
    )
