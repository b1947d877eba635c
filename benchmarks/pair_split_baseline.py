"""Did MixIT's two-output pretext learn more than a fixed split? (docs/experiments.md, "MixIT's
two-output form").

    .venv/bin/python benchmarks/pair_split_baseline.py --run RUN --shards SHARDS [--splits 0.5,0.7,0.8,0.9]

A `model.output: mask_pair` run's validation line divides its L1 to the primary by the mixture's
("doing nothing"). But the estimate it scores is the output that the loss assigns to the primary
knowing the targets, so even a model that ignores its input beats the mixture: masks fixed at
(a, 1 - a) everywhere give a x mixture to whichever source that fits better. This prints that
ratio for each split a on the run's own validation crops and fixed mixtures (`evaluate_mixture`,
the run's corruption, loss and `run.val_batches`), next to the run's checkpoint. Prints a markdown
table; no timings.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from trainer.checkpoint import load_checkpoint, read_checkpoint_config, resolve_checkpoint
from trainer.config import load_config
from trainer.data.loader import eval_loader
from trainer.model import build_model
from trainer.pretrain.evaluate import evaluate_mixture


class FixedSplit(nn.Module):
    """Both masks constant: `share` for the first output, 1 - share for the second."""

    def __init__(self, share: float):
        super().__init__()
        self.share = share

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        head = torch.cat((torch.full_like(x, self.share), torch.full_like(x, 1.0 - self.share)), dim=1)
        return head, torch.zeros(x.shape[0], device=x.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a mask_pair pretraining run or checkpoint")
    parser.add_argument("--shards", required=True, help="its shards (the val split is read)")
    parser.add_argument("--splits", default="0.5,0.6,0.7,0.8,0.9", help="comma-separated shares a")
    args = parser.parse_args()

    checkpoint = resolve_checkpoint(args.run)
    cfg = load_config(base=read_checkpoint_config(checkpoint))
    if cfg.model.output != "mask_pair":
        raise SystemExit(f"{checkpoint}: model.output is {cfg.model.output}, not mask_pair")
    device = torch.device("cpu")

    def score(model: nn.Module) -> float:
        loader = eval_loader(
            args.shards,
            batch_size=cfg.data.val_batch_size,
            crop_frames=cfg.data.crop_frames,
            max_batches=cfg.run.val_batches,
        )
        return evaluate_mixture(model, loader, cfg.corrupt, device, cfg.loss, output="mask_pair")["ratio"]

    trained = build_model(cfg.model)
    load_checkpoint(checkpoint, trained)
    print("| estimate | L1 to the primary / the mixture's |")
    print("|---|---|")
    print(f"| {checkpoint} | {score(trained.eval()):.3f} |")
    for share in (float(s) for s in args.splits.split(",")):
        print(f"| masks fixed at {share:g} / {1 - share:g} | {score(FixedSplit(share)):.3f} |")


if __name__ == "__main__":
    main()
