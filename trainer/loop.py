"""`trainer pretrain` / `trainer finetune`: the training loop, nanoGPT-style, readable top to bottom.

What is trained comes from a task object (trainer/tasks.py: pretraining or separation): the model,
one micro-batch's loss, the logged image, the validation. Everything else is this one loop.

Single process:  trainer pretrain --shards shards/ --preset tiny
DDP:             torchrun --standalone --nproc-per-node=N -- $(which trainer) pretrain ...
                 (NCCL on CUDA, gloo on CPU; the `--` stops torchrun from reading `--run` as its --run-path)

Resume and reproducibility. All randomness of training restarts at every checkpoint boundary (every
`run.ckpt_every` steps, in an uninterrupted run too) from seeds derived from (seed, step, rank): the
training data stream (`train_loader(seed=derive_seed(seed, step))`), the corruption generator and
torch's global RNG. The checkpoint therefore needs no per-rank RNG or loader position: its step is
the data position. A run killed at any instant and resumed replays exactly the batches, corruptions
and updates of an uninterrupted run after the last checkpoint:
  - exact (bit for bit) on CPU with the same num_workers and world size, as torch CPU kernels are
    deterministic for a fixed thread count;
  - on CUDA the same batches and corruptions, but non-deterministic kernels (atomics in backward)
    make losses drift at the level of float rounding (~1e-6 relative per step, growing slowly);
  - with a different num_workers or world size the stream is a different (equally valid) shuffle.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from trainer.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
    step_dir_name,
)
from trainer.config import TASK_SEPARATION, OptimConfig, TrainConfig, load_config, save_config
from trainer.device import derive_seed, pick_device
from trainer.logs import NullLog, RunLog


def lr_schedule(optim: OptimConfig, total_steps: int):
    """LambdaLR factor for optimiser step `step` (0-based): linear warmup, then cosine/linear decay to min_lr_ratio."""
    warmup = optim.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if optim.decay == "cosine" else 1.0 - progress
        return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * shape

    return factor


def make_optimizer(
    model: torch.nn.Module,
    optim: OptimConfig,
    device: torch.device,
    head: tuple[str, ...] = (),
    trunk_lr_factor: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices and kernels (not biases, norms, scalars), as in GPT-2/nanoGPT.
    With a `trunk_lr_factor` other than 1, the parameters outside the `head` name prefixes learn at
    lr x that factor (their own groups; the schedule scales every group alike)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    parts = [(named, optim.lr)]
    if trunk_lr_factor != 1.0:
        parts = [
            ([(n, p) for n, p in named if n.startswith(head)], optim.lr),
            ([(n, p) for n, p in named if not n.startswith(head)], optim.lr * trunk_lr_factor),
        ]
    groups = []
    for members, lr in parts:
        groups += [
            {"params": [p for _, p in members if p.dim() >= 2], "weight_decay": optim.weight_decay, "lr": lr},
            {"params": [p for _, p in members if p.dim() < 2], "weight_decay": 0.0, "lr": lr},
        ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=device.type == "cuda")


def trunk_parameters(model: torch.nn.Module, head: tuple[str, ...]) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(head)]


def _last_good(ckpt_dir: Path) -> str:
    last = latest_checkpoint(ckpt_dir)
    return f"the last good checkpoint {last} is intact" if last else f"no checkpoint was written to {ckpt_dir} yet"


def resolve_run(
    run_dir: str | os.PathLike,
    preset: str | None,
    config_file: str | None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
) -> tuple[TrainConfig, Path | None]:
    """The config and the checkpoint to continue from: an existing run continues with its saved config
    (plus overrides, e.g. more steps); a new run starts from the preset or config file."""
    checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    if checkpoint is None:
        if resume:
            raise ValueError(f"{run_dir}: --resume given but there is no checkpoint to continue from")
        return load_config(preset, config_file, overrides), None
    if preset or config_file:
        print(
            f"{run_dir}: continuing from {checkpoint.name} with the run's saved config; "
            f"--preset/--config ignored (use --set to change values)",
            file=sys.stderr,
        )
    return load_config(base=read_checkpoint_config(checkpoint), overrides=overrides), checkpoint


def check_memory(cfg: TrainConfig, dev: torch.device) -> None:
    """ValueError before the model is built or the run folder made, when the config's sizes cannot
    fit: the GPU's memory on CUDA, the machine's otherwise (the shuffle buffers are always in RAM)."""
    from pipeline.cli_types import machine_memory

    ram = machine_memory()
    problems = cfg.memory_problems(ram)
    if dev.type == "cuda":
        gpu = torch.cuda.get_device_properties(dev).total_memory
        problems = [p for p in problems if "micro-batch" not in p] + [
            p for p in cfg.memory_problems(gpu, f"the memory of {dev}") if "micro-batch" in p
        ]
    if problems:
        raise ValueError("; ".join(problems))


def default_val_shards(shards: str, say_so: bool = True) -> str | None:
    """A local shard directory with a val index validates on it; other sources need --val-shards.
    Without either, the user is told (`say_so`) that this run will not validate."""
    from pipeline.format import index_name

    path = Path(shards)
    if path.is_dir() and (path / index_name("val")).is_file():
        return shards
    if say_so:
        print(
            f"note: no validation: {shards} has no val split ({index_name('val')}); give --val-shards "
            "to validate and choose the best checkpoint",
            file=sys.stderr,
        )
    return None


def pretrain(
    cfg: TrainConfig,
    shards: str,
    run_dir: str | os.PathLike,
    val_shards: str | None = None,
    checkpoint: Path | None = None,
    device: str = "auto",
) -> dict:
    """Train the task of `cfg.run.task` until cfg.run.steps; returns the final training metrics
    (rank 0) or {} (other ranks)."""
    from trainer.data import eval_loader, shard_bins, train_loader
    from trainer.tasks import make_task

    # fail now, not after the run folder is made, the model built or at the first validation
    indexed_bins = [
        (source, shard_bins(source, split)) for source, split in ((shards, "train"), (val_shards, "val")) if source
    ]
    task = make_task(cfg, shards)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"

    # --- processes and device -------------------------------------------------------------
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if ddp:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    is_main = rank == 0
    check_memory(cfg, dev)
    for source, bins in indexed_bins:
        if bins is not None and bins != cfg.model.bins:
            raise ValueError(
                f"{source}: its index declares {bins} frequency bins but model.bins is {cfg.model.bins} "
                "(for shards of another n_fft: --set model.bins=...)"
            )

    # --- model, optimiser, schedule, state ------------------------------------------------
    torch.manual_seed(derive_seed(cfg.run.seed, 0, 0, 0))  # identical initial weights on every rank
    raw_model = task.build_model().to(dev)
    protocol = task.finetune_protocol()  # how pretrained weights are trained (defaults: like any others)
    optimizer = make_optimizer(raw_model, cfg.optim, dev, task.head_prefixes, protocol.trunk_lr_factor)
    trunk = trunk_parameters(raw_model, task.head_prefixes) if protocol.freeze_steps else []
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg.optim, cfg.run.steps))
    start_step = 0
    if checkpoint is not None:
        meta = load_checkpoint(checkpoint, raw_model, optimizer, scheduler, device=dev)
        start_step = int(meta["step"])
        origin = f"from {checkpoint}"
    else:
        origin = task.initialise(raw_model, dev)
    model = torch.compile(raw_model) if cfg.run.compile else raw_model
    if ddp:
        # a pretext without the pair task (the mixture pretext of the presets) leaves the NSP head out of
        # the loss, and DDP refuses parameters without a gradient unless told to look for them
        unused = task.name != TASK_SEPARATION and not cfg.corrupt.nsp
        device_ids = [dev.index] if dev.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)

    command = "trainer finetune" if task.name == TASK_SEPARATION else "trainer pretrain"
    log = RunLog(run_dir, start_step, command) if is_main else NullLog()
    if is_main:
        save_config(cfg, run_dir / "config.yaml")
        n_params = sum(p.numel() for p in raw_model.parameters())
        log.text("config", f"```\n{cfg.to_dict()}\n```\n{n_params:,} parameters, world size {world}, device {dev}")
        print(
            f"{run_dir}: {task.name}, {n_params:,} parameters on {dev} x{world}, "
            f"steps {start_step}->{cfg.run.steps} {origin}",
            file=sys.stderr,
        )

    generator = torch.Generator(device=dev)
    samples_per_step = cfg.data.batch_size * cfg.optim.accumulation * world
    grad_clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
    step, bad_steps, stream, last_parts = start_step, 0, None, {}
    progress = tqdm(total=cfg.run.steps, initial=start_step, disable=not is_main, dynamic_ncols=True, unit="step")
    model.train()

    # float16 batches on CUDA: the loader's CPU cost per sample drops ~35% and the host-to-device copy
    # halves (benchmarks/README.md, loader section); the values were float16 in the shards anyway.
    batch_dtype = torch.float16 if dev.type == "cuda" else torch.float32

    # --- the loop -------------------------------------------------------------------------
    try:
        while step < cfg.run.steps:
            if stream is None:  # at the start and after every checkpoint: reseed everything from (seed, step)
                torch.manual_seed(derive_seed(cfg.run.seed, step, rank, 1))
                generator.manual_seed(derive_seed(cfg.run.seed, step, rank, 2))
                stream = iter(
                    train_loader(
                        shards,
                        batch_size=cfg.data.batch_size,
                        crop_frames=cfg.data.crop_frames,
                        num_workers=cfg.data.num_workers,
                        seed=derive_seed(cfg.run.seed, step),
                        shuffle_buffer=cfg.data.shuffle_buffer,
                        dtype=batch_dtype,
                        read_timeout=cfg.data.read_timeout,
                        tracks=cfg.data.tracks,
                        extra=cfg.data.extra_shards or None,
                        extra_share=cfg.data.extra_share,
                    )
                )

            step_start, data_wait = time.perf_counter(), 0.0
            sums = None
            for micro in range(cfg.optim.accumulation):
                wait_start = time.perf_counter()
                batch = task.to_device(next(stream), dev)
                data_wait += time.perf_counter() - wait_start
                last_micro = micro == cfg.optim.accumulation - 1
                sync = contextlib.nullcontext() if (not ddp or last_micro) else model.no_sync()
                with sync:
                    loss, parts, draw_image = task.loss(model, batch, generator, dev)
                    (loss / cfg.optim.accumulation).backward()
                stacked = torch.stack([v.detach() for v in parts.values()])
                sums = stacked if sums is None else sums + stacked

            if step < protocol.freeze_steps:  # a frozen trunk: AdamW skips parameters without a gradient
                for p in trunk:
                    p.grad = None
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
            # Gradients are all-reduced, so every rank sees the same norm and takes the same branch.
            finite = bool(torch.isfinite(grad_norm))
            if finite:
                optimizer.step()
                bad_steps = 0
            else:
                bad_steps += 1
                if is_main:
                    tqdm.write(
                        f"warning: step {step + 1}: non-finite gradient norm ({float(grad_norm)}), "
                        f"update skipped ({bad_steps} in a row)",
                        file=sys.stderr,
                    )
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1

            # --- metrics: every step to metrics.jsonl, every log_every to TensorBoard ---------
            stats = torch.cat([sums / cfg.optim.accumulation, grad_norm.detach().float().reshape(1).to(sums.device)])
            if ddp:
                dist.all_reduce(stats)
                stats /= world
            if dev.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - step_start
            values = dict(zip(list(parts) + ["grad_norm"], stats.tolist()))
            values.update(
                lr=lr,
                skipped=float(not finite),
                samples_per_s=samples_per_step / elapsed,
                data_wait=data_wait / elapsed,
            )
            last_parts = values
            log.record(step, "train", values)
            if step % cfg.run.log_every == 0:
                log.scalars(step, "train", values)
            if step % cfg.run.image_every == 0 and is_main:
                log.image(step, task.image_tag, draw_image())
            progress.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
            progress.update(1)
            if bad_steps >= cfg.run.max_bad_steps:
                raise RuntimeError(
                    f"{bad_steps} non-finite steps in a row (run.max_bad_steps); stopping at step "
                    f"{step}, the last checkpoint in {ckpt_dir} is intact"
                )

            # --- validation (rank 0, bare model) and checkpoints ------------------------------
            # A failed validation still writes this step's checkpoint before the run stops, and a
            # non-finite validation loss or weight never reaches a checkpoint (nor `best`).
            at_end = step == cfg.run.steps
            val_result, val_error = None, None
            if val_shards and is_main and (step % cfg.run.val_every == 0 or at_end):
                try:
                    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                        loader = eval_loader(
                            val_shards,
                            batch_size=cfg.data.val_batch_size,
                            crop_frames=cfg.data.crop_frames,
                            max_batches=cfg.run.val_batches,
                            read_timeout=cfg.data.read_timeout,
                        )
                        val_result = task.validate(raw_model, loader, dev)
                except (ValueError, RuntimeError, OSError) as exc:
                    val_error = exc
                else:
                    log.record(step, "val", val_result.to_dict())
                    log.scalars(step, "val", val_result.to_dict())
                    tqdm.write(task.format_validation(val_result, f"validation at step {step}"), file=sys.stderr)
                    if not math.isfinite(val_result.loss):
                        raise RuntimeError(
                            f"validation loss at step {step} is {val_result.loss}: stopping without saving "
                            f"these weights; {_last_good(ckpt_dir)}"
                        )
            if step % cfg.run.ckpt_every == 0 or at_end or val_error is not None:
                if not all(bool(torch.isfinite(p).all()) for p in raw_model.parameters()):
                    raise RuntimeError(f"non-finite weights at step {step}: not saving them; {_last_good(ckpt_dir)}")
                if is_main:
                    save_checkpoint(
                        ckpt_dir,
                        step,
                        raw_model,
                        optimizer,
                        scheduler,
                        cfg.to_dict(),
                        meta={
                            **task.checkpoint_meta(),
                            "seed": cfg.run.seed,
                            "world_size": world,
                            "data": {"stream_seed": derive_seed(cfg.run.seed, step), "restart_step": step},
                        },
                        val_loss=val_result.loss if val_result is not None else None,
                        keep_last=cfg.run.keep_last,
                    )
                stream = None  # the next step starts a fresh stream seeded from (seed, step)
            if val_error is not None:
                raise RuntimeError(
                    f"validation at step {step} failed, checkpoint {ckpt_dir / step_dir_name(step)} saved "
                    f"(resume continues from it): {val_error}"
                ) from val_error
    finally:
        progress.close()
        log.close()
        if ddp:
            dist.destroy_process_group()
    return last_parts if is_main else {}
