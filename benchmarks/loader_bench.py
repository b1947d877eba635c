"""Loader throughput vs raw sequential read of the same shards, cold and warm, in one run.

Writes ~2 GB of shards with realistic samples ([2, 1024, 1024] float16 = 4 MiB each) under a
temporary directory (never in git), then measures, in several alternating repetitions:

  cold  a fresh copy of the shards, written through a user-space buffer (new blocks on the disk,
        no shared extents), fsynced and evicted from the page cache (posix_fadvise(DONTNEED), no
        root needed), so that no cache inside this machine holds it. On this VM that is not
        always the disk itself: an evicted file, and often a fresh copy too, reads back at
        1.5-3.7 GB/s from the host's cache under the virtual disk, against 0.3-0.5 GB/s for data
        the host has not cached (see benchmarks/README.md). Each cold pass gets its own copy,
        deleted afterwards.
        This is the reference the goal is judged on: a collection of a terabyte never sits in a
        page cache, so training streams it from the disk, and the question is whether the loader
        keeps up with the disk. The loader resamples shards with replacement, so a shard drawn a
        second time in the same pass would come from the page cache: the cold pass reads only
        about 70% of the stored samples (--cold-batches), and the share of samples delivered for
        the first time in the pass is reported.
  warm  the original shards after a `cat` that pulls them into the page cache: the CPU-bound
        ceiling of the loader, against a `cat` at memory bandwidth.

  raw     `cat` of every shard to /dev/null (one sequential pass).
  loader  trainer.data.train_loader, 2 workers, batch 8, crop 512. Samples/s over the batches
          after the first (which waits for worker start-up and the shuffle buffers to fill).
  floor   (warm only) the same DataLoader set-up handing over batches of the same shape that
          are only allocated and filled (HandOverFloor): the loader's ceiling on this machine.

The goal is loader samples/s >= 0.6 x raw samples/s (raw bytes/s / stored bytes per sample).
On a shared machine wall-clock rates swing with the neighbours' load, so the CPU time spent per
sample is reported as well: user + sys of cat, or of the loader's main process and workers over
the same steady-state interval as its samples/s.

`--compare FILE` runs a second version of trainer/data/loader.py (e.g. `git show HEAD~1:trainer/data/loader.py
> /tmp/data_before.py`) in every repetition next to the current one: an A/B in the same run.

    .venv/bin/python benchmarks/loader_bench.py [--gigabytes 2.0] [--reps 3] [--keep DIR] [--compare FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.format import (
    DEFAULT_CLIP_FRAMES,
    SPEC_DTYPE,
    SampleMeta,
    ShardEntry,
    ShardIndex,
    STFTParams,
    encode_meta,
    encode_spec,
    index_name,
    read_index,
    sample_key,
    shard_name,
    write_index,
)

COPY_CHUNK_BYTES = 8 << 20
FLOOR = "hand-over floor"

BINS = STFTParams().bins
SAMPLE_BYTES = 2 * BINS * DEFAULT_CLIP_FRAMES * np.dtype(SPEC_DTYPE).itemsize
DISTINCT_SPECTRA = 8  # content does not matter for throughput; generating random float16 does take time


def write_bench_shards(root: Path, gigabytes: float, shards: int = 4) -> list[Path]:
    rng = np.random.default_rng(0)
    spectra = [
        encode_spec(rng.random((2, BINS, DEFAULT_CLIP_FRAMES), dtype=np.float32).astype(SPEC_DTYPE))
        for _ in range(DISTINCT_SPECTRA)
    ]
    total = max(shards, int(gigabytes * 1e9 // SAMPLE_BYTES))
    per_shard = total // shards
    entries, paths = [], []
    for number in range(shards):
        path = root / shard_name("train", number)
        with wds.TarWriter(str(path)) as writer:
            for i in range(per_shard):
                track_id = f"bench{number:02d}{i // 10:04d}"
                meta = SampleMeta(
                    track_id=track_id,
                    clip=i % 10,
                    start_frame=(i % 10) * DEFAULT_CLIP_FRAMES,
                    valid_frames=DEFAULT_CLIP_FRAMES,
                    album_key=track_id,
                )
                writer.write(
                    {
                        "__key__": sample_key(track_id, i % 10),
                        "spec.npy": spectra[i % DISTINCT_SPECTRA],
                        "json": encode_meta(meta),
                    }
                )
        entries.append(ShardEntry(url=path.name, nsamples=per_shard, filesize=path.stat().st_size))
        paths.append(path)
    write_index(
        root / index_name("train"),
        ShardIndex(
            split="train",
            shardlist=entries,
            stft=STFTParams().to_dict(),
            clip_frames=DEFAULT_CLIP_FRAMES,
            totals={"samples": per_shard * shards, "bytes": sum(e.filesize for e in entries)},
        ),
    )
    return paths


def children_cpu_seconds() -> float:
    """User + sys time of the children of this process that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from this machine's page cache."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@contextlib.contextmanager
def cold_copy(root: Path) -> Iterator[Path]:
    """A copy of the shard directory that no cache below or inside this machine has seen."""
    copy = Path(tempfile.mkdtemp(prefix="cold-", dir=root.parent))
    try:
        for source in sorted(root.iterdir()):
            with open(source, "rb") as reader, open(copy / source.name, "wb") as writer:
                while chunk := reader.read(COPY_CHUNK_BYTES):
                    writer.write(chunk)
        evict(sorted(copy.iterdir()))
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@dataclass
class Pass:
    samples_per_s: float
    cpu_ms_per_sample: float
    first_read_share: float = 1.0  # samples delivered for the first time in this pass


def time_cat(root: Path, samples_stored: int) -> Pass:
    paths = sorted(root.glob("train-*.tar"))
    cpu, start = children_cpu_seconds(), time.perf_counter()
    subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    return Pass(samples_stored / wall, (children_cpu_seconds() - cpu) / samples_stored * 1e3)


def loader_processes_cpu_seconds() -> float:
    """User + sys time so far of this process and of its live children (the loader's workers)."""
    me = os.getpid()
    pids = [me]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if _stat_fields(entry.name)[1] == str(me):
                    pids.append(int(entry.name))
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _stat_fields(pid) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, ..., utime (index 11), stime (12)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def time_loader(data, root: Path, batches: int, args: argparse.Namespace) -> Pass:
    """Samples/s and CPU per sample over the batches after the first (steady state: start-up and
    the shuffle buffers' fill are left out of both)."""
    iterator = iter(
        data.train_loader(
            str(root),
            batch_size=args.batch_size,
            crop_frames=args.crop,
            num_workers=args.workers,
            seed=0,
            dtype=args.dtype,
        )
    )
    next(iterator)
    cpu, first = loader_processes_cpu_seconds(), time.perf_counter()
    keys = []
    for _ in range(batches - 1):
        batch = next(iterator)
        assert batch["spec"].shape[-1] == args.crop and batch["spec"].dtype == args.dtype
        keys += batch["key"]
    end, cpu = time.perf_counter(), loader_processes_cpu_seconds() - cpu
    del iterator, batch
    return Pass(len(keys) / (end - first), cpu / len(keys) * 1e3, len(set(keys)) / len(keys))


class HandOverFloor(IterableDataset):
    """Batches of the loader's shape and dtype, allocated in shared memory by the loader's own
    function and written once, reading nothing: what handing batches from DataLoader workers to
    the main process costs by itself (fresh shared pages: allocate, fault in, pass the file
    descriptor, map, free), however cheap the cropping and normalising become."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype):
        super().__init__()
        self.shape, self.dtype = shape, dtype

    def __iter__(self):
        from trainer.data.crops import _empty_batch

        worker = get_worker_info().id if get_worker_info() is not None else 0
        for number in itertools.count():
            spec = _empty_batch(self.shape, self.dtype)
            spec.fill_(0.5)
            yield {
                "spec": spec,
                "group": torch.arange(self.shape[0]),
                "key": [f"{worker}_{number}_{row}" for row in range(self.shape[0])],
            }


class HandOverFloorLoader:
    """Stands in for trainer.data in the runs below."""

    @staticmethod
    def train_loader(
        src, *, batch_size: int, crop_frames: int, num_workers: int, seed: int, dtype: torch.dtype
    ) -> DataLoader:
        return DataLoader(
            HandOverFloor((batch_size, 2, BINS, crop_frames), dtype),
            batch_size=None,
            num_workers=num_workers,
            prefetch_factor=2 if num_workers else None,
        )


def load_data_module(path: Path) -> ModuleType:
    """Another version of trainer/data/loader.py, importable side by side with the current one (workers fork)."""
    spec = importlib.util.spec_from_file_location(f"loader_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(mode: str, root: Path, data, samples_stored: int, args: argparse.Namespace) -> Pass:
    if mode == "cold":
        with cold_copy(root) as copy:
            return time_cat(copy, samples_stored) if data is None else time_loader(data, copy, args.cold_batches, args)
    time_cat(root, samples_stored)  # pull everything into the page cache
    return time_cat(root, samples_stored) if data is None else time_loader(data, root, args.warm_batches, args)


def median_and_each(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({', '.join(f'{v:{fmt}}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0, help="shards to write (about 250 MB each)")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of every measurement")
    parser.add_argument("--cold-batches", type=int, default=20, help="batches per cold loader pass")
    parser.add_argument("--warm-batches", type=int, default=60, help="batches per warm loader pass")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--modes", default="cold,warm", help="comma-separated: cold, warm")
    parser.add_argument("--compare", type=Path, help="another trainer/data/loader.py to run next to the current one")
    parser.add_argument("--keep", type=Path, help="write (or reuse) the shards here and keep them")
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    modes = args.modes.split(",")

    import trainer.data

    loaders = {"loader": trainer.data}
    if args.compare:
        loaders[f"loader ({args.compare.name})"] = load_data_module(args.compare)
    if "warm" in modes:
        loaders[FLOOR] = HandOverFloorLoader

    root = args.keep or Path(tempfile.mkdtemp(prefix="loader-bench-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        paths = sorted(root.glob("train-*.tar"))
        if not paths:
            t0 = time.perf_counter()
            paths = write_bench_shards(root, args.gigabytes, shards=max(4, round(args.gigabytes * 4)))
            print(f"wrote {len(paths)} shards in {time.perf_counter() - t0:.1f}s to {root}", file=sys.stderr)
        total_bytes = sum(p.stat().st_size for p in paths)
        samples_stored = sum(entry.nsamples for entry in read_index(root / index_name("train")).shardlist)
        stored_sample_bytes = total_bytes / samples_stored  # tar headers and json included
        print(
            f"shards: {len(paths)} files, {total_bytes / 1e9:.2f} GB, {samples_stored} samples of "
            f"{stored_sample_bytes / 2**20:.2f} MiB stored; loader: {args.workers} workers, batch {args.batch_size}, "
            f"crop {args.crop}, {args.dtype}; load average {os.getloadavg()[0]:.1f}"
        )

        results: dict[tuple[str, str], list[Pass]] = {}
        for rep in range(args.reps):
            for mode in modes:
                runs = [
                    ("cat", None),
                    *((name, data) for name, data in loaders.items() if not (name == FLOOR and mode == "cold")),
                ]
                if rep % 2:
                    runs.reverse()
                for name, data in runs:
                    result = measure(mode, root, data, samples_stored, args)
                    results.setdefault((mode, name), []).append(result)
                    print(
                        f"rep {rep + 1} {mode:4s} {name:28s} {result.samples_per_s:6.0f} samples/s "
                        f"{result.samples_per_s * stored_sample_bytes / 1e9:5.2f} GB/s "
                        f"{result.cpu_ms_per_sample:5.2f} CPU ms/sample, first reads {result.first_read_share:.0%}",
                        flush=True,
                    )

        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        print(
            "| mode | reader | samples/s, median (each rep) | GB/s | ratio to cat, median (each rep) "
            "| CPU ms/sample | first reads |"
        )
        print("|---|---|---|---|---|---|---|")
        for mode in modes:
            cat = results[(mode, "cat")]
            for name in ["cat", *loaders]:
                if (mode, name) not in results:
                    continue
                runs = results[(mode, name)]
                rate = statistics.median(r.samples_per_s for r in runs)
                ratios = [r.samples_per_s / c.samples_per_s for r, c in zip(runs, cat)]
                print(
                    f"| {mode} | {name} | {median_and_each([r.samples_per_s for r in runs], '.0f')} "
                    f"| {rate * stored_sample_bytes / 1e9:.2f} | {median_and_each(ratios, '.2f')} "
                    f"| {median_and_each([r.cpu_ms_per_sample for r in runs], '.2f')} "
                    f"| {statistics.median(r.first_read_share for r in runs):.0%} |"
                )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
