"""The GPU numbers in one prepared run (issue 22), or the same code at tiny sizes on a CPU (`--smoke`).

    benchmarks/gpu_check.sh                    # on a CUDA machine: < 8 minutes on an H100, prints one table
    benchmarks/gpu_check.sh --smoke            # CPU, tiny sizes: the test suite's slow set runs this

What it measures, each with the real code (the pretraining task's corruption + loss, the loop, the
loader, `trainer separate`):

  step      one training step of the base preset at T = 512 frames in bf16 autocast (forward, backward,
            clip, AdamW: the loop's step without the data), median of `--repeats` after warm-up; MFU =
            the training FLOPs `trainer summary` counts (3x forward) x batch / step time / the card's
            dense bf16 peak (`--peak-tflops`, else looked up from the device name);
  memory    peak GPU memory (torch.cuda.max_memory_allocated) of that step at batch 1 and 2, with and
            without `model.checkpoint_blocks`; a line through the two gives the largest batch that
            fits a 12 GiB and an 80 GiB card (less `--reserve-gib` for the CUDA context and the
            allocator's slack), and each batch that fits this card is then run and measured;
  compile   the same step under torch.compile vs eager at the 12 GiB batch, and the compile time;
  loader    the real `trainer pretrain` loop with the base config as it is (its loader workers, batch
            and accumulation; float16 batches on CUDA) on generated shards in the default encoding:
            the share of each step spent waiting for data (metrics.jsonl's data_wait) after warm-up;
  separate  `trainer separate` of a synthetic track in a fresh process with the base preset's
            untrained separator and the command's default batch of windows: x real time.

Nothing is written outside `--work` (a temporary folder by default, removed afterwards).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TRAINER = [sys.executable, "-c", "from trainer.cli import main; main()"]  # this checkout's, run from REPO
GIB = 1 << 30

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity; GeForce cards with FP32 accumulation, as
# autocast uses) from the vendors' data sheets, by a substring of torch.cuda.get_device_name(); the
# first match wins, so the specific names come first. Any other card: --peak-tflops.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 4080", 97.0),
    ("RTX 4070", 58.0),
    ("RTX 3090", 71.0),
    ("RTX 3080", 59.5),
    ("RTX 3060", 25.5),
)


@dataclasses.dataclass
class Sizes:
    preset: str
    frames: int
    bins: int | None  # None: the preset's
    clip_frames: int
    repeats: int
    warmup: int
    loop_steps: int
    track_seconds: float
    model: tuple[str, ...] = ()  # overrides of the preset's model (the separator keeps the preset's)


FULL = Sizes("base", 512, None, 1024, repeats=5, warmup=2, loop_steps=30, track_seconds=60.0)
# a few-kB model with transformer blocks at every level: tracing the tiny preset for torch.compile
# alone takes minutes on a CPU
SMOKE = Sizes(
    "tiny",
    64,
    64,
    128,
    repeats=2,
    warmup=1,
    loop_steps=4,
    track_seconds=4.0,
    model=(
        "model.num_downsamples=2",
        "model.channels=[4,6,8]",
        "model.num_encoders=1",
        "model.num_decoders=1",
        "model.first_transformer_level=0",
        "model.num_heads=2",
        "model.max_distance=8",
        "model.nsp_hidden=8",
    ),
)


_STARTED = time.perf_counter()


def progress(what: str) -> None:
    print(f"gpu_check: {time.perf_counter() - _STARTED:5.0f} s: {what}", file=sys.stderr, flush=True)


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "given"
    if device.type != "cuda":
        return None, "no peak on a CPU"
    name = torch.cuda.get_device_name(device)
    for part, tflops in PEAK_BF16_TFLOPS:
        if part in name:
            return tflops, f"table entry {part!r}"
    return None, f"{name} not in the table: pass --peak-tflops"


def train_config(sizes: Sizes, overrides: list[str] = ()):
    from trainer.config import load_config

    settings = [f"data.crop_frames={sizes.frames}", *sizes.model]
    if sizes.bins:
        settings.append(f"model.bins={sizes.bins}")
    return load_config(sizes.preset, overrides=settings + list(overrides))


class Step:
    """The loop's training step on one fixed batch: corruption, bf16 forward, loss, backward, clip, AdamW."""

    def __init__(self, cfg, batch: int, device: torch.device, compiled: str | None = None):
        from trainer.loop import make_optimizer
        from trainer.pretrain.task import PretrainTask

        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.task = PretrainTask(cfg, "")
        self.raw = self.task.build_model().to(device).train()
        self.model = torch.compile(self.raw, backend=compiled) if compiled else self.raw
        self.optimizer = make_optimizer(self.raw, cfg.optim, device)
        spec = torch.from_numpy(
            np.exp(np.random.default_rng(0).normal(-4.0, 2.0, (batch, 2, cfg.model.bins, cfg.data.crop_frames)))
        )
        self.batch = {
            "spec": (spec / spec.amax(dim=(1, 2, 3), keepdim=True)).float().to(device),
            "group": torch.arange(batch, device=device),
        }
        self.generator = torch.Generator(device=device).manual_seed(0)

    def __call__(self) -> float:
        sync(self.device)
        started = time.perf_counter()
        loss, _, _ = self.task.loss(self.model, self.batch, self.generator, self.device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)
        return time.perf_counter() - started


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Step, sizes: Sizes) -> tuple[float, float]:
    """(median seconds per step after warm-up, seconds of the warm-up: compilation shows there)."""
    warm = sum(step() for _ in range(sizes.warmup))
    return statistics.median(step() for _ in range(sizes.repeats)), warm


def peak_memory(cfg, batch: int, device: torch.device) -> float | None:
    """Peak bytes allocated by one step (after a first one, so that AdamW's moments exist); None on a CPU
    or when it does not fit."""
    if device.type != "cuda":
        return None
    try:
        step = Step(cfg, batch, device)
        step()
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return float(torch.cuda.max_memory_allocated(device))
    except torch.OutOfMemoryError:
        return None
    finally:
        step = None
        torch.cuda.empty_cache()


def largest_batch(at1: float, at2: float, budget: float) -> int:
    """The largest batch whose peak, on the line through the peaks at batch 1 and 2, stays within budget."""
    per_sample = at2 - at1
    return max(0, math.floor((budget - (at1 - per_sample)) / per_sample)) if per_sample > 0 else 0


def memory_rows(sizes: Sizes, device: torch.device, reserve: float, table: list[list[str]]) -> int:
    """Rows of peak memory per card size and checkpoint_blocks; returns the 12 GiB batch (>= 1)."""
    if device.type != "cuda":
        table.append(["peak GPU memory", "n/a on a CPU", ""])
        return 1
    card = torch.cuda.get_device_properties(device).total_memory
    twelve = 1
    for blocks in (False, True):
        cfg = train_config(sizes, [f"model.checkpoint_blocks={str(blocks).lower()}"])
        at1, at2 = peak_memory(cfg, 1, device), peak_memory(cfg, 2, device)
        label = "checkpoint_blocks" if blocks else "no checkpointing"
        if at1 is None or at2 is None:
            table.append([f"peak memory, {label}", "batch 1 or 2 does not fit this card", ""])
            continue
        table.append([f"peak memory at batch 1 / 2, {label}", f"{at1 / GIB:.2f} / {at2 / GIB:.2f} GiB", ""])
        for card_gib in (12, 80):
            batch = largest_batch(at1, at2, card_gib * GIB - reserve)
            what = f"largest batch for a {card_gib} GiB card, {label}"
            if batch < 1:
                table.append([what, "none fits", f"batch 1 needs {at1 / GIB:.1f} GiB"])
                continue
            fits_here = at1 + (batch - 1) * (at2 - at1) < card - reserve
            measured = peak_memory(cfg, batch, device) if fits_here else None
            note = f"peak measured {measured / GIB:.2f} GiB" if measured else "predicted (more than this card holds)"
            table.append([what, f"{batch}", note])
            if card_gib == 12 and not blocks:
                twelve = batch
    return twelve


def step_rows(
    sizes: Sizes, device: torch.device, batch: int, peak: tuple[float | None, str], backend: str | None, table
) -> None:
    from trainer.model.summary import summarize

    cfg = train_config(sizes)
    flops = summarize(cfg.model, sizes.frames).training_flops * batch
    tflops, source = peak
    for compiled in (None, backend) if backend else (None,):
        seconds, warm = timed_steps(Step(cfg, batch, device, compiled), sizes)
        mfu = f"MFU {flops / seconds / (tflops * 1e12):.1%} of {tflops:g} TFLOP/s ({source})" if tflops else source
        name = f"step, batch {batch}, T={sizes.frames}, " + (f"torch.compile ({compiled})" if compiled else "eager")
        extra = f"; warm-up incl. compilation {warm:.0f} s" if compiled else ""
        table.append([name, f"{seconds * 1e3:.1f} ms ({batch / seconds:.1f} samples/s)", mfu + extra])
    table.append(["training FLOPs per sample (trainer summary, 3x forward)", f"{flops / batch / 1e9:,.1f} GFLOP", ""])


def write_shards(root: Path, sizes: Sizes, bins: int, samples: int = 48) -> None:
    """Generated samples in the default encoding, through the shard writer's own tar writer: 2 train shards."""
    from pipeline import format as fmt
    from pipeline.shard.write import ReproducibleTar

    root.mkdir(parents=True)
    stft = fmt.STFTParams(n_fft=2 * bins).to_dict()
    rng = np.random.default_rng(0)
    entries = []
    for shard in range(2):
        name = fmt.shard_name("train", shard)
        with open(root / name, "wb") as fh:
            tar = ReproducibleTar(fh)
            for i in range(samples // 2):
                track = f"t{(shard * samples + i) % 12:02d}"
                spec = np.exp(rng.normal(-4.0, 2.0, (2, bins, sizes.clip_frames))).astype(fmt.SPEC_DTYPE)
                meta = fmt.SampleMeta(track, i, 0, sizes.clip_frames, track, stft=stft)
                for suffix, data in fmt.encode_sample({"spec": spec}, meta, fmt.DEFAULT_ENCODING).items():
                    tar.add(f"{fmt.sample_key(track, i)}.{suffix}", data)
            tar.finish()
        entries.append(fmt.ShardEntry(name, samples // 2, (root / name).stat().st_size))
    index = fmt.ShardIndex(
        split="train",
        shardlist=entries,
        stft=stft,
        clip_frames=sizes.clip_frames,
        totals={"samples": samples},
        encoding=fmt.DEFAULT_ENCODING,
    )
    fmt.write_index(root / fmt.index_name("train"), index)


def loader_row(sizes: Sizes, device: torch.device, work: Path, table) -> None:
    from trainer.logs import read_metrics
    from trainer.loop import pretrain

    steps = sizes.warmup + sizes.loop_steps
    settings = [f"run.steps={steps}", "run.ckpt_every=1000000", "run.image_every=1000000", "run.val_every=1000000"]
    cfg = train_config(sizes, settings)
    write_shards(work / "shards", sizes, cfg.model.bins)
    pretrain(cfg, str(work / "shards"), work / "run", device=str(device))
    rows = read_metrics(work / "run")[sizes.warmup :]
    wait = float(np.mean([r["data_wait"] for r in rows]))
    rate = float(np.median([r["samples_per_s"] for r in rows]))
    table.append(
        [
            f"loader data-wait share, the preset's {cfg.data.num_workers} workers, batch {cfg.data.batch_size} x "
            f"{cfg.optim.accumulation} accumulation",
            f"{wait:.1%}",
            f"{rate:.1f} samples/s over {len(rows)} steps, {fmt_encoding()} shards, {os.cpu_count()} CPUs",
        ]
    )


def fmt_encoding() -> str:
    from pipeline import format as fmt

    return fmt.DEFAULT_ENCODING


def separate_row(sizes: Sizes, device: torch.device, work: Path, table) -> None:
    from pipeline import format as fmt
    from pipeline.demo.synth import encode, synth_music
    from trainer.checkpoint import save_checkpoint
    from trainer.config import TASK_SEPARATION
    from trainer.separation.finetune import resolve_finetune
    from trainer.separation.task import build_separation_model

    track = work / "track.flac"
    encode(synth_music(sizes.track_seconds, fmt.SAMPLE_RATE, 2, seed=7), fmt.SAMPLE_RATE, track)
    run = work / "separator"
    cfg, _ = resolve_finetune(run, sizes.preset, None)  # what `trainer finetune --preset` trains; untrained
    model = build_separation_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    meta = {"task": TASK_SEPARATION, "stft": fmt.STFTParams().to_dict()}
    save_checkpoint(run / "checkpoints", 1, model, optimizer, scheduler, cfg.to_dict(), meta=meta)
    del model, optimizer
    command = [*TRAINER, "separate", str(track), "--checkpoint", str(run), "--out", str(work / "separated")]
    started = time.perf_counter()
    subprocess.run([*command, "--device", str(device), "--quiet"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    table.append(
        [
            f"`trainer separate`, {sizes.preset} preset, {sizes.track_seconds:g} s track, default batch of windows",
            f"{sizes.track_seconds / wall:.1f}x real time",
            f"{wall:.1f} s wall in a fresh process (start-up and model load included)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--smoke", action="store_true", help="Tiny sizes on the CPU: checks the code, measures nothing."
    )
    parser.add_argument("--device", default=None, help="Default: cuda, or cpu with --smoke.")
    parser.add_argument("--peak-tflops", type=float, default=None, help="The card's dense bf16 peak, for MFU.")
    parser.add_argument("--reserve-gib", type=float, default=1.0, help="Kept free on a card: CUDA context, slack.")
    parser.add_argument(
        "--skip-compile", action="store_true", help="Leave out torch.compile (it compiles for minutes)."
    )
    parser.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile's backend [default: inductor; aot_eager with --smoke: tracing without code generation, "
        "which takes minutes on a CPU]",
    )
    parser.add_argument("--work", type=Path, default=None, help="Keep the files here (default: a temporary folder).")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --smoke runs on the CPU")
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as trainer.loop sets it
        torch.backends.cudnn.allow_tf32 = True
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    started = time.perf_counter()
    table: list[list[str]] = []
    try:
        progress("memory")
        batch = memory_rows(sizes, device, args.reserve_gib * GIB, table)
        progress("step time and MFU" + ("" if args.skip_compile else ", eager and torch.compile"))
        backend = None if args.skip_compile else args.compile_backend or ("aot_eager" if args.smoke else "inductor")
        step_rows(sizes, device, batch, peak_tflops(device, args.peak_tflops), backend, table)
        progress("loader data-wait in the training loop")
        loader_row(sizes, device, work / "loop", table)
        progress("trainer separate")
        separate_row(sizes, device, work / "separate", table)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{'SMOKE (tiny sizes, not a measurement): ' if args.smoke else ''}{name}, torch {torch.__version__}, "
        f"{sizes.preset} preset, T={sizes.frames}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"load average {os.getloadavg()[0]:.1f}, {time.perf_counter() - started:.0f} s in all\n"
    )
    print("| measurement | value | notes |\n|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
