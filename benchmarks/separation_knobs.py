"""What `--overlap`, `--tta` and an ensemble (`--checkpoint` repeated) buy in dB and cost in time.

    python benchmarks/separation_knobs.py --checkpoint runs/a --checkpoint runs/b --manifests pair-manifests

Every row is `trainer evaluate-separation` (in this process, through the code `trainer separate`
runs) on the same val songs of the pairs manifest: the median instrumental and vocals SDR (MDX
definition) and the separation time per second of audio, next to the reference row (the first
checkpoint alone at the default overlap 0.25) measured in the same run: the difference in dB and
the ratio of times. The load average is printed before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="Two or more for the ensemble rows.")
    parser.add_argument("--manifests", required=True, help="Holds pairs.jsonl (its val songs are scored).")
    parser.add_argument("--tracks", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="Timing: the fastest of this many runs per row.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from trainer.separation.evaluate import evaluate_separation

    first = args.checkpoint[:1]
    rows = [
        ("reference: one model, overlap 0.25", first, {}),
        ("overlap 0", first, {"overlap": 0.0}),
        ("overlap 0.5", first, {"overlap": 0.5}),
        ("overlap 0.75", first, {"overlap": 0.75}),
        ("TTA (stereo swap + half-window shift)", first, {"tta": True}),
    ]
    if len(args.checkpoint) > 1:
        n = len(args.checkpoint)
        rows += [(f"checkpoint {i + 1} alone", [c], {}) for i, c in enumerate(args.checkpoint[1:], 1)]
        rows += [
            (f"ensemble of {n}", args.checkpoint, {"ensemble": True}),
            (f"ensemble of {n} + TTA", args.checkpoint, {"ensemble": True, "tta": True}),
        ]
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, {args.threads} torch threads, {time.strftime('%Y-%m-%d')}")
    print(f"# load average before: {os.getloadavg()}")
    results = []
    for label, checkpoints, knobs in rows:
        best = None
        for _ in range(args.repeats):
            scores, _ = evaluate_separation(
                checkpoints, args.manifests, "val", args.tracks, False, "cpu", progress=False, **knobs
            )
            row = list(scores)[len(checkpoints)] if knobs.get("ensemble") else list(scores)[0]
            speed = scores[row].time_per_audio_second
            best = speed if best is None else min(best, speed)
        medians = scores[row].medians()
        results.append((label, medians[0], medians[2], best))
    reference = results[0]
    print("| run | instrumental SDR (MDX, dB) | vs reference | vocals SDR (MDX, dB) | s per audio s | time vs ref. |")
    print("|---|---|---|---|---|---|")
    for label, inst, voc, speed in results:
        print(
            f"| {label} | {inst:.2f} | {inst - reference[1]:+.2f} | {voc:.2f} | {speed:.3f} | "
            f"{speed / reference[3]:.2f}x |"
        )
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
