"""Reference reconstructions of the selected frames (scored with objective.masked_l1, like the model).

A model is only interesting if it beats what needs no learning: copying the nearest frame the
corruption left intact, or interpolating each frequency bin linearly across the gap. Both only
look at frames that are neither selected nor separator (the "sources"); every other frame of
their output is the input unchanged. All functions are batched tensor ops on the input's device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _source_neighbours(selected: Tensor, separator: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For every frame, the nearest source frame at or before it and at or after it.

    Returns (previous, next, has_previous, has_next), each [B, T]; where a side has no source the
    index is clamped into range and its flag is False.
    """
    batch, frames = selected.shape
    source = ~selected
    if separator is not None:
        source = source & ~separator
    t = torch.arange(frames, device=selected.device).expand(batch, frames)
    previous = torch.where(source, t, torch.full_like(t, -1)).cummax(dim=1).values
    original_index_of_flipped = frames - 1 - t
    following = (
        torch.where(source.flip(1), original_index_of_flipped, torch.full_like(t, frames)).cummin(dim=1).values.flip(1)
    )
    has_previous = previous >= 0
    has_next = following < frames
    return previous.clamp(min=0), following.clamp(max=frames - 1), has_previous, has_next


def _frames_at(inp: Tensor, index: Tensor) -> Tensor:
    """inp[b, :, :, index[b, t]] for every (b, t): [B, C, F, T]."""
    batch, channels, bins, frames = inp.shape
    return torch.take_along_dim(inp, index[:, None, None, :].expand(batch, channels, bins, frames), dim=3)


def copy_nearest(inp: Tensor, selected: Tensor, separator: Tensor | None = None) -> Tensor:
    """Every selected frame <- the nearest frame that is neither selected nor separator.

    `inp` is [B, C, F, T], `selected` and the optional `separator` are [B, T] bool; pass the
    separator so its synthetic pattern is never copied. Ties go to the earlier frame. A sample with
    no source frame at all is returned unchanged.
    """
    previous, following, has_previous, has_next = _source_neighbours(selected, separator)
    t = torch.arange(selected.shape[1], device=selected.device)
    previous_is_nearer = (t - previous) <= (following - t)
    take_previous = has_previous & (previous_is_nearer | ~has_next)
    nearest = torch.where(take_previous, previous, following)
    fill = selected & (has_previous | has_next)
    return torch.where(fill[:, None, None, :], _frames_at(inp, nearest), inp)


def neighbour_frames(
    inp: Tensor, selected: Tensor, separator: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For every frame, the nearest source frames before and after it, the interpolation weight
    w = (t - prev) / (next - prev) of the later one, [B, 1, 1, T], and whether any source exists,
    [B, T]. A gap touching the crop's edge has one side only: both frames are that side's (w is 1 at
    the left edge, 0 at the right)."""
    previous, following, has_previous, has_next = _source_neighbours(selected, separator)
    t = torch.arange(selected.shape[1], device=selected.device)
    span = (following - previous).clamp(min=1)
    weight = ((t - previous) / span).to(inp.dtype)
    weight = torch.where(has_previous, weight, torch.ones_like(weight))  # left edge: only `next` exists
    weight = torch.where(has_next, weight, torch.zeros_like(weight))  # right edge: only `prev` exists
    before = _frames_at(inp, torch.where(has_previous, previous, following))
    after = _frames_at(inp, torch.where(has_next, following, previous))
    return before, after, weight[:, None, None, :], has_previous | has_next


def interpolate(inp: Tensor, selected: Tensor, separator: Tensor | None = None) -> Tensor:
    """Linear interpolation per bin across each gap of selected frames.

    Inside a gap, frame t gets (1 - w) * x[prev] + w * x[next] with w = (t - prev) / (next - prev),
    prev/next the nearest source frames (neither selected nor separator) on each side. A gap
    touching the crop's edge has one side only and takes that frame (constant extrapolation). A
    sample with no source frame at all is returned unchanged.
    """
    before, after, weight, has_source = neighbour_frames(inp, selected, separator)
    blended = (1 - weight) * before + weight * after
    fill = selected & has_source
    return torch.where(fill[:, None, None, :], blended, inp)


__all__ = ["copy_nearest", "interpolate", "neighbour_frames"]
