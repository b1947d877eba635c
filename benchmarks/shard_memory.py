"""Peak memory and speed of one shard worker's decode + STFT, for a 10-minute and a 3-hour track.

    .venv/bin/python benchmarks/shard_memory.py            # the table for benchmarks/README.md
    .venv/bin/python benchmarks/shard_memory.py --fft-only # torch vs numpy FFT on one chunk

Each track is processed by a separate worker process (this script re-run with `--worker`) that
pulls every clip out of `pipeline.stft.track_clips` and drops it, like a shard worker that writes
each clip out and forgets it. Its peak RSS comes from `os.wait4` (the largest of the worker and
its ffmpeg child); the worker also reports its own peak and ffmpeg's separately. The goal is
<= 400 MB and flat in track length. A worker that only imports the pipeline is the baseline.

The long tracks are built without holding audio in this process: 60 s of synthetic music is
encoded to MP3 once per seed and the 10-minute and 3-hour files are stream-copied concatenations
of those (ffmpeg concat demuxer, `-c copy`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SEGMENT_SECONDS = 60
SEGMENT_SEEDS = (1, 2, 3)


def build_track(workdir: Path, minutes: int) -> Path:
    from pipeline import synth

    segments = []
    for seed in SEGMENT_SEEDS:
        segment = workdir / f"segment-{seed}.mp3"
        if not segment.exists():
            synth.write_track(segment, seconds=SEGMENT_SECONDS, seed=seed)
        segments.append(segment)
    target = workdir / f"track-{minutes}min.mp3"
    if target.exists():
        return target
    playlist = workdir / f"track-{minutes}min.txt"
    repeats = minutes * 60 // SEGMENT_SECONDS
    playlist.write_text("".join(f"file '{segments[i % len(segments)]}'\n" for i in range(repeats)))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(playlist), "-c", "copy", str(target)], check=True)
    return target


def run_worker(path: Path | None, chunk_samples: int | None) -> dict:
    """Run this script as a worker process; returns its report plus the wait4 peak of its process tree."""
    args = [sys.executable, __file__, "--worker", str(path) if path else "-"]
    if chunk_samples:
        args += ["--chunk-samples", str(chunk_samples)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    report_line = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"worker for {path} failed with status {status}")
    report = json.loads(report_line)
    report["tree_peak_mb"] = usage.ru_maxrss / 1024
    return report


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM: the high-water RSS of the process since its exec (ru_maxrss also counts the pre-exec
    image of a vfork/fork, i.e. the parent's size)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


class ChildPeakWatcher(threading.Thread):
    """Polls the peak RSS of this process's children (the ffmpeg decoder) until stopped."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            for child in self._children():
                try:
                    self.peak_mb = max(self.peak_mb, peak_rss_mb(child))
                except (OSError, RuntimeError):
                    continue  # it exited between listing and reading

    @staticmethod
    def _children() -> list[str]:
        children = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as fh:
                    children += fh.read().split()
            except OSError:
                continue
        return children


def worker(path: str, chunk_samples: int | None) -> None:
    """Decode + STFT one track, dropping each clip; print a JSON report on stdout."""
    from pipeline import format as fmt
    from pipeline.stft import track_clips

    kwargs = {"chunk_samples": chunk_samples} if chunk_samples else {}
    clips = frames = 0
    watcher = ChildPeakWatcher()
    watcher.start()
    started, started_cpu = time.perf_counter(), time.process_time()
    if path != "-":
        for clip in track_clips(path, fmt.STFTParams(), fmt.DEFAULT_CLIP_FRAMES, **kwargs):
            clips += 1
            frames += clip.valid_frames
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    watcher.stop.set()
    watcher.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "clips": clips, "audio_seconds": frames * fmt.STFTParams().hop / fmt.SAMPLE_RATE, "wall_seconds": seconds,
        "worker_peak_mb": peak_rss_mb(), "ffmpeg_peak_mb": watcher.peak_mb,
        "worker_cpu_seconds": cpu_seconds,
        "ffmpeg_cpu_seconds": children.ru_utime + children.ru_stime,
    }))


def compare_fft(repeats: int = 30, rounds: int = 5) -> None:
    """Best-of-rounds CPU time for one default-size chunk's magnitude: stft.py (torch FFT) vs numpy FFT.

    CPU time of this (single-threaded) process, not wall time: on a shared VM, wall time mostly
    measures the neighbours."""
    import numpy as np

    from pipeline import format as fmt
    from pipeline.decode import DEFAULT_CHUNK_SAMPLES
    from pipeline.stft import FLOAT16_MAX, stft_magnitude

    stft = fmt.STFTParams()
    signal = np.random.default_rng(0).uniform(-1, 1, (DEFAULT_CHUNK_SAMPLES, 2)).astype(np.float32)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(stft.n_fft) / stft.n_fft)).astype(np.float32)

    def numpy_magnitude():  # the same steps as stft._magnitude, with numpy.fft.rfft
        padded = np.pad(signal.T, ((0, 0), (stft.n_fft // 2, stft.n_fft // 2)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, stft.n_fft, axis=-1)[:, ::stft.hop]
        spectrum = np.fft.rfft((frames * window).transpose(0, 2, 1), axis=1)[:, :stft.bins]
        return np.minimum(np.abs(spectrum), FLOAT16_MAX)

    np.testing.assert_allclose(numpy_magnitude(), stft_magnitude(signal, stft), rtol=1e-4, atol=1e-3)
    chunk_seconds = DEFAULT_CHUNK_SAMPLES / fmt.SAMPLE_RATE
    timings = {}
    for name, function in (("torch (stft.py)", lambda: stft_magnitude(signal, stft)), ("numpy", numpy_magnitude)):
        function()
        best = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(repeats):
                function()
            best = min(best, (time.process_time() - started) / repeats)
        timings[name] = best
    print(f"| STFT magnitude, one thread | CPU ms per {chunk_seconds:.1f} s stereo chunk | x realtime |")
    print("|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds * 1e3:.2f} | {chunk_seconds / seconds:.0f} |")
    print(f"\nnumpy / torch time ratio: {timings['numpy'] / timings['torch (stft.py)']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where to build the test tracks (default: a temp dir)")
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 180], help="track lengths to measure")
    parser.add_argument("--chunk-samples", type=int, help="decode chunk size (default: decode.py's)")
    parser.add_argument("--fft-only", action="store_true", help="only compare torch and numpy FFT")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(options.worker, options.chunk_samples)
    elif options.build:
        print(build_track(options.workdir, options.build))
    elif options.fft_only:
        compare_fft()
    else:
        measure(options)


def measure(options: argparse.Namespace) -> None:
    # This process never imports numpy/torch: a worker's ru_maxrss would otherwise start at our size.
    with tempfile.TemporaryDirectory(dir=options.workdir) as scratch:
        rows = [("imports only (baseline)", run_worker(None, options.chunk_samples))]
        for minutes in options.minutes:
            started = time.perf_counter()
            track = Path(subprocess.run([sys.executable, __file__, "--build", str(minutes), "--workdir", scratch],
                                        check=True, capture_output=True, text=True).stdout.strip())
            print(f"built {track.name} ({track.stat().st_size / 1e6:.0f} MB) in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
            rows.append((f"{minutes} min MP3", run_worker(track, options.chunk_samples)))
    print("| track | clips | worker peak RSS (MB) | ffmpeg peak RSS (MB) | wait4 tree peak (MB) "
          "| wall audio-s/s | worker CPU s | ffmpeg CPU s | audio-s per CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        audio = r["audio_seconds"]
        cpu = r["worker_cpu_seconds"] + r["ffmpeg_cpu_seconds"]
        wall_speed, cpu_speed = (f"{audio / r['wall_seconds']:.0f}", f"{audio / cpu:.0f}") if audio else ("-", "-")
        print(f"| {name} | {r['clips']} | {r['worker_peak_mb']:.0f} | {r['ffmpeg_peak_mb']:.0f} "
              f"| {r['tree_peak_mb']:.0f} | {wall_speed} | {r['worker_cpu_seconds']:.1f} "
              f"| {r['ffmpeg_cpu_seconds']:.1f} | {cpu_speed} |")
    peaks = [r["worker_peak_mb"] for _, r in rows[1:]]
    if len(peaks) >= 2:
        print(f"\nworker peak RSS, longest / shortest track: {peaks[-1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
