"""ModelConfig: every size and switch of the U-Net frame transformer, and the YAML presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PRESETS_DIR = Path(__file__).with_name("presets")
POSITIONS = ("relative", "rope")
INPUT_SCALES = ("linear", "log")
OUTPUTS = ("mask", "mask_fill", "mask_refine", "mask_detect", "mask_pair")
HEAD_GROUPS = {"mask": 1, "mask_fill": 2, "mask_refine": 2, "mask_detect": 3, "mask_pair": 2}


@dataclass
class ModelConfig:
    bins: int = 1024  # input frequency bins; the tokens of level l have bins / 2**l dims
    audio_channels: int = 2  # stereo magnitude in, a mask per channel out
    num_downsamples: int = 5  # frequency-only (2x1 stride) downsamplings: 1024 -> 32 bins
    # Conv channels of each level (num_downsamples + 1 entries, full resolution first).
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])
    frame_kernel: int = 5  # N of the Nx1 frame convolutions
    num_encoders: int = 2  # transformer encoder blocks per level
    num_decoders: int = 2  # transformer decoder blocks before each frame decoder
    # Levels shallower than this get no transformer blocks: a block at the full 1024-bin resolution
    # alone costs ~20 * 1024**2 parameters, so the cheap presets start deeper.
    first_transformer_level: int = 0
    num_heads: int = 8
    min_head_dim: int = 16  # deep levels (32 bins) get fewer heads rather than tiny heads
    ffn_expansion: int = 4  # Primer feed-forward hidden = ffn_expansion * token dims
    conv_expansion: int = 4  # Evolved Transformer wide conv branch = conv_expansion * token dims
    position: str = "relative"  # "relative" (Music Transformer) or "rope"
    max_distance: int = 256  # relative embeddings for |j - i| <= max_distance, shared beyond
    qkv_conv_kernel: int = 3  # Primer-EZ depthwise conv over time after each of Q, K, V
    dropout: float = 0.1
    attention_dropout: float = 0.0
    nsp_hidden: int = 128
    # Initial value of the output mask (the mask head's bias is its logit): spectra normalised to the
    # sample's max are mostly far below 1, and 80% of selected tokens are 1.0 in the input, so the
    # mask must start near the typical magnitude, not at 0.5 (docs/experiments.md, "The mask prior, on the demo").
    mask_prior: float = 1e-3
    # What the network sees: "linear" magnitudes, or "log": (log(x + log_eps) - log(log_eps)) /
    # -log(log_eps), i.e. 0 at silence and 1 at the crop's max, so quiet bins are not all ~0.
    input_scale: str = "linear"
    log_eps: float = 1e-3
    # What the head predicts (trainer.objective.reconstruct): "mask", a sigmoid mask times the input
    # (the original design); "mask_fill", that mask as a gate g plus a fill value f (sigmoid, starting at
    # fill_prior): g * input + (1 - g) * f, with g = 0 on [MASK] frames, where the input holds no music;
    # "mask_refine", f is the interpolation across the [MASK] frames times the fill's odds f / (1 - f);
    # "mask_detect", mask_refine plus a per-frame noise weight (trainer.objective.reconstruct);
    # "mask_pair", two masks of the input, one per source of the mixture pretext, scored with the
    # cheaper of the two assignments (MixIT's two-output form; trainer.pretrain.objective.pair_estimates).
    output: str = "mask"
    fill_prior: float = 1e-3
    # A learned per-head bias for each clipped frame distance, added to the attention logits (zero at
    # init): lets a head prefer near frames without first learning it from content.
    distance_bias: bool = False
    # Recompute each transformer block during backward instead of keeping its activations: for the
    # base preset at long crops the blocks hold most of the activation memory (see `trainer summary`).
    checkpoint_blocks: bool = False

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]
        problems = []
        if len(self.channels) != self.num_downsamples + 1:
            problems.append(
                f"channels needs num_downsamples + 1 = {self.num_downsamples + 1} entries, got {len(self.channels)}"
            )
        if self.bins % (2**self.num_downsamples):
            problems.append(f"bins={self.bins} is not divisible by 2**num_downsamples={2**self.num_downsamples}")
        if self.position not in POSITIONS:
            problems.append(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.input_scale not in INPUT_SCALES:
            problems.append(f"input_scale must be one of {INPUT_SCALES}, got {self.input_scale!r}")
        if self.output not in OUTPUTS:
            problems.append(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if not 0 <= self.first_transformer_level <= self.num_downsamples + 1:
            problems.append(f"first_transformer_level must be in 0..{self.num_downsamples + 1}")
        if self.frame_kernel % 2 == 0 or self.qkv_conv_kernel % 2 == 0:
            problems.append("frame_kernel and qkv_conv_kernel must be odd (symmetric padding keeps sizes)")
        for name in ("mask_prior", "fill_prior", "log_eps"):
            try:  # YAML reads exponents without a dot ("1e-4") as text
                setattr(self, name, float(getattr(self, name)))
            except (TypeError, ValueError):
                problems.append(f"{name} must be a number, got {getattr(self, name)!r}")
            else:
                if not 0.0 < getattr(self, name) < 1.0:
                    problems.append(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("num_downsamples", "num_encoders", "num_decoders", "max_distance"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        for name in (
            "audio_channels",
            "num_heads",
            "min_head_dim",
            "ffn_expansion",
            "conv_expansion",
            "nsp_hidden",
            "frame_kernel",
            "qkv_conv_kernel",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def level_bins(self, level: int) -> int:
        return self.bins // (2**level)

    def heads_at(self, dims: int) -> int:
        """Heads for a token width: num_heads, fewer where heads would be narrower than min_head_dim."""
        heads = max(1, min(self.num_heads, dims // self.min_head_dim))
        while dims % heads:
            heads -= 1
        return heads

    def has_transformers(self, level: int) -> bool:
        return level >= self.first_transformer_level

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_model_preset(name: str) -> ModelConfig:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model preset {name!r} (no {path}); available: {', '.join(preset_names())}")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a mapping of ModelConfig fields")
    try:
        return ModelConfig.from_dict(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
