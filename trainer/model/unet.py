"""The U-Net frame transformer: a U-Net that down/upsamples only along frequency, with transformer
blocks over frames at every level (SPEC section 4, the "Edit" paragraph of the original post).

Shapes: feature maps are [B, C, F, T]; every frame (time step) is a token, so T is never resampled and
any T >= 1 works. A transformer block sees one channel: a 1x1 "linear bottleneck" of the level's
channels gives tokens [B, T, F_level]; the block's output frame is concatenated back as a new channel
(dense, as in a DenseNet), so each level grows by one channel per block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.model.blocks import EvolvedDecoderBlock, EvolvedEncoderBlock
from trainer.model.config import ModelConfig


class FrameNorm(nn.Module):
    """Normalise each frame over (channels, bins): no statistics cross frames or samples."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        var, mean = torch.var_mean(x32, dim=(1, 2), keepdim=True, correction=0)
        return ((x32 - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias).to(x.dtype)


class FrameConv(nn.Sequential):
    """Nx1 convolution (mixes bins of one frame only), frame norm, GELU."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(channels_in, channels_out, (kernel, 1), stride=(stride, 1), padding=(kernel // 2, 0)),
            FrameNorm(channels_out),
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
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat((x, skip), dim=1))


def to_tokens(x: Tensor) -> Tensor:
    """[B, 1, F, T] -> [B, T, F]."""
    return x.squeeze(1).transpose(1, 2)


def to_channel(tokens: Tensor) -> Tensor:
    """[B, T, F] -> [B, 1, F, T]."""
    return tokens.transpose(1, 2).unsqueeze(1)


class DenseEncoderStack(nn.Module):
    """num_encoders times: bottleneck all channels so far to one, encode, append the result as a channel."""

    def __init__(self, channels: int, bins: int, count: int, cfg: ModelConfig):
        super().__init__()
        self.bottlenecks = nn.ModuleList(nn.Conv2d(channels + i, 1, 1) for i in range(count))
        self.blocks = nn.ModuleList(EvolvedEncoderBlock(bins, cfg) for _ in range(count))
        self.channels_out = channels + count

    def forward(self, x: Tensor) -> Tensor:
        for bottleneck, block in zip(self.bottlenecks, self.blocks):
            x = torch.cat((x, to_channel(block(to_tokens(bottleneck(x))))), dim=1)
        return x


class DenseDecoderStack(nn.Module):
    """Like DenseEncoderStack, with cross-attention to a bottleneck of the level's skip as memory."""

    def __init__(self, channels: int, skip_channels: int, bins: int, count: int, cfg: ModelConfig):
        super().__init__()
        self.bottlenecks = nn.ModuleList(nn.Conv2d(channels + i, 1, 1) for i in range(count))
        self.memory_bottlenecks = nn.ModuleList(nn.Conv2d(skip_channels, 1, 1) for _ in range(count))
        self.blocks = nn.ModuleList(EvolvedDecoderBlock(bins, cfg) for _ in range(count))
        self.channels_out = channels + count

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        for bottleneck, memory_bottleneck, block in zip(self.bottlenecks, self.memory_bottlenecks, self.blocks):
            tokens = block(to_tokens(bottleneck(x)), to_tokens(memory_bottleneck(skip)))
            x = torch.cat((x, to_channel(tokens)), dim=1)
        return x


class NextSentenceHead(nn.Module):
    """Per-frame projection of the bottleneck features, mean and max over time, one logit."""

    def __init__(self, channels: int, bins: int, hidden: int):
        super().__init__()
        self.frame_projection = nn.Linear(channels * bins, hidden)
        self.classifier = nn.Linear(2 * hidden, 1)

    def forward(self, features: Tensor) -> Tensor:
        frames = features.permute(0, 3, 1, 2).flatten(2)
        hidden = F.gelu(self.frame_projection(frames))
        pooled = torch.cat((hidden.mean(dim=1), hidden.amax(dim=1)), dim=-1)
        return self.classifier(pooled).squeeze(-1)


class FrameTransformerUNet(nn.Module):
    """forward(x [B, 2, bins, T]) -> (mask [B, 2, bins, T] in [0, 1], nsp_logit [B])."""

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
            self.frame_decoders.append(FrameDecoder(stack.channels_out, skip_channels[level - 1],
                                                    cfg.channels[level - 1], kernel))
            channels = cfg.channels[level - 1]

        self.mask_head = nn.Conv2d(channels, cfg.audio_channels, 1)
        self.nsp_head = NextSentenceHead(skip_channels[depth], cfg.level_bins(depth), cfg.nsp_hidden)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.cfg.audio_channels or x.shape[2] != self.cfg.bins:
            raise ValueError(f"expected input [B, {self.cfg.audio_channels}, {self.cfg.bins}, T], got {tuple(x.shape)}")
        skips = []
        h = x
        for frame_encoder, stack in zip(self.frame_encoders, self.encoder_stacks):
            h = stack(frame_encoder(h))
            skips.append(h)
        nsp_logit = self.nsp_head(h)
        for offset, (stack, frame_decoder) in enumerate(zip(self.decoder_stacks, self.frame_decoders)):
            level = self.cfg.num_downsamples - offset
            h = frame_decoder(stack(h, skips[level]), skips[level - 1])
        return torch.sigmoid(self.mask_head(h)), nsp_logit


def build_model(cfg: ModelConfig) -> FrameTransformerUNet:
    return FrameTransformerUNet(cfg)
