"""The bounds of every numeric config key: the one table `TrainConfig` checks (and the tests walk),
with the one-line message a value outside it gets (`data.batch_size must be an integer in [1, 65536],
got 0`). The rules are pipeline/cli_types.py's, so an option and the key it sets share one rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.cli_types import Float, Int

if TYPE_CHECKING:
    from trainer.config import TrainConfig

# Every numeric key and what it may be: the one table TrainConfig checks (and tests walk). Upper
# bounds are far above any real use and far below what overflows or cannot be allocated; sizes that
# multiply into memory are also checked together (`memory_problems`). Relations between keys
# (mask_prob + noise_prob <= 1, channels per level, ...) are checked by their sections.
_COUNT = 10**12
# the loudest interferer the mixture pretext allows over its primary (a vocal over its band often is louder)
MIX_GAIN_MAX_DB = 12.0
_SIZE = 2**20  # frames of a crop
LIMITS = {
    "model.bins": Int(1, 2**15),
    "model.audio_channels": Int(1, 8),
    "model.num_downsamples": Int(0, 15),
    "model.channels": Int(1, 8192),
    "model.frame_kernel": Int(1, 255),
    "model.num_encoders": Int(0, 256),
    "model.num_decoders": Int(0, 256),
    "model.first_transformer_level": Int(0, 16),
    "model.num_heads": Int(1, 1024),
    "model.min_head_dim": Int(1, 2**15),
    "model.ffn_expansion": Int(1, 64),
    "model.conv_expansion": Int(1, 64),
    "model.max_distance": Int(0, _SIZE),
    "model.qkv_conv_kernel": Int(1, 255),
    "model.dropout": Float(0.0, 1.0, high_open=True),
    "model.attention_dropout": Float(0.0, 1.0, high_open=True),
    "model.nsp_hidden": Int(1, 2**16),
    "model.mask_prior": Float(0.0, 1.0, low_open=True, high_open=True),
    "model.log_eps": Float(0.0, 1.0, low_open=True, high_open=True),
    "model.fill_prior": Float(0.0, 1.0, low_open=True, high_open=True),
    "corrupt.token_frames": Int(1, _SIZE),
    "corrupt.select_rate": Float(0.0, 1.0),
    "corrupt.mask_prob": Float(0.0, 1.0),
    "corrupt.noise_prob": Float(0.0, 1.0),
    "corrupt.mask_value": Float(-1e6, 1e6),
    "corrupt.nsp_prob": Float(0.0, 1.0),
    "corrupt.mix_prob": Float(0.0, 1.0),
    "corrupt.mix_gain_db": Float(-200.0, MIX_GAIN_MAX_DB),
    "corrupt.mix_cover": Float(0.0, 1.0, low_open=True),
    "data.crop_frames": Int(1, _SIZE),
    "data.batch_size": Int(1, 2**16),
    "data.num_workers": Int(0, 1024),
    "data.shuffle_buffer": Int(1, 2**20),
    "data.val_batch_size": Int(1, 2**16),
    "data.read_timeout": Float(0.0, 86400.0, low_open=True),
    "data.extra_share": Float(0.0, 1.0),
    "data.remix": Float(0.0, 1.0),
    "loss.all_frames_weight": Float(0.0, 1e6),
    "loss.nsp_weight": Float(0.0, 1e6),
    "loss.log_eps": Float(0.0, 1.0, low_open=True, high_open=True),
    "optim.lr": Float(0.0, 100.0, low_open=True),
    "optim.betas": Float(0.0, 1.0, high_open=True),
    "optim.eps": Float(0.0, 1.0, low_open=True),
    "optim.weight_decay": Float(0.0, 100.0),
    "optim.warmup_steps": Int(0, _COUNT),
    "optim.min_lr_ratio": Float(0.0, 1.0),
    "optim.grad_clip": Float(0.0, 1e12),
    "optim.accumulation": Int(1, 2**16),
    "run.steps": Int(0, _COUNT),
    "run.log_every": Int(1, _COUNT),
    "run.ckpt_every": Int(1, _COUNT),
    "run.keep_last": Int(1, 10**6),
    "run.val_every": Int(1, _COUNT),
    "run.val_batches": Int(1, 10**9),
    "run.image_every": Int(1, _COUNT),
    "run.seed": Int(0, 2**63 - 1),  # numpy's SeedSequence, which derives every stream's seed, refuses < 0
    "run.max_bad_steps": Int(1, 10**9),
    "finetune.freeze_steps": Int(0, _COUNT),
    "finetune.trunk_lr_factor": Float(0.0, 10.0),
    "finetune.shrink": Float(0.0, 1.0),
    "finetune.perturb": Float(0.0, 1.0),
    "finetune.steps": Int(0, _COUNT),
}


def limit_problems(cfg: TrainConfig) -> list[str]:
    """`key must be <what is allowed>, got <value>` for every value outside LIMITS."""
    problems = []
    for key in LIMITS:
        section, name = key.split(".")
        problems += _outside(key, getattr(getattr(cfg, section), name))
    return problems


def _outside(key: str, value: Any) -> list[str]:
    rule = LIMITS.get(key)
    if rule is None:
        return []
    several = isinstance(value, (list, tuple))
    if all(rule.accepts(v) for v in (value if several else [value])):
        return []
    shown = list(value) if several else value
    return [f"{key} must be {rule.allowed()}{' each' if several else ''}, got {shown!r}"]


def check_section_limits(section: str, values: dict) -> None:
    """The table's check on a section's coerced values before its dataclass is built: its own checks
    may compute with them (2 ** model.num_downsamples), which a huge value would never finish."""
    problems = [p for key, value in values.items() for p in _outside(f"{section}.{key}", value)]
    if problems:
        raise ValueError("; ".join(problems))


__all__ = ["LIMITS", "limit_problems", "check_section_limits"]
