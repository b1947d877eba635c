"""Peak memory and speed of one shard worker's decode + STFT, for short and very long tracks.

    .venv/bin/python benchmarks/shard_memory.py            # the table for benchmarks/README.md
    .venv/bin/python benchmarks/shard_memory.py --fft-only # torch vs numpy FFT on one chunk

Each track is processed by a separate worker process (this script re-run with `--worker`) that
pulls every clip out of `pipeline.audio.stft.track_clips` and drops it, like a shard worker that writes
each clip out and forgets it. Peak RSS is the kernel's VmHWM of the worker and (polled) of its
ffmpeg child; `os.wait4`'s figure for the whole tree is printed as a cross-check. The goal is
<= 400 MB and flat in track length. A worker that only imports the pipeline is the baseline.
FLAC and WAV tracks run twice: as `track_clips` reads them (libsndfile) and forced through ffmpeg.

The tracks are built without holding audio in any Python process: 60 s of synthetic music is
encoded to MP3 once per seed, the long MP3s are stream-copied concatenations of those (ffmpeg
concat demuxer, `-c copy`), and FLAC/WAV tracks are ffmpeg transcodes of the MP3 of that length.
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


def build_track(workdir: Path, codec: str, minutes: int) -> Path:
    target = workdir / f"track-{minutes}min.{codec}"
    if target.exists():
        return target
    if codec != "mp3":
        source = build_track(workdir, "mp3", minutes)
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(source),
                "-c:a",
                "flac" if codec == "flac" else "pcm_s16le",
                str(target),
            ],
            check=True,
        )
        return target
    from pipeline.demo import synth

    segments = []
    for seed in SEGMENT_SEEDS:
        segment = workdir / f"segment-{seed}.mp3"
        if not segment.exists():
            synth.write_track(segment, seconds=SEGMENT_SECONDS, seed=seed)
        segments.append(segment)
    playlist = workdir / f"track-{minutes}min.txt"
    repeats = minutes * 60 // SEGMENT_SECONDS
    playlist.write_text("".join(f"file '{segments[i % len(segments)]}'\n" for i in range(repeats)))
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(playlist),
            "-c",
            "copy",
            str(target),
        ],
        check=True,
    )
    return target


def run_worker(path: Path | None, chunk_samples: int | None, ffmpeg_only: bool = False) -> dict:
    """Run this script as a worker process; returns its report plus the wait4 peak of its process tree."""
    args = [sys.executable, __file__, "--worker", str(path) if path else "-"]
    if chunk_samples:
        args += ["--chunk-samples", str(chunk_samples)]
    if ffmpeg_only:
        args.append("--ffmpeg-only")
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


def worker(path: str, chunk_samples: int | None, ffmpeg_only: bool) -> None:
    """Decode + STFT one track, dropping each clip; print a JSON report on stdout."""
    from pipeline import format as fmt
    from pipeline.audio.decode import DEFAULT_CHUNK_SAMPLES, decode_chunks
    from pipeline.audio.stft import clips_from_chunks, track_clips

    stft, chunk_samples = fmt.STFTParams(), chunk_samples or DEFAULT_CHUNK_SAMPLES
    clips = frames = 0
    watcher = ChildPeakWatcher()
    watcher.start()
    started, started_cpu = time.perf_counter(), time.process_time()
    if path != "-":
        if ffmpeg_only:  # what track_clips does, minus the libsndfile path
            chunks = decode_chunks(path, chunk_samples=chunk_samples, allow_libsndfile=False)
            stream = clips_from_chunks(chunks, stft, fmt.DEFAULT_CLIP_FRAMES)
        else:
            stream = track_clips(path, stft, fmt.DEFAULT_CLIP_FRAMES, chunk_samples=chunk_samples)
        for clip in stream:
            clips += 1
            frames += clip.valid_frames
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    watcher.stop.set()
    watcher.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "clips": clips,
                "audio_seconds": frames * stft.hop / fmt.SAMPLE_RATE,
                "wall_seconds": seconds,
                "worker_peak_mb": peak_rss_mb(),
                "ffmpeg_peak_mb": watcher.peak_mb,
                "worker_cpu_seconds": cpu_seconds,
                "ffmpeg_cpu_seconds": children.ru_utime + children.ru_stime,
            }
        )
    )


def compare_fft(repeats: int = 30, rounds: int = 5) -> None:
    """Best-of-rounds CPU time for one default-size chunk's magnitude: stft.py (torch FFT) vs numpy FFT.

    CPU time of this (single-threaded) process, not wall time: on a shared VM, wall time mostly
    measures the neighbours."""
    import numpy as np

    from pipeline import format as fmt
    from pipeline.audio.decode import DEFAULT_CHUNK_SAMPLES
    from pipeline.audio.stft import FLOAT16_MAX, stft_magnitude

    stft = fmt.STFTParams()
    signal = np.random.default_rng(0).uniform(-1, 1, (DEFAULT_CHUNK_SAMPLES, 2)).astype(np.float32)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(stft.n_fft) / stft.n_fft)).astype(np.float32)

    def numpy_magnitude():  # the same steps as stft._magnitude, with numpy.fft.rfft
        padded = np.pad(signal.T, ((0, 0), (stft.n_fft // 2, stft.n_fft // 2)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, stft.n_fft, axis=-1)[:, :: stft.hop]
        spectrum = np.fft.rfft(frames * window, axis=-1)[:, :, : stft.bins].transpose(0, 2, 1)
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
    parser.add_argument(
        "--tracks",
        nargs="+",
        default=["mp3:10", "mp3:180", "flac:10", "flac:60", "wav:10"],
        help="CODEC:MINUTES for each track to measure (codec: mp3, flac or wav)",
    )
    parser.add_argument("--chunk-samples", type=int, help="decode chunk size (default: decode.py's)")
    parser.add_argument("--fft-only", action="store_true", help="only compare torch and numpy FFT")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--ffmpeg-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(options.worker, options.chunk_samples, options.ffmpeg_only)
    elif options.build:
        codec, minutes = options.build.split(":")
        print(build_track(options.workdir, codec, int(minutes)))
    elif options.fft_only:
        compare_fft()
    else:
        measure(options)


def measure(options: argparse.Namespace) -> None:
    # This process never imports numpy/torch, so the wait4 cross-check is not inflated by our size.
    rows = [("imports only (baseline)", "-", run_worker(None, options.chunk_samples))]
    with tempfile.TemporaryDirectory(dir=options.workdir) as scratch:
        for spec in options.tracks:
            codec, minutes = spec.split(":")
            started = time.perf_counter()
            track = Path(
                subprocess.run(
                    [sys.executable, __file__, "--build", spec, "--workdir", scratch],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            )
            print(
                f"built {track.name} ({track.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            name = f"{minutes} min {codec.upper()}"
            if codec == "mp3":
                rows.append((name, "ffmpeg", run_worker(track, options.chunk_samples)))
            else:
                rows.append((name, "libsndfile", run_worker(track, options.chunk_samples)))
                rows.append((name, "ffmpeg (forced)", run_worker(track, options.chunk_samples, ffmpeg_only=True)))
    print(
        "| track | decoder | clips | worker peak RSS (MB) | ffmpeg peak RSS (MB) | wait4 tree peak (MB) "
        "| wall audio-s/s | worker CPU s | ffmpeg CPU s | audio-s per CPU-s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    speeds = {}
    for name, decoder, r in rows:
        audio = r["audio_seconds"]
        cpu = r["worker_cpu_seconds"] + r["ffmpeg_cpu_seconds"]
        speeds[name, decoder] = audio / cpu if audio else 0.0
        wall_speed, cpu_speed = (f"{audio / r['wall_seconds']:.0f}", f"{audio / cpu:.0f}") if audio else ("-", "-")
        print(
            f"| {name} | {decoder} | {r['clips']} | {r['worker_peak_mb']:.0f} | {r['ffmpeg_peak_mb']:.0f} "
            f"| {r['tree_peak_mb']:.0f} | {wall_speed} | {r['worker_cpu_seconds']:.1f} "
            f"| {r['ffmpeg_cpu_seconds']:.1f} | {cpu_speed} |"
        )
    print()
    for (name, decoder), speed in speeds.items():
        forced = speeds.get((name, "ffmpeg (forced)"))
        if decoder == "libsndfile" and forced:
            print(f"{name}: libsndfile / ffmpeg audio-s per CPU-s: {speed / forced:.2f}")
    by_codec: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for name, decoder, r in rows[1:]:
        minutes, codec = name.split(" min ")
        by_codec.setdefault((codec, decoder), []).append((int(minutes), r["worker_peak_mb"] + r["ffmpeg_peak_mb"]))
    for (codec, decoder), peaks in by_codec.items():
        if len(peaks) >= 2:
            (short, low), (long, high) = min(peaks), max(peaks)
            print(
                f"{codec} via {decoder}: worker+ffmpeg peak RSS {long} min / {short} min: {high:.0f} / {low:.0f} MB"
                f" = {high / low:.3f}"
            )


if __name__ == "__main__":
    main()
