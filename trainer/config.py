"""Training configuration: one dataclass per concern, loaded from a preset or a YAML file plus overrides.

A training YAML has the sections below; each may be partial (missing keys keep their defaults):

    model: tiny                      # a model preset name (trainer/model/presets/NAME.yaml) ...
    model: {preset: tiny, bins: 128} # ... or a preset plus field overrides, or a full mapping
    corrupt: {...}                   # CorruptConfig fields (below; trainer/pretrain/corrupt.py applies them)
    data: {...}  loss: {...}  optim: {...}  run: {...}  finetune: {...}

Overrides are `section.key=value` strings (the value is parsed as YAML, so `run.compile=true`,
`optim.betas=[0.9,0.99]`, `model.bins=128`). The resolved config (`to_dict`) names every field, so
the copy saved in runs/NAME/config.yaml reproduces the run without the preset files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.limits import MIX_GAIN_MAX_DB, check_section_limits, limit_problems
from trainer.model import ModelConfig, load_model_preset

PRESETS_DIR = Path(__file__).parent / "configs"
DECAYS = ("cosine", "linear")
TASK_PRETRAIN = "pretrain"  # trainer pretrain: masked tokens + next-sentence prediction
TASK_SEPARATION = "separation"  # trainer finetune: mixture -> instrumental mask (trainer/separation/task.py)
TASKS = (TASK_PRETRAIN, TASK_SEPARATION)


# The pretraining corruptions (trainer/pretrain/corrupt.py applies them).
PAIR_TASKS = ("nsp", "sop")


@dataclass
class CorruptConfig:
    token_frames: int = 16
    select_rate: float = 0.15
    mask_prob: float = 0.8
    noise_prob: float = 0.1  # the remaining 1 - mask_prob - noise_prob of selected tokens are kept
    mask_value: float = 1.0
    nsp_prob: float = 0.5  # probability that the pair is altered (label 0)
    nsp: bool = True  # the pair task on/off (separator and label); which task: pair_task
    pair_task: str = "nsp"  # "nsp": second half from another track; "sop": the two halves swapped
    # the mixture pretext (trainer/pretrain/mixture.py): share of crops with an interferer from another
    # track of the batch, its level relative to the primary in dB, and the share of the crop's frames it covers
    mix_prob: float = 0.0
    mix_gain_db: tuple[float, float] = (-9.0, -1.0)  # above 0: louder than the primary (identity_problems)
    mix_cover: tuple[float, float] = (0.25, 0.75)

    def __post_init__(self) -> None:
        if self.token_frames < 1:
            raise ValueError(f"token_frames must be >= 1, got {self.token_frames}")
        if not 0.0 <= self.select_rate <= 1.0:
            raise ValueError(f"select_rate must be in [0, 1], got {self.select_rate}")
        if self.mask_prob < 0 or self.noise_prob < 0 or self.mask_prob + self.noise_prob > 1.0 + 1e-9:
            raise ValueError(
                f"mask_prob ({self.mask_prob}) and noise_prob ({self.noise_prob}) must be >= 0 and sum to <= 1"
            )
        if self.pair_task not in PAIR_TASKS:
            raise ValueError(f"pair_task must be one of {PAIR_TASKS}, got {self.pair_task!r}")
        if not 0.0 <= self.nsp_prob <= 1.0:
            raise ValueError(f"nsp_prob must be in [0, 1], got {self.nsp_prob}")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {self.mix_prob}")
        low, high = self.mix_gain_db
        if not low <= high <= MIX_GAIN_MAX_DB:
            raise ValueError(
                f"mix_gain_db must be [low, high] dB with low <= high <= {MIX_GAIN_MAX_DB:g}, "
                f"got {list(self.mix_gain_db)}"
            )
        low, high = self.mix_cover
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"mix_cover must be [low, high] with 0 < low <= high <= 1, got {list(self.mix_cover)}")

    def identity_problems(self, output: str) -> list[str]:
        """What keeps the primary identifiable: a louder interferer over the whole crop would make it
        the primary, so only the span tells them apart; `mask_pair` gives back both sources and needs
        no primary (MixIT's best assignment)."""
        if output == "mask_pair":
            return []
        if self.mix_gain_db[1] > 0.0 and self.mix_cover[1] >= 1.0:
            return [
                f"corrupt.mix_gain_db above 0 dB ({list(self.mix_gain_db)}) needs mix_cover below 1 "
                f"(got {list(self.mix_cover)}): the primary is the source present throughout "
                "(or model.output mask_pair, which gives back both)"
            ]
        return []


@dataclass
class DataConfig:
    crop_frames: int = 512
    batch_size: int = 8  # per rank and micro-step
    num_workers: int = 2
    shuffle_buffer: int = 64  # cropped samples per loader worker
    val_batch_size: int = 8
    read_timeout: float = 60.0  # seconds an http(s) shard may send nothing before it is skipped
    tracks: list[str] = field(default_factory=list)  # train only on these track / pair ids ([]: all)
    extra_shards: str = ""  # a second training source (e.g. `trainer pseudo-label` pairs) ...
    extra_share: float = 0.5  # ... giving this share of the crops
    remix: float = 0.0  # separation: share of training crops rebuilt as target + another crop's residual


LOSS_DOMAINS = ("linear", "log")


@dataclass
class LossConfig:
    all_frames_weight: float = 0.0  # weight of the L1 over every frame, next to the masked-token L1
    nsp_weight: float = 1.0
    domain: str = "linear"  # "linear": L1 of magnitudes; "log": L1 of log(x + log_eps) (trainer.pretrain.objective)
    log_eps: float = 1e-3  # of the crop-max-normalised magnitudes: -60 dB

    def __post_init__(self) -> None:
        if self.domain not in LOSS_DOMAINS:
            raise ValueError(f"loss.domain must be one of {LOSS_DOMAINS}, got {self.domain!r}")
        if not self.log_eps > 0:
            raise ValueError(f"loss.log_eps must be > 0, got {self.log_eps}")


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    # AdamW's eps, PyTorch's default: a weight whose gradients are far below it barely moves (the L1 of
    # max-normalised magnitudes is ~1e-3, so deep layers' gradients can be; benchmarks/warm_start.py)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 100
    decay: str = "cosine"  # after warmup, from lr down to lr * min_lr_ratio at the last step
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping (the norm is still logged)
    accumulation: int = 1  # micro-batches per optimiser step


@dataclass
class RunConfig:
    steps: int = 10000
    log_every: int = 10  # TensorBoard scalars (metrics.jsonl gets every step)
    ckpt_every: int = 500  # also where the data stream restarts from a seed derived from (seed, step)
    keep_last: int = 3
    val_every: int = 500
    val_batches: int = 16
    image_every: int = 500
    seed: int = 0
    compile: bool = False
    max_bad_steps: int = 10  # stop after this many non-finite steps in a row
    task: str = TASK_PRETRAIN  # one of TASKS; set by the command (pretrain / finetune)
    init: str = ""  # finetune --init: the pretraining checkpoint the weights came from ("" = scratch)


FINETUNE_HEADS = ("auto", "keep", "reinit")


@dataclass
class FinetuneConfig:
    """How `trainer finetune --init` treats the pretrained weights (trainer/separation/task.py)."""

    # the mask head: "keep" it (a pretext whose head already is a separation mask), "reinit" it at
    # model.mask_prior, or "auto": keep when the checkpoint's head is such a mask (output "mask" and a
    # mixture pretext, or a separation checkpoint), else reinit
    head: str = "auto"
    freeze_steps: int = 0  # the first steps train the mask head only (linear probe, then fine-tune)
    trunk_lr_factor: float = 1.0  # every weight but the mask head learns at lr x this
    # shrink-and-perturb (Ash & Adams, 2020): each loaded weight becomes shrink x pretrained + perturb x
    # the seed's fresh initialisation, so (1, 0) is the pretrain as is and (0, 1) is scratch
    shrink: float = 1.0
    perturb: float = 0.0
    # the fine-tune's budget when a new `trainer finetune` run gets no --steps (nor --set run.steps):
    # a preset's pretrain and its fine-tune need different step counts; 0 = run.steps, as pretraining
    steps: int = 0

    def __post_init__(self) -> None:
        if self.head not in FINETUNE_HEADS:
            raise ValueError(f"finetune.head must be one of {FINETUNE_HEADS}, got {self.head!r}")
        if self.freeze_steps < 0:
            raise ValueError(f"finetune.freeze_steps must be >= 0, got {self.freeze_steps}")
        if self.steps < 0:
            raise ValueError(f"finetune.steps must be >= 0, got {self.steps}")
        if not 0.0 <= self.trunk_lr_factor <= 10.0:
            raise ValueError(f"finetune.trunk_lr_factor must be in [0, 10], got {self.trunk_lr_factor}")
        for name in ("shrink", "perturb"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"finetune.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.run.task not in TASKS:
            problems.append(f"run.task must be one of {TASKS}, got {self.run.task!r}")
        if self.optim.decay not in DECAYS:
            problems.append(f"optim.decay must be one of {DECAYS}, got {self.optim.decay!r}")
        problems += limit_problems(self)
        if self.run.task == TASK_PRETRAIN:
            problems += self.corrupt.identity_problems(self.model.output)
            if self.model.output == "mask_pair" and self.corrupt.mix_prob <= 0:
                problems.append(
                    "model.output mask_pair needs corrupt.mix_prob > 0: its second mask gives back the interferer"
                )
        elif self.run.task == TASK_SEPARATION and self.model.output != "mask":
            problems.append(
                f"run.task {self.run.task} trains one mask of the mixture: "
                f"model.output must be mask, got {self.model.output!r}"
            )
        if not isinstance(self.data.tracks, list) or not all(isinstance(t, str) and t for t in self.data.tracks):
            problems.append(f"data.tracks must be a list of track ids, got {self.data.tracks!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def memory_problems(self, available: int, what: str = "this machine's memory") -> list[str]:
        """The sizes that multiply into memory, against `available` bytes: a micro-batch's input and
        the activations the model saves for backward (about a float per channel, bin and frame of
        each level, a few times over, and one attention matrix), and every loader worker's shuffle
        buffer of float16 crops.
        Rough on purpose (`trainer summary` measures the model): it catches the impossible, up front."""
        m, d = self.model, self.data
        arrays = 2 if self.run.task == TASK_SEPARATION else 1  # a pair sample: mixture and target
        crop = d.crop_frames * m.bins * m.audio_channels
        levels = sum(c * (m.bins >> level) for level, c in enumerate(m.channels)) * d.crop_frames
        attention = m.num_heads * d.crop_frames**2 * 4  # one block's attention weights, every frame a token
        batch = d.batch_size * (crop * arrays * 4 + levels * 4 * 8 + attention)
        # a waiting crop holds 1 byte per value (log8 codes; a float16 crop 2): the least it can be
        buffers = max(1, d.num_workers) * d.shuffle_buffer * crop * arrays
        problems = []
        if batch > available:
            problems.append(
                f"data.batch_size {d.batch_size} x data.crop_frames {d.crop_frames} x model.bins {m.bins} "
                f"(x model.channels): at least {batch / 1e9:.3g} GB per micro-batch, more than {what} "
                f"({available / 1e9:.3g} GB)"
            )
        if buffers > available:
            problems.append(
                f"data.shuffle_buffer {d.shuffle_buffer} x data.num_workers {d.num_workers} x data.crop_frames "
                f"{d.crop_frames} x model.bins {m.bins}: at least {buffers / 1e9:.3g} GB of shuffle buffers, "
                f"more than {what} ({available / 1e9:.3g} GB)"
            )
        return problems

    def to_dict(self) -> dict:
        out = {"model": self.model.to_dict(), "corrupt": dataclasses.asdict(self.corrupt)}
        for name in ("data", "loss", "optim", "run", "finetune"):
            out[name] = dataclasses.asdict(getattr(self, name))
        out["optim"]["betas"] = list(self.optim.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        """Build from a (possibly partial) mapping; unknown sections or keys -> ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {', '.join(unknown)}")
        try:
            sections: dict[str, Any] = {"model": _resolve_model(data.get("model"), source)}
            sections["corrupt"] = _section(CorruptConfig, data.get("corrupt"), f"{source}: corrupt", "corrupt")
            for name, section_cls in (
                ("data", DataConfig),
                ("loss", LossConfig),
                ("optim", OptimConfig),
                ("run", RunConfig),
                ("finetune", FinetuneConfig),
            ):
                sections[name] = _section(section_cls, data.get(name), f"{source}: {name}", name)
            return cls(**sections)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(source) else f"{source}: {message}") from exc


def _section(cls, values: dict | None, where: str, section: str):
    values = values or {}
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {values!r}")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    defaults = cls()
    coerced = {k: _coerce(getattr(defaults, k), v, f"{where}.{k}") for k, v in values.items()}
    check_section_limits(section, coerced)
    return cls(**coerced)


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Accept what YAML legitimately gives (ints for floats, lists for tuples, "3e-4" as a string:
    PyYAML reads exponents without a dot as text); anything else of the wrong kind is a typo."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, (int, float)):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: reported below as the wrong kind
                value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # inf or nan (an inf learning rate trains NaN weights); a huge integer overflows float()
            if not (math.isfinite(value) if isinstance(value, float) else abs(value) < 2**63):
                raise ValueError(f"{where} must be a finite number, got {value!r}")
            if isinstance(default, float):
                return float(value)
            if float(value).is_integer():
                return int(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        if isinstance(value, (list, tuple)) and len(value) == len(default):
            return tuple(_coerce(d, v, where) for d, v in zip(default, value))
    elif isinstance(default, list) and default:  # any length, elements like the default's (model.channels)
        if isinstance(value, (list, tuple)):
            return [_coerce(default[0], v, where) for v in value]
    else:
        return value
    raise ValueError(f"{where} must be like {default!r}, got {value!r}")


def _resolve_model(spec: str | dict | None, source: str) -> ModelConfig:
    if spec is None:
        return ModelConfig()
    if isinstance(spec, str):
        return load_model_preset(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: model must be a preset name or a mapping, got {spec!r}")
    spec = dict(spec)
    preset = spec.pop("preset", None)
    base = load_model_preset(preset).to_dict() if preset else {}
    # typed like the training sections, so that a wrong value names its key (unknown keys: from_dict)
    defaults = ModelConfig()
    spec = {k: _coerce(getattr(defaults, k), v, f"model.{k}") if hasattr(defaults, k) else v for k, v in spec.items()}
    check_section_limits("model", spec)
    return ModelConfig.from_dict({**base, **spec})


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """["model.bins=128", "run.compile=true"] -> {"model": {"bins": 128}, "run": {"compile": True}}."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]  # str(): lines and a caret
            raise ValueError(f"override {item!r}: the value is not valid YAML ({reason})") from exc
        nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


def merge(base: dict, overrides: dict) -> dict:
    """Overrides win key by key inside each section; a model preset name becomes {"preset": name}."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for section, values in overrides.items():
        current = out.get(section)
        if isinstance(current, str) and section == "model":
            current = {"preset": current}
        out[section] = {**(current or {}), **values} if isinstance(values, dict) else values
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable config ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    preset: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
) -> TrainConfig:
    """Exactly one of preset / config_file / base (a dict, e.g. a run's saved config) is the starting point."""
    if sum(x is not None for x in (preset, config_file, base)) > 1:
        raise ValueError("give a preset, a config file or a base config, not several")
    if config_file is not None:
        data, source = read_yaml(config_file), str(config_file)
    elif base is not None:
        data, source = base, "saved config"
    else:
        name = preset or "tiny"
        path = PRESETS_DIR / f"{name}.yaml"
        if not path.exists():
            raise ValueError(f"unknown training preset {name!r} (known: {', '.join(preset_names())})")
        data, source = read_yaml(path), str(path)
    if overrides:
        data, source = merge(data, parse_overrides(overrides)), f"{source} + overrides"
    return TrainConfig.from_dict(data, source)


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (tmp + fsync + rename)."""
    from pipeline.durable import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
