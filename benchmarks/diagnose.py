"""Why does (or doesn't) an objective learn? Gradient norms per loss term and per model part, and
whether it can overfit a small fixed set (docs/experiments.md, "Why the original objective does not learn").

    .venv/bin/python benchmarks/diagnose.py --shards S [--preset original] [--set k=v ...]
        [--batches 8] [--steps 200] [--seed 0]

1. Gradient norms: on the first fixed batch, the gradient of each loss term alone (masked L1, the
   all-frames L1, the pair-task BCE), its norm over the parameters of each top-level part of the
   model (input convs, transformer stacks per level, decoders, the two heads) and over the shared
   trunk (everything but the heads).
2. Overfit: `--batches` fixed batches of the train split with fixed corruptions (the training
   corruption, seeded once), trained on round-robin for `--steps` AdamW steps (the config's lr,
   no dropout); linear masked-token L1 against the two baselines on the same batches, before and
   after, and the pair-task accuracy. An objective that cannot get below interpolation on 8
   batches it has seen 25 times cannot learn to fill gaps.
Prints markdown tables; the machine's load matters for nothing here (no timings).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import torch

from trainer.config import load_config
from trainer.data import eval_loader
from trainer.model import build_model
from trainer.pretrain.baselines import copy_nearest, interpolate
from trainer.pretrain.corrupt import corrupt_batch
from trainer.pretrain.objective import compute_loss, masked_l1

TERMS = ("masked_l1", "all_frames_l1", "nsp_bce")


def part_of(name: str) -> str:
    """'encoder_stacks.3.blocks.0.ffn.weight' -> 'encoder_stacks.3'."""
    first, _, rest = name.partition(".")
    return first if first in ("mask_head", "nsp_head") else f"{first}.{rest.split('.')[0]}"


def gradient_table(model, cfg, corrupted) -> list[str]:
    head, logit = model(corrupted.input)
    _, parts, _ = compute_loss(head, logit, corrupted, cfg.loss, cfg.corrupt.nsp, cfg.model.output)
    weights = {"masked_l1": 1.0, "all_frames_l1": cfg.loss.all_frames_weight, "nsp_bce": cfg.loss.nsp_weight}
    norms: dict[str, dict[str, float]] = {}
    for term in TERMS:
        model.zero_grad(set_to_none=True)
        (weights[term] * parts[term]).backward(retain_graph=True)
        squares: dict[str, float] = defaultdict(float)
        for name, p in model.named_parameters():
            if p.grad is not None:
                g = float(p.grad.square().sum())
                squares[part_of(name)] += g
                if not name.startswith(("mask_head", "nsp_head")):
                    squares["trunk (all but the heads)"] += g
        norms[term] = {k: v**0.5 for k, v in squares.items()}
    model.zero_grad(set_to_none=True)
    rows = sorted({k for n in norms.values() for k in n}, key=lambda k: (k.startswith("trunk"), k))
    lines = [
        "| part | " + " | ".join(f"∇ {t} (weighted)" for t in TERMS) + " | masked / pair-task |",
        "|---|" + "---|" * (len(TERMS) + 1),
    ]
    for row in rows:
        values = [norms[t].get(row, 0.0) for t in TERMS]
        ratio = values[0] / values[2] if values[2] > 0 else float("nan")
        lines.append(f"| {row} | " + " | ".join(f"{v:.2e}" for v in values) + f" | {ratio:.1e} |")
    return lines


@torch.no_grad()
def scores(model, cfg, fixed) -> dict[str, float]:
    model.eval()
    sums = defaultdict(float)
    for corrupted in fixed:
        head, logit = model(corrupted.input)
        _, parts, rec = compute_loss(head, logit, corrupted, cfg.loss, cfg.corrupt.nsp, cfg.model.output)
        sums["model"] += float(masked_l1(rec, corrupted.target, corrupted.selected))
        sums["copy"] += float(
            masked_l1(
                copy_nearest(corrupted.input, corrupted.changed(), corrupted.separator),
                corrupted.target,
                corrupted.selected,
            )
        )
        sums["interp"] += float(
            masked_l1(
                interpolate(corrupted.input, corrupted.changed(), corrupted.separator),
                corrupted.target,
                corrupted.selected,
            )
        )
        sums["nsp_accuracy"] += float(parts["nsp_accuracy"])
    model.train()
    return {k: v / len(fixed) for k, v in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--preset", default="original")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = load_config(args.preset, overrides=args.overrides)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.0))
    torch.manual_seed(args.seed)
    model = build_model(cfg.model)
    loader = eval_loader(
        args.shards,
        batch_size=cfg.data.batch_size,
        crop_frames=cfg.data.crop_frames,
        max_batches=args.batches,
        split="train",
    )
    generator = torch.Generator().manual_seed(args.seed)
    fixed = [corrupt_batch(b["spec"].float(), b["group"], cfg.corrupt, generator) for b in loader]
    print(f"config: {args.preset} {' '.join(args.overrides)}; {len(fixed)} fixed batches of {cfg.data.batch_size}\n")
    print("\n".join(gradient_table(model, cfg, fixed[0])))

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=0.0)
    before = scores(model, cfg, fixed)
    for step in range(args.steps):
        corrupted = fixed[step % len(fixed)]
        head, logit = model(corrupted.input)
        loss, _, _ = compute_loss(head, logit, corrupted, cfg.loss, cfg.corrupt.nsp, cfg.model.output)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
    after = scores(model, cfg, fixed)
    print(f"\n| overfit {len(fixed)} batches | masked L1 | / interpolation | / copy-nearest | pair-task accuracy |")
    print("|---|---|---|---|---|")
    for label, s in (("step 0", before), (f"step {args.steps}", after)):
        ratios = f"{s['model'] / s['interp']:.3f} | {s['model'] / s['copy']:.3f}"
        print(f"| {label} | {s['model']:.5f} | {ratios} | {s['nsp_accuracy']:.2f} |")


if __name__ == "__main__":
    main()
