"""Training throughput of `trainer pretrain` (tiny preset, CPU) against a bare optimisation loop.

    .venv/bin/python benchmarks/train_bench.py [--steps 20] [--warmup 3] [--bins 1024] [--workers 2] [--threads 1]

Two measurements in one process on the same model config:
  loop       the real `pretrain` (loader workers, corruptions, loss parts, NaN guard, metrics.jsonl,
             TensorBoard, progress bar) on generated shards; steps/s from the wall-clock times that
             metrics.jsonl records, after `--warmup` steps (worker start-up, first allocations);
  reference  forward + backward + clip + AdamW step on one pre-built, pre-corrupted batch in a
             plain Python loop: what the model alone costs.
The ratio loop / reference is the share of time the loop spends on the model (1.0 = no overhead).
The reference runs before and after the loop and is averaged, so load drift on a shared machine
biases neither side.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from pipeline import format as fmt
from trainer.config import load_config
from trainer.logs import read_metrics
from trainer.loop import make_optimizer, pretrain
from trainer.model import build_model
from trainer.pretrain.corrupt import corrupt_batch
from trainer.pretrain.objective import compute_loss


def write_shards(root: Path, bins: int, clip_frames: int, samples_per_shard: int = 16) -> None:
    """Random log-distributed magnitudes, 2 train shards and 1 val shard, 8 tracks."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    stft = fmt.STFTParams(n_fft=2 * bins).to_dict()
    for split, shards in (("train", 2), ("val", 1)):
        entries = []
        for shard in range(shards):
            name = fmt.shard_name(split, shard)
            with wds.TarWriter(str(root / name)) as sink:
                for i in range(samples_per_shard):
                    track = f"{split}{(shard * samples_per_shard + i) % 8:02d}"
                    spec = np.exp(rng.normal(0.0, 1.5, (2, bins, clip_frames))).astype(fmt.SPEC_DTYPE)
                    meta = fmt.SampleMeta(
                        track_id=track, clip=i, start_frame=0, valid_frames=clip_frames, album_key=track, stft=stft
                    )
                    sink.write(
                        {
                            "__key__": fmt.sample_key(track, i),
                            fmt.SPEC_KEY: fmt.encode_spec(spec),
                            fmt.META_KEY: fmt.encode_meta(meta),
                        }
                    )
            entries.append(fmt.ShardEntry(name, samples_per_shard, (root / name).stat().st_size))
        fmt.write_index(
            root / fmt.index_name(split),
            fmt.ShardIndex(
                split=split,
                shardlist=entries,
                stft=stft,
                clip_frames=clip_frames,
                totals={"samples": shards * samples_per_shard},
            ),
        )


def bare_steps_per_s(cfg, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = make_optimizer(model, cfg.optim, torch.device("cpu"))
    clean = torch.rand(cfg.data.batch_size, 2, cfg.model.bins, cfg.data.crop_frames)
    group = torch.arange(cfg.data.batch_size)
    corrupted = corrupt_batch(clean, group, cfg.corrupt, torch.Generator().manual_seed(0))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        head, nsp_logit = model(corrupted.input)
        loss, _, _ = compute_loss(head, nsp_logit, corrupted, cfg.loss, cfg.corrupt.nsp, cfg.model.output)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bins", type=int, default=1024, help="model.bins (the tiny preset has 1024)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the training process (1 on a small shared machine: spinning threads contend)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="train_bench_"))
    try:
        cfg = load_config(
            "tiny",
            overrides=[
                f"model.bins={args.bins}",
                f"data.num_workers={args.workers}",
                f"run.steps={args.warmup + args.steps}",
                "run.ckpt_every=100000",
                "run.val_every=100000",
                "run.image_every=100000",
            ],
        )
        write_shards(work / "shards", args.bins, clip_frames=2 * cfg.data.crop_frames)

        bare_before = bare_steps_per_s(cfg, args.steps, args.warmup)
        pretrain(cfg, str(work / "shards"), work / "run")
        rows = read_metrics(work / "run")
        loop_rate = args.steps / (rows[-1]["time"] - rows[args.warmup - 1]["time"])
        data_wait = float(np.mean([r["data_wait"] for r in rows[args.warmup :]]))
        bare_rate = (bare_before + bare_steps_per_s(cfg, args.steps, args.warmup)) / 2
    finally:
        shutil.rmtree(work, ignore_errors=True)

    batch = cfg.data.batch_size
    shape = f"[{batch}, 2, {args.bins}, {cfg.data.crop_frames}]"
    print(
        f"tiny preset, batch {shape}, {args.workers} loader workers, {torch.get_num_threads()} torch threads, "
        f"{args.steps} steps after {args.warmup} warm-up"
    )
    print("| measurement | steps/s | samples/s | data-wait share |")
    print("|---|---|---|---|")
    print(f"| `trainer pretrain` loop | {loop_rate:.3f} | {loop_rate * batch:.2f} | {data_wait:.3f} |")
    print(f"| bare forward/backward/AdamW (reference) | {bare_rate:.3f} | {bare_rate * batch:.2f} | - |")
    print(f"| ratio loop / reference | {loop_rate / bare_rate:.2f} | | |")


if __name__ == "__main__":
    main()
