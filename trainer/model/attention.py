"""Attention over frames: bidirectional relative positions (Music Transformer) or RoPE.

Relative attention adds q_i . E[clip(j - i)] to the logits, where E holds one learned embedding per
distance -max_distance..max_distance and per head (distances beyond share the edge embedding, so
nothing is tied to the crop length). The [L, 2L-1] product Q @ E^T is "skewed" into [L, L] with a
pad/reshape, never materialising an [L, L, d] tensor. The Music Transformer skew is written for causal
attention, and a known public bidirectional implementation gets it wrong in a way that reduces the
term to absolute positions; tests/test_attention.py checks ours against an explicit lookup and for
shift-equivariance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relative_distance_index(length: int, max_distance: int, device=None) -> Tensor:
    """Row of the embedding table for each distance -(length-1)..(length-1), clipped to the table."""
    distances = torch.arange(-(length - 1), length, device=device)
    return distances.clamp(-max_distance, max_distance) + max_distance


def skew(rel: Tensor) -> Tensor:
    """[..., L, 2L-1] indexed by distance + L - 1  ->  [..., L, L] with out[..., i, j] = rel[..., i, j - i + L - 1]."""
    if rel.shape[-1] != 2 * rel.shape[-2] - 1:
        raise ValueError(f"skew needs [..., L, 2L-1], got {tuple(rel.shape)}")
    return _skew_padded(F.pad(rel, (0, 1)))


def _skew_padded(padded: Tensor) -> Tensor:
    """skew() of rows already padded to 2L (the last column is never read).

    Flat position i * 2L + (L - 1 - i + j) equals (L - 1) + i * (2L - 1) + j, so reading the flat buffer
    from L - 1 with row length 2L - 1 lines every row up on column j: a view, no copy.
    """
    length = padded.shape[-2]
    rows = padded.flatten(-2)[..., length - 1 : length - 1 + length * (2 * length - 1)]
    return rows.unflatten(-1, (length, 2 * length - 1))[..., :length]


def relative_logits(q: Tensor, table: Tensor, max_distance: int) -> Tensor:
    """q [B, H, L, D], table [H, 2 * max_distance + 1, D]  ->  [B, H, L, L] with q_i . table[clip(j - i)]."""
    length = q.shape[-2]
    # Rows of 2L columns (distances -(L-1)..(L-1) plus one the skew never reads) skip a pad copy.
    far = length - 1 - max_distance
    if far > 0:
        # Long sequences: multiply by the distinct embeddings only, then repeat the clipped edge
        # columns: a contiguous cat (an index_select gather along the last dim was 40% of a CPU layer).
        distinct = q @ table.transpose(-1, -2)
        edge_shape = distinct.shape[:-1]
        padded = torch.cat(
            (distinct[..., :1].expand(*edge_shape, far), distinct, distinct[..., -1:].expand(*edge_shape, far + 1)),
            dim=-1,
        )
    else:
        index = relative_distance_index(length, max_distance, q.device)
        padded = q @ table[:, torch.cat((index, index[-1:]))].transpose(-1, -2)
    return _skew_padded(padded)


def relative_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Tensor,
    max_distance: int,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    extra_bias: Tensor | None = None,
) -> Tensor:
    """softmax((q k^T + q E_rel^T) / sqrt(D) + extra_bias) v with queries and keys on the same frame axis.

    key_padding_mask [B, L] bool, True where a key must be ignored (e.g. zero-padded clip tails);
    extra_bias broadcasts to [B, H, L, L] (e.g. `distance_bias`).
    """
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"relative attention needs queries and keys on the same frames: {q.shape[-2]} vs {k.shape[-2]}"
        )
    # Scaling q (L x D) rather than the logits (L x L) saves a pass over the largest tensor.
    bias = relative_logits(q * (1.0 / math.sqrt(q.shape[-1])), table, max_distance)
    if extra_bias is not None:
        bias = bias + extra_bias
    if key_padding_mask is not None:
        bias = bias.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p)


def rotary_tables(length: int, head_dim: int, device, dtype, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def rope_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    extra_bias: Tensor | None = None,
) -> Tensor:
    """Rotary positions: q_i . k_j depends on i - j only, at the cost of one elementwise rotation."""
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"rope attention needs queries and keys on the same frames: {q.shape[-2]} vs {k.shape[-2]}")
    cos, sin = rotary_tables(q.shape[-2], q.shape[-1], q.device, q.dtype)
    mask = None
    if key_padding_mask is not None:
        mask = ~key_padding_mask[:, None, None, :]
    if extra_bias is not None:
        mask = extra_bias.to(q.dtype) if mask is None else extra_bias.to(q.dtype).masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(
        apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, attn_mask=mask, dropout_p=dropout_p
    )


class TimeDepthwiseConv(nn.Module):
    """Primer-EZ: a per-channel convolution over time (bidirectional 'same' padding) on [B, L, D]."""

    def __init__(self, dims: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(dims, dims, kernel, padding=kernel // 2, groups=dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class FrameAttention(nn.Module):
    """Multi-head attention over frames with Primer-EZ depthwise convs after each of Q, K and V.

    Self-attention when `memory` is None, else cross-attention to memory tokens on the same frames.
    """

    def __init__(
        self,
        dims: int,
        heads: int,
        *,
        position: str,
        max_distance: int,
        qkv_conv_kernel: int,
        dropout: float = 0.0,
        distance_bias: bool = False,
    ):
        super().__init__()
        if dims % heads:
            raise ValueError(f"attention width {dims} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dims // heads
        if position == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head width, got {self.head_dim}")
        self.q_proj = nn.Linear(dims, dims)
        self.k_proj = nn.Linear(dims, dims)
        self.v_proj = nn.Linear(dims, dims)
        self.q_conv = TimeDepthwiseConv(dims, qkv_conv_kernel)
        self.k_conv = TimeDepthwiseConv(dims, qkv_conv_kernel)
        self.v_conv = TimeDepthwiseConv(dims, qkv_conv_kernel)
        self.out_proj = nn.Linear(dims, dims)
        self.position, self.max_distance, self.dropout = position, max_distance, dropout
        if position == "relative":
            self.relative_table = nn.Parameter(torch.randn(heads, 2 * max_distance + 1, self.head_dim) * 0.02)
        elif position != "rope":
            raise ValueError(f"unknown position {position!r}")
        # one scalar per head and clipped distance, zero at init (ModelConfig.distance_bias)
        self.distance_bias = nn.Parameter(torch.zeros(heads, 2 * max_distance + 1)) if distance_bias else None

    def _distance_bias(self, length: int) -> Tensor | None:
        if self.distance_bias is None:
            return None
        t = torch.arange(length, device=self.distance_bias.device)
        index = (t[None, :] - t[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.distance_bias[:, index]  # [H, L, L]

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: Tensor, memory: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        memory = x if memory is None else memory
        q = self._heads(self.q_conv(self.q_proj(x)))
        k = self._heads(self.k_conv(self.k_proj(memory)))
        v = self._heads(self.v_conv(self.v_proj(memory)))
        dropout_p = self.dropout if self.training else 0.0
        extra = self._distance_bias(q.shape[-2])
        if self.position == "relative":
            out = relative_attention(
                q, k, v, self.relative_table, self.max_distance, key_padding_mask, dropout_p, extra_bias=extra
            )
        else:
            out = rope_attention(q, k, v, key_padding_mask, dropout_p, extra_bias=extra)
        return self.out_proj(out.transpose(1, 2).flatten(-2))
