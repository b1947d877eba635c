"""Loader throughput vs raw sequential read of the same shards.

Writes ~1 GB of shards with realistic samples ([2, 1024, 1024] float16 = 4 MiB each) under a
temporary directory (never in git), then in one run measures:

  raw     `cat` of every shard to /dev/null, twice; the second (page-cache warm) read counts
  loader  trainer.data.train_loader, 2 workers, batch 8, crop 512; also twice, the second counts.
          Samples/s over the batches after the first (which waits for worker start-up and the
          shuffle buffer to fill); the wall time including start-up is reported too.

The goal is loader samples/s >= 0.6 x raw samples/s (raw bytes/s / stored bytes per sample).
On a shared machine wall-clock rates swing with the neighbours' load, so the CPU time spent per
sample (user + sys of every process involved: cat, or the loader's main process and workers,
start-up and shuffle-buffer fill included) is reported as well; its ratio is the steadier number.

    .venv/bin/python benchmarks/loader_bench.py [--gigabytes 1.0] [--batches 120] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from pipeline.format import (
    DEFAULT_CLIP_FRAMES,
    SPEC_DTYPE,
    STFTParams,
    SampleMeta,
    ShardEntry,
    ShardIndex,
    encode_meta,
    encode_spec,
    index_name,
    sample_key,
    shard_name,
    write_index_atomic,
)

BINS = STFTParams().bins
SAMPLE_BYTES = 2 * BINS * DEFAULT_CLIP_FRAMES * np.dtype(SPEC_DTYPE).itemsize
DISTINCT_SPECTRA = 8  # content does not matter for throughput; generating random float16 does take time


def write_bench_shards(root: Path, gigabytes: float, shards: int = 4) -> list[Path]:
    rng = np.random.default_rng(0)
    spectra = [encode_spec(rng.random((2, BINS, DEFAULT_CLIP_FRAMES), dtype=np.float32).astype(SPEC_DTYPE))
               for _ in range(DISTINCT_SPECTRA)]
    total = max(shards, int(gigabytes * 1e9 // SAMPLE_BYTES))
    per_shard = total // shards
    entries, paths = [], []
    for number in range(shards):
        path = root / shard_name("train", number)
        with wds.TarWriter(str(path)) as writer:
            for i in range(per_shard):
                track_id = f"bench{number:02d}{i // 10:04d}"
                meta = SampleMeta(track_id=track_id, clip=i % 10, start_frame=(i % 10) * DEFAULT_CLIP_FRAMES,
                                  valid_frames=DEFAULT_CLIP_FRAMES, album_key=track_id)
                writer.write({"__key__": sample_key(track_id, i % 10), "spec.npy": spectra[i % DISTINCT_SPECTRA],
                              "json": encode_meta(meta)})
        entries.append(ShardEntry(url=path.name, nsamples=per_shard, filesize=path.stat().st_size))
        paths.append(path)
    write_index_atomic(root / index_name("train"), ShardIndex(
        split="train", shardlist=entries, stft=STFTParams().to_dict(), clip_frames=DEFAULT_CLIP_FRAMES,
        totals={"samples": per_shard * shards, "bytes": sum(e.filesize for e in entries)}))
    return paths


def cpu_seconds() -> float:
    """User + sys time of this process and of its children that have exited and been waited for."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def time_cat(paths: list[Path]) -> tuple[float, float]:
    """(wall seconds, CPU seconds)."""
    cpu, start = cpu_seconds(), time.perf_counter()
    subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start, cpu_seconds() - cpu


def time_loader(root: Path, batches: int, workers: int, batch_size: int, crop: int,
                dtype: torch.dtype = torch.float32) -> tuple[float, float, int, float]:
    """(steady samples/s after the first batch, wall seconds including start-up, samples, CPU seconds)."""
    from trainer.data import train_loader

    cpu, start = cpu_seconds(), time.perf_counter()
    iterator = iter(train_loader(str(root), batch_size=batch_size, crop_frames=crop, num_workers=workers, seed=0,
                                 dtype=dtype))
    next(iterator)
    first = time.perf_counter()
    for _ in range(batches - 1):
        batch = next(iterator)
        assert batch["spec"].shape[-1] == crop
    end = time.perf_counter()
    del iterator  # shuts the workers down and waits for them, so their CPU time is counted
    return (batches - 1) * batch_size / (end - first), end - start, batches * batch_size, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the shards here and keep them")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="loader-bench-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        paths = sorted(root.glob("train-*.tar"))
        if not paths:
            t0 = time.perf_counter()
            paths = write_bench_shards(root, args.gigabytes)
            print(f"wrote {len(paths)} shards in {time.perf_counter() - t0:.1f}s to {root}", file=sys.stderr)
        total_bytes = sum(p.stat().st_size for p in paths)
        samples_stored = total_bytes / (SAMPLE_BYTES + 2048)  # + tar headers and json per sample

        (cold_cat, _), (warm_cat, cat_cpu) = time_cat(paths), time_cat(paths)
        raw_rate = total_bytes / warm_cat
        raw_samples = samples_stored / warm_cat
        loader_runs = [time_loader(root, args.batches, args.workers, args.batch_size, args.crop) for _ in range(2)]
        rate, wall, samples, loader_cpu = loader_runs[1]
        half_rate, _, half_samples, half_cpu = time_loader(root, args.batches, args.workers, args.batch_size, args.crop,
                                                           dtype=torch.float16)
        cat_ms, loader_ms, half_ms = (cat_cpu / samples_stored * 1e3, loader_cpu / samples * 1e3,
                                      half_cpu / half_samples * 1e3)

        print(f"shards: {len(paths)} files, {total_bytes / 1e9:.2f} GB, ~{samples_stored:.0f} samples of {SAMPLE_BYTES / 2**20:.0f} MiB")
        print(f"raw cat:  first {total_bytes / cold_cat / 1e9:.2f} GB/s, warm {raw_rate / 1e9:.2f} GB/s = {raw_samples:.0f} samples/s")
        print(f"loader:   first {loader_runs[0][0]:.0f} samples/s, warm {rate:.0f} samples/s "
              f"({rate * SAMPLE_BYTES / 1e9:.2f} GB/s of stored samples; {samples} samples in {wall:.1f}s with start-up) "
              f"[{args.workers} workers, batch {args.batch_size}, crop {args.crop}]")
        print(f"loader float16 batches: {half_rate:.0f} samples/s")
        print(f"ratio loader/raw: {rate / raw_samples:.2f}x (float16: {half_rate / raw_samples:.2f}x) (goal >= 0.6x)")
        print(f"CPU per sample: cat {cat_ms:.2f} ms, loader {loader_ms:.2f} ms, float16 {half_ms:.2f} ms (all processes)"
              f" -> ratio {cat_ms / loader_ms:.2f}x (float16: {cat_ms / half_ms:.2f}x)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
