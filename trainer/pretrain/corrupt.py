"""BERT-style corruptions of a batch of clean spectrogram crops, as batched tensor ops on its device.

Pure functions of (clean batch, track groups, config, generator): no Python loop over samples, no
host round-trips, so they run on the training device and are reproducible from the generator state
(validation seeds a fresh generator and gets the same corruptions every time).

Layout of one crop of T frames (SPEC section 3):

    tokens   |t0|t1|t2| ... |  separator  | ... |tN|    token = `token_frames` frames from the crop start
    halves   [---- first half ----][---- second half ----]   join at T // 2
    NSP      second half kept (label 1) or taken from another group's sample (label 0)
    SOP      (`pair_task: sop`, ALBERT's sentence-order prediction) halves kept in order (label 1) or
             swapped (label 0): the two halves always come from the same track

The separator (bins alternating 1, 0 along frequency) overwrites `token_frames // 2` frames on each
side of the join in input and target whenever NSP is on, whatever the label, so it carries no hint.
Tokens overlapping it are never selected. Of the selected tokens, `mask_prob` are set to
`mask_value` over all channels and bins, `noise_prob` become max(uniform noise, original), and the
rest stay unchanged (the model must still reconstruct them: they are in `selected`).

With `mix_prob` > 0 (the mixture pretext, trainer/pretrain/mixture.py) some crops also get an
interfering crop of another track in a span of frames; the target stays the primary, the frames holding
the interferer join `selected`, and masked or noised tokens apply on top of the mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.config import PAIR_TASKS, CorruptConfig  # the config lives with the others; re-exported here
from trainer.pretrain.mixture import mix_interferers, partners


@dataclass
class Corrupted:
    input: Tensor  # [B, 2, F, T] what the model sees
    target: Tensor  # [B, 2, F, T] clean crop (partner's second half if replaced) + separator
    selected: Tensor  # [B, T] bool: frames of selected tokens, where the masked-token loss counts
    separator: Tensor  # [B, T] bool: frames overwritten by the separator
    nsp_label: Tensor  # [B] float: 1.0 = second half is the continuation, 0.0 = altered (see pair_task)
    masked: Tensor | None = None  # [B, T] bool: selected frames set to mask_value (a subset of selected)
    noised: Tensor | None = None  # [B, T] bool: selected frames overlaid with noise; the rest of selected is intact
    mixed: Tensor | None = None  # [B, T] bool: frames holding an interferer (mix_prob > 0), also in selected
    interferer: Tensor | None = None  # [B, 2, F, T] the interferer as mixed, on the target's scale (mix_prob > 0)

    def changed(self) -> Tensor:
        """[B, T] bool: frames whose content differs from the clean crop's (masked or noised); the
        kept tenth of the selected tokens is intact and may be copied (baselines do, the model can)."""
        if self.masked is None or self.noised is None:
            return self.selected
        return self.masked | self.noised


def separator_span(frames: int, token_frames: int) -> tuple[int, int]:
    """[start, end): `token_frames // 2` frames on each side of the join at T // 2, clipped to the crop."""
    join, half_width = frames // 2, token_frames // 2
    return max(0, join - half_width), min(frames, join + half_width)


def separator_frames(frames: int, token_frames: int, device: torch.device | str | None = None) -> Tensor:
    """[T] bool: the frames of `separator_span`."""
    start, end = separator_span(frames, token_frames)
    t = torch.arange(frames, device=device)
    return (t >= start) & (t < end)


def separator_pattern(
    bins: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """[F] the separator's spectrum: 1, 0, 1, 0, ... along frequency (bin 0 is 1)."""
    return (torch.arange(bins, device=device) % 2 == 0).to(dtype)


def eligible_tokens(frames: int, token_frames: int, separator: Tensor) -> Tensor:
    """[n_tokens] bool: tokens (the last one may be partial) that overlap no separator frame."""
    n_tokens = -(-frames // token_frames)
    padded = torch.zeros(n_tokens * token_frames, dtype=torch.bool, device=separator.device)
    padded[:frames] = separator
    return ~padded.view(n_tokens, token_frames).any(dim=1)


def _count_eligible(frames: int, token_frames: int, span: tuple[int, int]) -> int:
    """How many tokens miss the separator span, on the host (so the device is never waited for)."""
    starts = range(0, frames, token_frames)
    return sum(1 for start in starts if min(start + token_frames, frames) <= span[0] or start >= span[1])


def _tokens_to_frames(token_mask: Tensor, token_frames: int, frames: int) -> Tensor:
    """[B, n_tokens] -> [B, T] by repeating each token over its frames."""
    return token_mask.repeat_interleave(token_frames, dim=1)[:, :frames]


def _apply_nsp(clean: Tensor, group: Tensor, cfg: CorruptConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace second halves with another group's (label 0) with probability nsp_prob; returns (target, label)."""
    batch, frames = clean.shape[0], clean.shape[-1]
    partner, has_partner = partners(group, generator)
    replace = (torch.rand(batch, generator=generator, device=clean.device) < cfg.nsp_prob) & has_partner
    join = frames // 2
    target = clean.clone()
    swapped_second_half = clean[partner, :, :, join:]
    target[:, :, :, join:] = torch.where(replace[:, None, None, None], swapped_second_half, clean[:, :, :, join:])
    return target, (~replace).to(clean.dtype)


def _apply_sop(clean: Tensor, cfg: CorruptConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Swap the two halves with probability nsp_prob (label 0): order, not topic, decides the label."""
    batch, frames = clean.shape[0], clean.shape[-1]
    swap = torch.rand(batch, generator=generator, device=clean.device) < cfg.nsp_prob
    swapped = torch.roll(clean, shifts=frames - frames // 2, dims=-1)  # [second half | first half]
    return torch.where(swap[:, None, None, None], swapped, clean), (~swap).to(clean.dtype)


def _select_tokens(
    eligible: Tensor, n_eligible: int, batch: int, cfg: CorruptConfig, generator: torch.Generator
) -> Tensor:
    """[B, n_tokens] bool: select_rate of the eligible tokens of each sample, at least one.

    The count is stochastically rounded (floor(rate * n + u)) so the expected share is exactly
    select_rate even for short crops, then raised to 1; the tokens are a uniform random subset.
    """
    n_tokens = eligible.shape[0]
    device = eligible.device
    rounding = torch.rand(batch, generator=generator, device=device)
    count = torch.floor(cfg.select_rate * n_eligible + rounding).clamp(min=1, max=n_eligible)
    scores = torch.rand(batch, n_tokens, generator=generator, device=device)
    scores = torch.where(eligible[None, :], scores, torch.full_like(scores, 2.0))  # ineligible sort last
    rank = scores.argsort(dim=1).argsort(dim=1)
    return rank < count[:, None]


def corrupt_batch(clean: Tensor, group: Tensor, cfg: CorruptConfig, generator: torch.Generator) -> Corrupted:
    """Corrupt a batch of clean crops `[B, 2, F, T]` in [0, 1] for masked-token + NSP pretraining.

    `group` (`[B]` long) is the track identity: an NSP partner always comes from a different group.
    When the whole batch is one group no partner exists: nothing is replaced and every NSP label is
    1.0 (in general, a sample with no other-group sample in the batch keeps its second half and
    label 1.0, so labels are only balanced when batches mix tracks). With `cfg.nsp` off there is no
    separator and every label is 1.0.

    Random draws come only from `generator` (which must live on `clean.device`), in a fixed order,
    so the same generator state gives the same corruption. Raises ValueError when the crop has no
    token outside the separator.
    """
    if clean.ndim != 4:
        raise ValueError(f"clean must be [B, 2, F, T], got shape {tuple(clean.shape)}")
    batch, _, bins, frames = clean.shape
    device = clean.device
    tf = cfg.token_frames

    # shapes and counts are worked out on the host: no tensor is read back, so nothing waits for the device
    span = separator_span(frames, tf) if cfg.nsp else (0, 0)
    n_eligible = _count_eligible(frames, tf, span)
    if n_eligible == 0:
        raise ValueError(
            f"a crop of {frames} frames has no token of {tf} frames outside the NSP separator; use a longer crop"
        )
    if cfg.nsp:
        if cfg.pair_task == "sop":
            target, nsp_label = _apply_sop(clean, cfg, generator)
        else:
            target, nsp_label = _apply_nsp(clean, group.to(device), cfg, generator)
        target[..., span[0] : span[1]] = separator_pattern(bins, device, clean.dtype)[:, None]  # [F, 1] over frames
        sep_frames = separator_frames(frames, tf, device)
    else:
        target = clean.clone()
        nsp_label = torch.ones(batch, dtype=clean.dtype, device=device)
        sep_frames = torch.zeros(frames, dtype=torch.bool, device=device)

    eligible = eligible_tokens(frames, tf, sep_frames)
    selected_tokens = _select_tokens(eligible, n_eligible, batch, cfg, generator)

    action = torch.rand(selected_tokens.shape, generator=generator, device=device)
    masked_tokens = selected_tokens & (action < cfg.mask_prob)
    noised_tokens = selected_tokens & (action >= cfg.mask_prob) & (action < cfg.mask_prob + cfg.noise_prob)
    masked = _tokens_to_frames(masked_tokens, tf, frames)[:, None, None, :]
    noised = _tokens_to_frames(noised_tokens, tf, frames)[:, None, None, :]

    noise = torch.rand(target.shape, generator=generator, device=device, dtype=target.dtype)
    source, mixed, interferer = target, None, None
    if cfg.mix_prob > 0:  # drawn last, so that without mixing every other draw is what it always was
        source, target, interferer, mixed = mix_interferers(
            target, group.to(device), sep_frames, cfg.mix_prob, cfg.mix_gain_db, cfg.mix_cover, generator
        )
    corrupted = torch.where(noised, torch.maximum(noise, source), source)
    corrupted = torch.where(masked, torch.full_like(corrupted, cfg.mask_value), corrupted)
    selected = _tokens_to_frames(selected_tokens, tf, frames)

    return Corrupted(
        input=corrupted,
        target=target,
        selected=selected if mixed is None else selected | mixed,
        separator=sep_frames[None, :].expand(batch, frames).clone(),
        nsp_label=nsp_label,
        masked=masked[:, 0, 0, :].clone(),
        noised=noised[:, 0, 0, :].clone(),
        mixed=mixed,
        interferer=interferer,
    )


__all__ = [
    "PAIR_TASKS",
    "CorruptConfig",
    "Corrupted",
    "corrupt_batch",
    "separator_span",
    "separator_frames",
    "separator_pattern",
    "eligible_tokens",
]
