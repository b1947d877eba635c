"""Where training runs and how its randomness is seeded: shared by pretraining, evaluation and preview."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

__all__ = ["autocast_for", "derive_seed", "pick_device"]


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device for `--device` (auto, cpu, cuda, cuda:N, mps); ValueError if it is not usable here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:  # torch's message for "gpu" etc. is a long list of every device type
        raise ValueError(f"--device {name}: not a device (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: Apple's MPS is not available on this machine (use cpu or auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: not supported (use auto, cpu, cuda, cuda:N or mps)")
    if device.type == "cuda":
        # checked here: torch's own failure at the first CUDA call is a traceback, not a message
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {name}: there is no {device} (this machine has {torch.cuda.device_count()} CUDA devices)"
            )
    return device


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slow and not what we measure)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def derive_seed(*parts: int) -> int:
    """A well-mixed 31-bit seed from integers (seed, step, rank, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)
