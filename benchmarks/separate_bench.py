"""`trainer separate`: speed (x realtime) and peak memory against track length, per model preset.

    .venv/bin/python benchmarks/separate_bench.py [--hours 3 0.25] [--presets tiny small] [--threads 2]

For each preset a separation checkpoint is made from the untrained model (weights do not change the
cost), and for each length a synthetic track (one 60 s pipeline.demo.synth piece looped with
ffmpeg's -stream_loop into FLAC) is separated by the real command, `trainer separate`, in a fresh
process: decode, STFT, windows, model, inverse, two FLAC files written. Reported per run: the wall
time, x realtime (track seconds / wall seconds), and the peak RSS of that process (os.wait4's
ru_maxrss). Memory flat in track length shows as the same peak for the short and the long track.

Reference in the same run: `ffmpeg` decoding the same track to nothing (`-f null`), the floor of any
tool that reads the file, so `separate / decode` says how much of the time is the separation.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline import format as fmt
from pipeline.demo.synth import encode, synth_music
from trainer.checkpoint import save_checkpoint
from trainer.config import TASK_SEPARATION
from trainer.separation.finetune import resolve_finetune
from trainer.separation.task import build_separation_model

TRAINER = str(Path(sys.executable).with_name("trainer"))


def make_track(folder: Path, hours: float) -> Path:
    piece = folder / "piece.flac"
    if not piece.exists():
        encode(synth_music(60.0, 44100, 2, seed=7), 44100, piece)
    track = folder / f"track-{hours:g}h.flac"
    if not track.exists():
        loops = max(1, round(hours * 60)) - 1
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", str(loops), "-i", str(piece)]
            + ["-c:a", "flac", str(track)],
            check=True,
        )
    return track


def make_checkpoint(folder: Path, preset: str) -> Path:
    run = folder / f"run-{preset}"
    cfg, _ = resolve_finetune(run, preset, None)  # the config `trainer finetune --preset PRESET` trains
    model = build_separation_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(
        run / "checkpoints",
        1,
        model,
        optimizer,
        scheduler,
        cfg.to_dict(),
        meta={"task": TASK_SEPARATION, "stft": fmt.STFTParams().to_dict()},
    )
    return run


def timed(args: list[str], threads: int) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a child process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[3.0, 0.25])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--work", type=Path, default=None, help="Keep tracks here between runs (default: a temporary folder)."
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="separate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at start, {time.strftime('%Y-%m-%d')}"
    )
    print("| preset | track | separate wall | x realtime | peak RSS | ffmpeg decode wall | separate / decode |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        run = make_checkpoint(work, preset)
        for hours in args.hours:
            track = make_track(work, hours)
            seconds = hours * 3600
            command = [TRAINER, "separate", str(track), "--checkpoint", str(run), "--out", str(work / "out"), "--quiet"]
            command += ["--overwrite", "--device", "cpu"] + (
                ["--batch-size", str(args.batch_size)] if args.batch_size else []
            )
            wall, rss = timed(command, args.threads)
            decode, _ = timed(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(track), "-f", "null", "-"], 1)
            print(
                f"| {preset} | {hours:g} h | {wall:.0f} s | {seconds / wall:.1f}x | {rss:.0f} MiB | {decode:.1f} s "
                f"| {wall / decode:.1f} |",
                flush=True,
            )
            for path in (work / "out").glob("*"):
                path.unlink()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
