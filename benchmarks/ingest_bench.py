"""Ingest benchmark: first ingest and unchanged re-ingest of a tree of >= 10,000 small files, and
threads vs processes around ffprobe.

The tree (under .bench/ingest, two roots standing for two drives) multiplies a few real encodes:
albums of 12 tracks plus a cover and a rip log, each track a hard link or a symlink to one of
`--distinct` small WAV files, so the first ingest runs ffprobe once per distinct file and
otherwise measures scanning, fingerprint reuse by inode and the manifest. The reference for the
re-ingest is a bare `os.walk` + `os.stat` of the same tree: the least any stat-only re-ingest can
cost. "One source file touched" changes the mtime of one source, so every link to it (1/distinct of
the tree) is new to the journal and the manifest is rebuilt: the cost of a re-ingest after a small
change, without the unchanged-run shortcut.

    .venv/bin/python benchmarks/ingest_bench.py [--files 12000] [--distinct 24] [--probe-files 48]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile

from pipeline import format as fmt
from pipeline.demo.synth import synth_music
from pipeline.ingest.probe import probe_file
from pipeline.ingest.run import default_workers, ingest

BENCH_DIR = Path(".bench/ingest")


def write_wavs(folder: Path, count: int, seconds: float = 0.5) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"source {i:03d}.wav"
        if not path.exists():
            soundfile.write(path, synth_music(seconds, 22050, 2, seed=i), 22050, subtype="PCM_16")
        paths.append(path)
    return paths


def build_tree(files: int, distinct: int) -> list[str]:
    """Two roots of albums; tracks alternate between hard links and symlinks to the sources."""
    if BENCH_DIR.exists():
        shutil.rmtree(BENCH_DIR)
    sources = write_wavs(BENCH_DIR / "sources", distinct)
    roots = [BENCH_DIR / "ssd1", BENCH_DIR / "ssd2"]
    for n in range(files):
        album = n // 12
        folder = roots[album % 2] / f"Artist {album // 5:03d}" / f"Album {album:04d} [{2000 + album % 20}]"
        if n % 12 == 0:
            folder.mkdir(parents=True)
            (folder / "cover.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
            (folder / "rip.log").write_text("log\n")
        source = sources[n % distinct].resolve()
        track = folder / f"{n % 12 + 1:02d} Track {n}.wav"
        if n % 2:
            track.symlink_to(source)
        else:
            os.link(source, track)
    return [str(r) for r in roots]


def bare_walk(roots: list[str]) -> int:
    count = 0
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                os.stat(os.path.join(dirpath, name))
                count += 1
    return count


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def probe_pools(count: int, workers: int, rounds: int) -> tuple[float, float]:
    """Median seconds to probe `count` distinct files with a thread pool and with joblib's process
    pool, alternating rounds so that load from other users of the machine hits both alike."""
    from joblib import Parallel, delayed

    paths = [str(p) for p in write_wavs(BENCH_DIR / "probe", count, seconds=2.0)]
    processes = Parallel(n_jobs=workers)
    with processes:  # workers start once, outside the timing
        processes(delayed(len)(p) for p in paths)
        t_threads, t_procs = [], []
        for _ in range(rounds):
            with ThreadPoolExecutor(workers) as pool:
                t_threads.append(timed(lambda: list(pool.map(probe_file, paths)))[0])
            t_procs.append(timed(lambda: processes(delayed(probe_file)(p) for p in paths))[0])
    return statistics.median(t_threads), statistics.median(t_procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12000)
    parser.add_argument("--distinct", type=int, default=24)
    parser.add_argument("--probe-files", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    roots = build_tree(args.files, args.distinct)
    manifests = BENCH_DIR / "manifests"
    walk_s = min(timed(bare_walk, roots)[0] for _ in range(args.repeats))
    first_s, first = timed(ingest, roots, manifests, progress=False)
    before = (manifests / fmt.TRACKS_FILE).read_bytes()
    again = []
    for _ in range(args.repeats):
        seconds, summary = timed(ingest, roots, manifests, progress=False)
        assert summary.probed == 0 and (manifests / fmt.TRACKS_FILE).read_bytes() == before
        again.append(seconds)
    again_s = min(again)
    touched = []
    for i in range(args.repeats):  # one file changed: no shortcut, the manifest is rebuilt from the journal
        os.utime(BENCH_DIR / "sources" / "source 000.wav", ns=(i * 10**9, i * 10**9))
        seconds, summary = timed(ingest, roots, manifests, progress=False)
        assert summary.probed == 1
        touched.append(seconds)
    touched_s = min(touched)
    cli_start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipeline.cli import main; main()",
            "ingest",
            *roots,
            "--manifests",
            str(manifests),
        ],
        check=True,
        capture_output=True,
    )
    cli_s = time.perf_counter() - cli_start
    workers = default_workers()
    threads_s, procs_s = probe_pools(args.probe_files, workers, args.repeats)

    n = first.files
    print(
        f"tree: {n} audio files ({args.distinct} distinct, {first.probed} probed) "
        f"+ {2 * (args.files // 12)} other files, 2 roots; {os.cpu_count()} cores"
    )
    print("| measurement | seconds | files/s | ratio to reference |")
    print("|---|---|---|---|")
    print(f"| bare os.walk + os.stat (reference) | {walk_s:.3f} | {n / walk_s:,.0f} | 1.00 |")
    print(f"| first ingest (in-process) | {first_s:.3f} | {n / first_s:,.0f} | {walk_s / first_s:.2f} |")
    print(
        f"| unchanged re-ingest (in-process, best of {args.repeats}) | {again_s:.3f} | {n / again_s:,.0f} "
        f"| {walk_s / again_s:.2f} |"
    )
    print(
        f"| re-ingest, one source file touched (in-process, best of {args.repeats}) | {touched_s:.3f} "
        f"| {n / touched_s:,.0f} | {walk_s / touched_s:.2f} |"
    )
    print(
        f"| unchanged re-ingest (`pipeline ingest` process, incl. start-up) | {cli_s:.3f} | {n / cli_s:,.0f} "
        f"| {walk_s / cli_s:.2f} |"
    )
    print(
        f"| probe pool: threads, {workers} workers, {args.probe_files} distinct files, "
        f"median of {args.repeats} (reference) "
        f"| {threads_s:.3f} | {args.probe_files / threads_s:,.1f} | 1.00 |"
    )
    print(
        f"| probe pool: joblib processes, {workers} workers, same files, alternating rounds | {procs_s:.3f} "
        f"| {args.probe_files / procs_s:,.1f} "
        f"| {threads_s / procs_s:.2f} |"
    )


if __name__ == "__main__":
    main()
