"""Evolved Transformer encoder/decoder blocks with the Primer-EZ changes, on frame tokens [B, T, D].

Layouts follow So et al. 2019 (tensor2tensor's evolved_transformer), pre-norm, with the convolutions
padded on both sides (the sequence is a spectrogram, not generated left to right). Primer-EZ: squared
ReLU in the feed-forward, and a depthwise conv over time after each of Q, K, V (in FrameAttention).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from trainer.model.attention import FrameAttention
from trainer.model.config import ModelConfig


def pad_features(x: Tensor, width: int) -> Tensor:
    """Zero-extend the last dim to `width`: how ET adds a narrow conv branch to a wide one."""
    return F.pad(x, (0, width - x.shape[-1]))


class TimeConv(nn.Module):
    """Dense 1-D convolution over time on [B, T, C] with 'same' padding."""

    def __init__(self, dims_in: int, dims_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(dims_in, dims_out, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class SeparableTimeConv(nn.Module):
    """Depthwise conv over time followed by a pointwise projection, on [B, T, C]."""

    def __init__(self, dims_in: int, dims_out: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv1d(dims_in, dims_in, kernel, padding=kernel // 2, groups=dims_in)
        self.pointwise = nn.Linear(dims_in, dims_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x.transpose(1, 2)).transpose(1, 2))


class SquaredReLUFeedForward(nn.Module):
    def __init__(self, dims: int, expansion: int, dropout: float):
        super().__init__()
        self.expand = nn.Linear(dims, dims * expansion)
        self.contract = nn.Linear(dims * expansion, dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.contract(self.dropout(F.relu(self.expand(x)).square()))


def _attention(cfg: ModelConfig, dims: int) -> FrameAttention:
    return FrameAttention(
        dims,
        cfg.heads_at(dims),
        position=cfg.position,
        max_distance=cfg.max_distance,
        qkv_conv_kernel=cfg.qkv_conv_kernel,
        dropout=cfg.attention_dropout,
        distance_bias=cfg.distance_bias,
    )


class EvolvedEncoderBlock(nn.Module):
    """GLU -> (wide dense | narrow conv k=3) -> separable conv k=9 -> self-attention -> squared-ReLU FFN."""

    def __init__(self, dims: int, cfg: ModelConfig):
        super().__init__()
        wide, narrow = dims * cfg.conv_expansion, max(1, dims // 2)
        self.glu_norm = nn.LayerNorm(dims)
        self.glu = nn.Linear(dims, 2 * dims)
        self.conv_norm = nn.LayerNorm(dims)
        self.wide_branch = nn.Linear(dims, wide)
        self.narrow_branch = TimeConv(dims, narrow, 3)
        self.merge_norm = nn.LayerNorm(wide)
        self.separable = SeparableTimeConv(wide, narrow, 9)
        self.attention_norm = nn.LayerNorm(dims)
        self.attention = _attention(cfg, dims)
        self.ffn_norm = nn.LayerNorm(dims)
        self.ffn = SquaredReLUFeedForward(dims, cfg.ffn_expansion, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(F.glu(self.glu(self.glu_norm(x)), dim=-1))
        h = self.conv_norm(x)
        wide = self.dropout(F.relu(self.wide_branch(h)))
        narrow = self.dropout(F.relu(self.narrow_branch(h)))
        h = self.merge_norm(wide + pad_features(narrow, wide.shape[-1]))
        x = x + self.dropout(pad_features(self.separable(h), x.shape[-1]))
        x = x + self.dropout(self.attention(self.attention_norm(x)))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class EvolvedDecoderBlock(nn.Module):
    """(self-attention | cross-attention) -> (sep conv k=11 | sep conv k=7) -> sep conv k=7
    -> self-attention -> cross-attention -> squared-ReLU FFN. Memory: tokens on the same frames."""

    def __init__(self, dims: int, cfg: ModelConfig):
        super().__init__()
        wide, narrow = dims * max(1, cfg.conv_expansion // 2), max(1, dims // 2)
        self.memory_norm = nn.LayerNorm(dims)
        self.parallel_norm = nn.LayerNorm(dims)
        self.parallel_self_attention = _attention(cfg, dims)
        self.parallel_cross_attention = _attention(cfg, dims)
        self.conv_norm = nn.LayerNorm(dims)
        self.wide_branch = SeparableTimeConv(dims, wide, 11)
        self.narrow_branch = SeparableTimeConv(dims, narrow, 7)
        self.merge_norm = nn.LayerNorm(wide)
        self.separable = SeparableTimeConv(wide, dims, 7)
        self.self_attention_norm = nn.LayerNorm(dims)
        self.self_attention = _attention(cfg, dims)
        self.cross_attention_norm = nn.LayerNorm(dims)
        self.cross_attention = _attention(cfg, dims)
        self.ffn_norm = nn.LayerNorm(dims)
        self.ffn = SquaredReLUFeedForward(dims, cfg.ffn_expansion, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        memory = self.memory_norm(memory)
        h = self.parallel_norm(x)
        x = x + self.dropout(self.parallel_self_attention(h)) + self.dropout(self.parallel_cross_attention(h, memory))
        h = self.conv_norm(x)
        wide = self.dropout(F.relu(self.wide_branch(h)))
        narrow = self.dropout(self.narrow_branch(h))
        h = self.merge_norm(wide + pad_features(narrow, wide.shape[-1]))
        x = x + self.dropout(self.separable(h))
        x = x + self.dropout(self.self_attention(self.self_attention_norm(x)))
        x = x + self.dropout(self.cross_attention(self.cross_attention_norm(x), memory))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))
