"""How far below linear interpolation can a gap be filled without learning anything from context?

    .venv/bin/python benchmarks/gap_fills.py --shards S [--batches 16] [--crop-frames 128] [--context 4]

Scores fills that need no training on the [MASK] frames of the evaluation yardstick (16-frame
tokens, 15% selected, 80/10/10, trainer.pretrain.evaluate.yardstick, the same val crops and seed as
`trainer evaluate`), each as L1 of the linear magnitudes and as a ratio to the interpolation
baseline: copy-nearest, interpolation scaled by a constant (L1 is minimised by the median, which
for skewed magnitudes lies under the mean), interpolation of log magnitudes (exact for an
exponential decay), the smaller of the two neighbours, and a self-similarity copy (for each gap,
the stretch of the same crop whose `--context` frames on both sides match the gap's context best
in log magnitude, as in similarity-based audio inpainting). Two oracle rows use the clean gap and
bound what knowing part of the answer gives: the best single factor per gap on the interpolation
(the gap's loudness), and each bin's median level over the gap (which notes sound in it). If none of
the fills is far below 1.0 and the oracles are not far below either, a model must learn the music
itself to get there (docs/experiments.md, "Real music with noise detection").
Also prints how well mask_detect's rule separates the noised tenth of 80/10/10 from music on these
crops. Prints one markdown table; nothing here is timed.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor

from trainer.data import eval_loader
from trainer.pretrain.baselines import copy_nearest, interpolate, neighbour_frames
from trainer.pretrain.corrupt import CorruptConfig, corrupt_batch
from trainer.pretrain.evaluate import EVAL_SEED, yardstick
from trainer.pretrain.objective import DETECT_LEVEL

LOG_EPS = 1e-4


def log_interpolate(inp: Tensor, changed: Tensor, separator: Tensor) -> Tensor:
    before, after, weight, _ = neighbour_frames(inp, changed, separator)
    blended = torch.exp((1 - weight) * torch.log(before + LOG_EPS) + weight * torch.log(after + LOG_EPS)) - LOG_EPS
    return torch.where(changed[:, None, None, :], blended.clamp(min=0), inp)


def smaller_neighbour(inp: Tensor, changed: Tensor, separator: Tensor) -> Tensor:
    before, after, _, _ = neighbour_frames(inp, changed, separator)
    return torch.where(changed[:, None, None, :], torch.minimum(before, after), inp)


def _runs(flags: Tensor) -> list[tuple[int, int]]:
    """[T] bool -> [start, end) of each run of True."""
    runs, start = [], None
    for t, flag in enumerate(flags.tolist() + [False]):
        if flag and start is None:
            start = t
        elif not flag and start is not None:
            runs.append((start, t))
            start = None
    return runs


def self_similar(inp: Tensor, changed: Tensor, separator: Tensor, context: int) -> Tensor:
    """Each gap <- the stretch of the crop whose surrounding frames best match the gap's (mean |log
    difference|), searched over every shift that keeps the stretch and its context intact; gaps
    without a candidate keep the interpolation."""
    out = interpolate(inp, changed, separator)
    source = ~changed & ~separator
    logs = torch.log(inp + LOG_EPS)
    frames = inp.shape[-1]
    for b in range(inp.shape[0]):
        for start, end in _runs(changed[b]):
            around = [t for t in range(start - context, start) if t >= 0 and source[b, t]]
            around += [t for t in range(end, end + context) if t < frames and source[b, t]]
            if not around:
                continue
            around_t = torch.tensor(around)
            best = None
            for shift in range(-frames, frames):
                if abs(shift) < end - start:
                    continue
                moved, gap = around_t + shift, torch.arange(start, end) + shift
                if min(moved.min(), gap.min()) < 0 or max(moved.max(), gap.max()) >= frames:
                    continue
                if not (source[b, moved].all() and source[b, gap].all()):
                    continue
                distance = float((logs[b][..., around_t] - logs[b][..., moved]).abs().mean())
                if best is None or distance < best[0]:
                    best = (distance, shift)
            if best is not None:
                out[b, ..., start:end] = inp[b, ..., start + best[1] : end + best[1]]
    return out


def oracle_flat(target: Tensor, gaps: Tensor, fill: Tensor) -> Tensor:
    """Uses the truth: each gap <- the per-bin median of its clean frames (every note's level right,
    only the change within the gap unknown)."""
    out = fill.clone()
    for b in range(target.shape[0]):
        for start, end in _runs(gaps[b]):
            out[b, ..., start:end] = target[b, ..., start:end].median(dim=-1, keepdim=True).values
    return out


def oracle_gain(target: Tensor, gaps: Tensor, interpolation: Tensor) -> Tensor:
    """Uses the truth: each gap <- the interpolation times the one factor (0, 0.05, ..., 2) that fits it best."""
    out = interpolation.clone()
    factors = torch.linspace(0, 2, 41)
    for b in range(target.shape[0]):
        for start, end in _runs(gaps[b]):
            guess, truth = interpolation[b, ..., start:end], target[b, ..., start:end]
            errors = torch.stack([(guess * k - truth).abs().sum() for k in factors])
            out[b, ..., start:end] = guess * factors[errors.argmin()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="a shard folder or its val.json")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--split", default="val", help="the shards' split to read (val: the evaluation's crops)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-frames", type=int, default=128)
    parser.add_argument("--context", type=int, default=4, help="frames each side matched by the self-similar copy")
    args = parser.parse_args()

    corruption = yardstick(CorruptConfig())
    generator = torch.Generator().manual_seed(EVAL_SEED)
    sums: dict[str, float] = {}
    elements = gap_frames = 0
    loud_share = {"intact": [], "noised": []}  # mask_detect's rule: share of a frame's bins >= DETECT_LEVEL
    loader = eval_loader(
        args.shards,
        batch_size=args.batch_size,
        crop_frames=args.crop_frames,
        max_batches=args.batches,
        split=args.split,
    )
    for batch in loader:
        c = corrupt_batch(batch["spec"].float(), batch["group"], corruption, generator)
        changed, gaps = c.changed(), c.masked
        interpolation = interpolate(c.input, changed, c.separator)
        fills = {
            "copy nearest frame": copy_nearest(c.input, changed, c.separator),
            "linear interpolation": interpolation,
            **{f"interpolation x {k}": interpolation * k for k in (0.7, 0.8, 0.9)},
            "interpolation of log magnitudes": log_interpolate(c.input, changed, c.separator),
            "smaller neighbour": smaller_neighbour(c.input, changed, c.separator),
            f"self-similar copy ({args.context} frames each side)": self_similar(
                c.input, changed, c.separator, args.context
            ),
            "oracle: one best factor per gap on the interpolation": oracle_gain(c.target, gaps, interpolation),
            "oracle: each bin's median level in the gap": oracle_flat(c.target, gaps, interpolation),
        }
        weight = gaps[:, None, None, :].float()
        for name, fill in fills.items():
            sums[name] = sums.get(name, 0.0) + float(((fill - c.target).abs() * weight).sum())
        elements += int(gaps.sum()) * c.input.shape[1] * c.input.shape[2]
        gap_frames += int(gaps.sum())
        share = (c.input >= DETECT_LEVEL).float().mean(dim=(1, 2))
        loud_share["intact"].append(share[~changed & ~c.separator])
        loud_share["noised"].append(share[c.noised])
    reference = sums["linear interpolation"] / elements
    print(f"{gap_frames} [MASK] frames of {args.shards} (yardstick corruption, seed {EVAL_SEED})\n")
    print("| fill (no learning) | L1 on [MASK] frames | / interpolation |\n|---|---|---|")
    for name, total in sums.items():
        print(f"| {name} | {total / elements:.5f} | {total / elements / reference:.3f} |")
    intact, noised = (torch.cat(loud_share[k]) for k in ("intact", "noised"))
    print(
        f"\nmask_detect's rule, share of a frame's bins >= {DETECT_LEVEL} of the crop's max: intact frames "
        f"({intact.numel()}) at most {intact.max():.3f}, noised frames ({noised.numel()}) at least "
        f"{noised.min() if noised.numel() else float('nan'):.3f}"
    )


if __name__ == "__main__":
    main()
