"""The mixture pretext: an interfering crop of another track is mixed into part of each crop, and the
model must give back the primary — the separation task itself, on unlabelled music.

Why this and not only masked frames: a separator's mask must tell two sources apart where they overlap
(mixture-invariant training, Wisdom et al., NeurIPS 2020; WavLM's utterance mixing, Chen et al., 2022),
while reconstructing a masked frame rewards passing the input through everywhere else. Here the head,
the loss and the input statistics are those of `trainer finetune` (sigmoid mask times the input, L1 to
the primary, crops normalised to their max), so nothing of the pretext has to be unlearned.

How the primary is identifiable (as in WavLM, the interferer is the shorter and quieter one): it fills
the whole crop, the interferer one contiguous span of `mix_cover` of its frames (never the NSP
separator's), `mix_gain_db` relative to the primary (both crops normalised to their own max first):
below it by default; above it only over a span (the config refuses a louder interferer that may cover
the whole crop), where what enters and leaves is what to remove, as a voice over its band. The two
magnitudes add with an independent random phase per bin, `|a + g b e^(i phi)|`, which is what summing
two unrelated recordings does to their STFT magnitudes; the mixture and the target are then divided by
the mixture's max, the scale a fine-tune's pair crops have.

MixIT's two-output form (Wisdom et al., 2020, with as many outputs as mixtures) needs no identifiable
primary: with `model.output: mask_pair` the model gives back both sources through two masks and the
loss takes whichever assignment of outputs to sources is cheaper (trainer/pretrain/objective.py), so
the interferer may then be as loud as the primary over the whole crop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def partners(group: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """For each sample a uniformly random batch index of another group, and whether one exists."""
    batch = group.shape[0]
    other_group = group[:, None] != group[None, :]
    scores = torch.rand(batch, batch, generator=generator, device=group.device)
    scores = torch.where(other_group, scores, torch.full_like(scores, -1.0))
    return scores.argmax(dim=1), other_group.any(dim=1)


def random_phase_sum(a: Tensor, b: Tensor, generator: torch.Generator) -> Tensor:
    """|a + b e^(i phi)| with phi uniform per element: the magnitude of two independent sources summed."""
    cos = torch.cos(2.0 * math.pi * torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype))
    return (a.square() + b.square() + 2.0 * a * b * cos).clamp(min=0).sqrt()


def mix_interferers(
    primary: Tensor,
    group: Tensor,
    protected: Tensor,
    prob: float,
    gain_db: tuple[float, float],
    cover: tuple[float, float],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(mixture, primary, interferer, mixed): the batch `[B, 2, F, T]` with an interferer in a span of
    some samples, the primary and the interferer as mixed (0 outside its span) on the mixture's scale,
    and `[B, T]` bool: the frames holding an interferer.

    A sample is mixed with probability `prob` when the batch holds another group; `protected` `[T]`
    frames (the separator) never are. Draws come only from `generator`, in a fixed order.
    """
    batch, _, _, frames = primary.shape
    device = primary.device
    partner, has_partner = partners(group, generator)
    chosen = (torch.rand(batch, generator=generator, device=device) < prob) & has_partner
    gain = torch.empty(batch, device=device).uniform_(gain_db[0], gain_db[1], generator=generator)
    share = torch.empty(batch, device=device).uniform_(cover[0], cover[1], generator=generator)
    span = (share * frames).round().clamp(min=1, max=frames)
    start = torch.floor(torch.rand(batch, generator=generator, device=device) * (frames - span + 1))
    t = torch.arange(frames, device=device)[None, :]
    mixed = chosen[:, None] & (t >= start[:, None]) & (t < (start + span)[:, None]) & ~protected[None, :]

    scale = (10.0 ** (gain / 20.0)).to(primary.dtype)
    interferer = primary[partner] * scale[:, None, None, None] * mixed[:, None, None, :].to(primary.dtype)
    mixture = random_phase_sum(primary, interferer, generator)
    peak = mixture.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
    return mixture / peak, primary / peak, interferer / peak, mixed


__all__ = ["partners", "random_phase_sum", "mix_interferers"]
