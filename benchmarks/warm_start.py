"""What does a pretrained start hand the fine-tune? The first separation step from scratch and from a
checkpoint, on the same pair crops (docs/experiments.md, "Why a pretrained start fine-tunes slowly,
and a louder interferer").

    .venv/bin/python benchmarks/warm_start.py --pairs PAIR_SHARDS --init CHECKPOINT [--init ...]
        [--batches 4] [--seed 0]

For each start — scratch (the seed's fresh model), every `--init` with its own mask head and with a
new one — on `--batches` training batches of the pair shards (batch 4 x 128 frames):
- L1 / floor: the separation loss over the mixture's (1.0 = passing the mixture on);
- the mask logits' 5th, 50th and 95th percentiles and the mean sigmoid slope s(1 - s): a head far
  into the sigmoid's flat end passes little gradient back;
- per model part, the RMS per weight of the loss's gradient. AdamW divides by sqrt(v) + eps
  (eps 1e-8): a part whose gradients are near eps barely moves, and one far below the others learns
  from a signal the rest of the network has already shaped;
- per model part, how much its output varies over a crop's frames: the std over frames of each
  (channel, bin) feature, averaged, over the std of all its values. Short pretrains leave deep
  outputs that barely change from frame to frame (one mask for every frame is a pretext's early
  optimum); a description only: one such checkpoint was still the best start measured
  (docs/experiments.md, "The pretraining budget").
Prints markdown tables; no timings.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from diagnose import part_of  # the sibling script's naming of model parts (benchmarks/ is on sys.path)

from trainer.checkpoint import read_checkpoint_config, resolve_checkpoint
from trainer.config import TrainConfig
from trainer.data import train_loader
from trainer.separation.task import build_separation_model, load_pretrained, separation_loss

BATCH = 4  # crops per batch, 128 frames each


def start(cfg: TrainConfig, seed: int, init: str | None, keep_head: bool) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_separation_model(cfg)
    if init:
        load_pretrained(model, init, torch.device("cpu"), keep_head=keep_head, model_config=cfg.model.to_dict())
    return model


def first_step(model: torch.nn.Module, batches: list[torch.Tensor]) -> dict:
    """Loss ratio, logit statistics and per-part gradient RMS, averaged over the batches."""
    logits: list[torch.Tensor] = []
    hooks = [model.mask_head.register_forward_hook(lambda _m, _i, out: logits.append(out.detach()))]
    variation: dict[str, float] = defaultdict(float)
    for part in ("frame_encoders", "encoder_stacks", "decoder_stacks", "frame_decoders"):
        for index, module in enumerate(getattr(model, part)):
            hooks.append(module.register_forward_hook(frame_variation_hook(variation, f"{part}.{index}")))
    squares: dict[str, float] = defaultdict(float)
    sizes: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        sizes[part_of(name)] += p.numel()
    ratio = 0.0
    try:
        for spec in batches:
            mixture, target = spec[:, :2], spec[:, 2:]
            mask, _ = model(mixture)
            loss, parts, _ = separation_loss(mask, mixture, target)
            model.zero_grad()
            loss.backward()
            ratio += float(loss.detach() / parts["mixture_l1"])
            for name, p in model.named_parameters():
                if p.grad is not None:
                    squares[part_of(name)] += float(p.grad.square().sum())
    finally:
        for hook in hooks:
            hook.remove()
    n = len(batches)
    flat = torch.cat([lg[:, :2].flatten() for lg in logits])
    sample = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
    q05, q50, q95 = torch.quantile(sample, torch.tensor([0.05, 0.5, 0.95])).tolist()
    slope = float((torch.sigmoid(flat) * (1 - torch.sigmoid(flat))).mean())
    rms = {part: (squares[part] / sizes[part] / n) ** 0.5 for part in squares}
    frames = {part: value / n for part, value in variation.items()}
    return {"ratio": ratio / n, "q05": q05, "q50": q50, "q95": q95, "slope": slope, "rms": rms, "frames": frames}


def frame_variation_hook(into: dict[str, float], part: str):
    """Adds the part's std over frames / overall std for this batch (its output is [B * T, C, F])."""

    def hook(_module, _inputs, output):
        values = output.detach().reshape(BATCH, output.shape[0] // BATCH, -1)
        into[part] += float(values.std(dim=1).mean() / values.std().clamp(min=1e-12))

    return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="pair shards (pipeline shard --pairs)")
    parser.add_argument("--init", action="append", required=True, help="a pretraining checkpoint (repeatable)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model_cfg = read_checkpoint_config(resolve_checkpoint(args.init[0])).get("model")
    cfg = TrainConfig.from_dict({"model": model_cfg}, args.init[0])
    loader = train_loader(args.pairs, batch_size=BATCH, crop_frames=128, num_workers=0, seed=args.seed)
    batches = []
    for batch in loader:
        batches.append(batch["spec"].float())
        if len(batches) == args.batches:
            break

    rows = {"scratch": first_step(start(cfg, args.seed, None, False), batches)}
    for init in args.init:
        rows[f"{init}, its head"] = first_step(start(cfg, args.seed, init, True), batches)
        rows[f"{init}, a new head"] = first_step(start(cfg, args.seed, init, False), batches)

    print("| start | L1 / floor | mask logit q05 / q50 / q95 | mean s(1-s) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        quantiles = f"{row['q05']:.2f} / {row['q50']:.2f} / {row['q95']:.2f}"
        print(f"| {name} | {row['ratio']:.3f} | {quantiles} | {row['slope']:.4f} |")
    print_parts("Output variation over frames (std over a crop's frames / std of all values)", rows, "frames", ".3f")
    print_parts("Gradient RMS per weight, first step", rows, "rms", ".1e")


def print_parts(title: str, rows: dict[str, dict], key: str, spec: str) -> None:
    """One markdown table: a line per model part, a column per start."""
    print(f"\n{title}, per part:\n")
    print("| part | " + " | ".join(rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for part in rows["scratch"][key]:
        print(f"| {part} | " + " | ".join(format(row[key].get(part, 0.0), spec) for row in rows.values()) + " |")


if __name__ == "__main__":
    main()
