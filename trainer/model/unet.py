"""The U-Net frame transformer: a U-Net that down/upsamples only along frequency, with transformer
blocks over frames at every level (SPEC section 4, the "Edit" paragraph of the original post).

Every frame (time step) is a token and T is never resampled, so any T >= 1 works. Since the Nx1
convolutions never mix frames, the conv path keeps frames as the batch: feature maps are
[B * T, C, F] and an Nx1 Conv2d on [B, C, F, T] is a Conv1d over F. That makes the per-frame norm a
plain GroupNorm(1, C) and turns a level into transformer tokens [B, T, F] with a view, no transpose.

A transformer block sees one channel: a 1x1 "linear bottleneck" of the level's channels gives tokens
[B, T, F_level]; the block's output frame is concatenated back as a new channel (dense, as in a
DenseNet), so each level grows by one channel per block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from trainer.model.blocks import EvolvedDecoderBlock, EvolvedEncoderBlock
from trainer.model.config import HEAD_GROUPS, ModelConfig

# mask_detect: the learned part of the noise logit starts at 0; the rule decides (trainer.objective)
NOISE_PRIOR = 0.5


class FrameConv(nn.Sequential):
    """Nx1 convolution (bins of one frame only), norm over each frame's (channels, bins), GELU."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.Conv1d(channels_in, channels_out, kernel, stride=stride, padding=kernel // 2),
            nn.GroupNorm(1, channels_out),
            nn.GELU(),
        )


class FrameEncoder(nn.Sequential):
    """Halve the bins (stride 2x1) unless it is the first level, then one more Nx1 conv."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, downsample: bool):
        super().__init__(
            FrameConv(channels_in, channels_out, kernel, stride=2 if downsample else 1),
            FrameConv(channels_out, channels_out, kernel),
        )


class FrameDecoder(nn.Module):
    """Double the bins, concatenate the skip of that resolution, two Nx1 convs."""

    def __init__(self, channels_in: int, skip_channels: int, channels_out: int, kernel: int):
        super().__init__()
        self.convs = nn.Sequential(
            FrameConv(channels_in + skip_channels, channels_out, kernel),
            FrameConv(channels_out, channels_out, kernel),
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-1], mode="linear", align_corners=False)
        return self.convs(torch.cat((x, skip), dim=1))


def run_block(block: nn.Module, recompute: bool, *inputs: Tensor) -> Tensor:
    if recompute and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


def to_tokens(channel: Tensor, frames: int) -> Tensor:
    """One channel [B * T, 1, F] -> tokens [B, T, F]."""
    return channel.reshape(-1, frames, channel.shape[-1])


def to_channel(tokens: Tensor) -> Tensor:
    """Tokens [B, T, F] -> one channel [B * T, 1, F]."""
    return tokens.reshape(-1, 1, tokens.shape[-1])


class DenseEncoderStack(nn.Module):
    """num_encoders times: bottleneck all channels so far to one, encode, append the result as a channel."""

    def __init__(self, channels: int, bins: int, count: int, cfg: ModelConfig):
        super().__init__()
        self.bottlenecks = nn.ModuleList(nn.Conv1d(channels + i, 1, 1) for i in range(count))
        self.blocks = nn.ModuleList(EvolvedEncoderBlock(bins, cfg) for _ in range(count))
        self.channels_out = channels + count
        self.recompute = cfg.checkpoint_blocks

    def forward(self, x: Tensor, frames: int) -> Tensor:
        for bottleneck, block in zip(self.bottlenecks, self.blocks):
            tokens = run_block(block, self.recompute, to_tokens(bottleneck(x), frames))
            x = torch.cat((x, to_channel(tokens)), dim=1)
        return x


class DenseDecoderStack(nn.Module):
    """Like DenseEncoderStack, with cross-attention to a bottleneck of the level's skip as memory."""

    def __init__(self, channels: int, skip_channels: int, bins: int, count: int, cfg: ModelConfig):
        super().__init__()
        self.bottlenecks = nn.ModuleList(nn.Conv1d(channels + i, 1, 1) for i in range(count))
        self.memory_bottlenecks = nn.ModuleList(nn.Conv1d(skip_channels, 1, 1) for _ in range(count))
        self.blocks = nn.ModuleList(EvolvedDecoderBlock(bins, cfg) for _ in range(count))
        self.channels_out = channels + count
        self.recompute = cfg.checkpoint_blocks

    def forward(self, x: Tensor, skip: Tensor, frames: int) -> Tensor:
        for bottleneck, memory_bottleneck, block in zip(self.bottlenecks, self.memory_bottlenecks, self.blocks):
            tokens = run_block(
                block, self.recompute, to_tokens(bottleneck(x), frames), to_tokens(memory_bottleneck(skip), frames)
            )
            x = torch.cat((x, to_channel(tokens)), dim=1)
        return x


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def mask_head(channels: int, cfg: ModelConfig) -> nn.Conv1d:
    """1x1 conv to one mask logit per audio channel, its bias at logit(mask_prior); with
    `output: mask_fill` also one fill logit per channel (after the mask logits), at logit(fill_prior);
    with `mask_pair` two mask logits per channel, both at logit(mask_prior).

    A prior, like the bias init of focal-loss detectors: where the loss counts, the ideal mask is the
    clean magnitude over the corrupted input, which for the 80% of selected tokens set to 1.0 is the
    normalised magnitude itself, mostly ~1e-4..1e-2. From sigmoid(0) = 0.5, AdamW moves the bias by
    about lr per step towards ~-7: a 60-step tiny run ended ~150x worse than the baselines, against
    2.5x from this prior (docs/experiments.md, "The mask prior, on the demo").
    The weights keep their default init, so the initial mask still varies with the features.
    """
    outputs = cfg.audio_channels * HEAD_GROUPS[cfg.output]
    head = nn.Conv1d(channels, outputs, 1)
    if cfg.output == "mask_pair":  # two masks alike: each starts at the prior, told apart by its random weights
        with torch.no_grad():
            head.bias.fill_(_logit(cfg.mask_prior))
        return head
    with torch.no_grad():
        head.bias[: cfg.audio_channels] = _logit(cfg.mask_prior)
        head.bias[cfg.audio_channels : 2 * cfg.audio_channels] = _logit(cfg.fill_prior)
        head.bias[2 * cfg.audio_channels :] = _logit(NOISE_PRIOR)
        # the fill starts exactly at its prior (for mask_refine: the interpolation itself), so the first
        # steps are not spent undoing a random per-bin factor on loud bins
        head.weight[cfg.audio_channels :] = 0.0
    return head


def scale_input(x: Tensor, cfg: ModelConfig) -> Tensor:
    """ModelConfig.input_scale: "log" maps [0, 1] magnitudes to [0, 1] log magnitudes (0 at silence)."""
    if cfg.input_scale == "linear":
        return x
    floor = math.log(cfg.log_eps)
    return (torch.log(x.clamp(min=0) + cfg.log_eps) - floor) / -floor


class NextSentenceHead(nn.Module):
    """Per-frame projection of the bottleneck features, mean and max over time, one logit."""

    def __init__(self, channels: int, bins: int, hidden: int):
        super().__init__()
        self.frame_projection = nn.Linear(channels * bins, hidden)
        self.classifier = nn.Linear(2 * hidden, 1)

    def forward(self, features: Tensor, frames: int) -> Tensor:
        hidden = F.gelu(self.frame_projection(features.reshape(-1, frames, features.shape[1] * features.shape[2])))
        pooled = torch.cat((hidden.mean(dim=1), hidden.amax(dim=1)), dim=-1)
        return self.classifier(pooled).squeeze(-1)


class FrameTransformerUNet(nn.Module):
    """forward(x [B, 2, bins, T]) -> (head [B, 2, bins, T] in [0, 1], nsp_logit [B]).

    With `output: mask` the head is the mask; with `mask_fill` or `mask_refine` it is [B, 4, bins, T]
    (mask_detect: [B, 6, bins, T], then the noise weight per channel): the gate for
    each audio channel, then the fill value for each (trainer.objective.reconstruct combines them);
    with `mask_pair` it is [B, 4, bins, T], the masks of the two sources.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        kernel, depth = cfg.frame_kernel, cfg.num_downsamples
        self.frame_encoders = nn.ModuleList()
        self.encoder_stacks = nn.ModuleList()
        skip_channels = []
        channels = cfg.audio_channels
        for level in range(depth + 1):
            self.frame_encoders.append(FrameEncoder(channels, cfg.channels[level], kernel, downsample=level > 0))
            count = cfg.num_encoders if cfg.has_transformers(level) else 0
            stack = DenseEncoderStack(cfg.channels[level], cfg.level_bins(level), count, cfg)
            self.encoder_stacks.append(stack)
            channels = stack.channels_out
            skip_channels.append(channels)

        self.decoder_stacks = nn.ModuleList()
        self.frame_decoders = nn.ModuleList()
        for level in range(depth, 0, -1):
            count = cfg.num_decoders if cfg.has_transformers(level) else 0
            stack = DenseDecoderStack(channels, skip_channels[level], cfg.level_bins(level), count, cfg)
            self.decoder_stacks.append(stack)
            self.frame_decoders.append(
                FrameDecoder(stack.channels_out, skip_channels[level - 1], cfg.channels[level - 1], kernel)
            )
            channels = cfg.channels[level - 1]

        self.mask_head = mask_head(channels, cfg)
        self.nsp_head = NextSentenceHead(skip_channels[depth], cfg.level_bins(depth), cfg.nsp_hidden)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.cfg.audio_channels or x.shape[2] != self.cfg.bins:
            raise ValueError(f"expected input [B, {self.cfg.audio_channels}, {self.cfg.bins}, T], got {tuple(x.shape)}")
        batch, channels, bins, frames = x.shape
        h = scale_input(x, self.cfg).permute(0, 3, 1, 2).reshape(batch * frames, channels, bins)
        skips = []
        for frame_encoder, stack in zip(self.frame_encoders, self.encoder_stacks):
            h = stack(frame_encoder(h), frames)
            skips.append(h)
        nsp_logit = self.nsp_head(h, frames)
        for offset, (stack, frame_decoder) in enumerate(zip(self.decoder_stacks, self.frame_decoders)):
            level = self.cfg.num_downsamples - offset
            h = frame_decoder(stack(h, skips[level], frames), skips[level - 1])
        head = torch.sigmoid(self.mask_head(h))
        return head.reshape(batch, frames, -1, bins).permute(0, 2, 3, 1).contiguous(), nsp_logit


def build_model(cfg: ModelConfig) -> FrameTransformerUNet:
    return FrameTransformerUNet(cfg)
