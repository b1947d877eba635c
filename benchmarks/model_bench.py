"""Forward+backward time per sample of the model presets, relative vs RoPE attention, and MFU on a GPU.

    .venv/bin/python benchmarks/model_bench.py                                   # CPU: tiny/small, T 256/512
    .venv/bin/python benchmarks/model_bench.py --presets base --frames 1024 --batch 4 \
        --device cuda --dtype bf16 --peak-tflops 989 --attention-dims ''         # H100 SXM dense bf16

Each configuration is timed on the same batch after warm-up steps; relative and RoPE runs alternate
so that a noisy shared machine disturbs both alike. FLOPs per training step (forward + backward) are
counted with FlopCounterMode on the meta device, without the recomputation --checkpoint-blocks adds
(the usual MFU convention); MFU = those FLOPs / step time / --peak-tflops.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer.model import build_model, load_model_preset
from trainer.model.attention import FrameAttention


def training_flops(cfg, batch: int, frames: int) -> int:
    cfg = dataclasses.replace(cfg, checkpoint_blocks=False)
    with torch.device("meta"):
        model = build_model(cfg).train()
        x = torch.empty(batch, cfg.audio_channels, cfg.bins, frames)
    counter = FlopCounterMode(display=False)
    with counter:
        mask, nsp_logit = model(x)
        (mask.sum() + nsp_logit.sum()).backward()
    return counter.get_total_flops()


class StepTimer:
    """One model and batch; `step()` runs forward + backward + an AdamW update and returns seconds."""

    def __init__(self, cfg, batch: int, frames: int, device: torch.device, dtype: str):
        torch.manual_seed(0)
        self.model = build_model(cfg).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x = torch.rand(batch, cfg.audio_channels, cfg.bins, frames, device=device)
        self.device, self.dtype = device, dtype

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> float:
        self._sync()
        started = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            mask, nsp_logit = self.model(self.x)
            loss = (mask * self.x - self.x).abs().mean() + nsp_logit.float().square().mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._sync()
        return time.perf_counter() - started


def attention_table(args, device: torch.device) -> None:
    """One self-attention layer alone (projections, Q/K/V convs, positions, SDPA), forward + backward."""
    print("\n| tokens dims | heads | L | relative ms | rope ms | relative / rope |")
    print("|---|---|---|---|---|---|")
    for dims in (int(d) for d in args.attention_dims.split(",")):
        heads = load_model_preset("base").heads_at(dims)
        for length in (int(f) for f in args.frames.split(",")):
            torch.manual_seed(0)
            x = torch.randn(args.batch, length, dims, device=device)
            layers = {
                p: FrameAttention(
                    dims, heads, position=p, max_distance=load_model_preset("base").max_distance, qkv_conv_kernel=3
                ).to(device)
                for p in ("relative", "rope")
            }
            times: dict[str, list[float]] = {p: [] for p in layers}
            for round_index in range(args.warmup + args.repeats):
                for position, layer in layers.items():
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    started = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
                        out = layer(x)
                    out.float().square().mean().backward()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if round_index >= args.warmup:
                        times[position].append(time.perf_counter() - started)
            relative, rope = (statistics.median(times[p]) for p in ("relative", "rope"))
            print(
                f"| {dims} | {heads} | {length} | {1000 * relative:.1f} | {1000 * rope:.1f} | {relative / rope:.2f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--frames", default="256,512")
    parser.add_argument("--positions", default="relative,rope")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU).")
    parser.add_argument(
        "--checkpoint-blocks",
        action="store_true",
        help="Recompute transformer blocks in backward (less activation memory).",
    )
    parser.add_argument(
        "--attention-dims",
        default="128,512",
        help="Token widths for the attention-only table (128 = level 3, 512 = level 1); '' skips it.",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="The device's peak for --dtype (e.g. 989 for H100 SXM bf16 dense) to report MFU.",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    positions = args.positions.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"device {device}, dtype {args.dtype}, batch {args.batch}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, median of {args.repeats} after {args.warmup} warm-up"
    )
    mfu_header = " MFU |" if args.peak_tflops else ""
    print(
        f"\n| preset | T | position | params | train GFLOP/sample | s/step | ms/sample |{mfu_header} "
        f"vs {positions[0]} |"
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if args.peak_tflops else "") + "---|")
    for preset in args.presets.split(","):
        for frames in (int(f) for f in args.frames.split(",")):
            configs = {
                p: dataclasses.replace(load_model_preset(preset), position=p, checkpoint_blocks=args.checkpoint_blocks)
                for p in positions
            }
            timers = {p: StepTimer(cfg, args.batch, frames, device, args.dtype) for p, cfg in configs.items()}
            times: dict[str, list[float]] = {p: [] for p in positions}
            for round_index in range(args.warmup + args.repeats):
                for position in positions:
                    seconds = timers[position].step()
                    if round_index >= args.warmup:
                        times[position].append(seconds)
            reference = statistics.median(times[positions[0]])
            for position in positions:
                seconds = statistics.median(times[position])
                flops = training_flops(configs[position], args.batch, frames)
                params = sum(p.numel() for p in timers[position].model.parameters())
                mfu = f" {flops / seconds / (args.peak_tflops * 1e12):.1%} |" if args.peak_tflops else ""
                print(
                    f"| {preset} | {frames} | {position} | {params / 1e6:.1f}M | {flops / args.batch / 1e9:.1f} | "
                    f"{seconds:.3f} | {1000 * seconds / args.batch:.1f} |{mfu} {seconds / reference:.2f} |",
                    flush=True,
                )
            del timers
    if args.attention_dims:
        attention_table(args, device)


if __name__ == "__main__":
    main()
