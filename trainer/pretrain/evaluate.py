"""Validation on one yardstick: the model against two baselines that need no learning.

Every model is scored on the same fixed corruption, whatever it was trained with: the original
16-frame tokens, 15% selected, 80/10/10 (`yardstick`), on the same val crops, with a freshly seeded
generator, so runs and ablation rows compare (a longer training gap would otherwise weaken the
baselines and flatter the model). The mask value and the pair task (NSP, SOP or none) stay the
model's own, since they are part of its input. Two evaluations of the same weights on the same
shards give the same numbers (on the same device), during training and from `trainer evaluate`.

The baselines fill every changed frame (masked or noised) from the nearest intact ones, where intact
includes the selected tokens left unchanged (80/10/10's last tenth): the model sees those frames
unchanged too, so a baseline that skipped them would be handicapped (with that handicap an
untrained gate-and-interpolate model scored 0.69x interpolation on the demo).

Each reconstruction (model, copy-nearest, interpolation) is scored on the selected frames only, each
frame weighted equally: L1 of the max-normalised magnitudes (overall and per band: lows < 250 Hz,
mids 250 Hz - 4 kHz, highs above; and on the [MASK] frames alone, "gaps", where no model can use
the input and the noised tenth, which the model must first detect, does not count), and the
log-spectral distance (dB RMS over bins, per frame,
magnitudes floored at -100 dB re the crop's max).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from trainer.config import LossConfig
from trainer.device import autocast_for, pick_device
from trainer.pretrain.baselines import copy_nearest, interpolate
from trainer.pretrain.corrupt import CorruptConfig, corrupt_batch
from trainer.pretrain.objective import compute_loss

EVAL_SEED = 1234
BANDS_HZ = (("lows", 0.0, 250.0), ("mids", 250.0, 4000.0), ("highs", 4000.0, math.inf))
LSD_FLOOR_DB = -100.0
RECONSTRUCTIONS = ("model", "copy_nearest", "interpolate")
PER_SAMPLE_PARTS = {"all": "all_frames_l1", "bce": "nsp_bce", "loss": "loss", "correct": "nsp_accuracy"}
METRICS = ("l1", "lsd") + tuple(f"l1_{name}" for name, _, _ in BANDS_HZ) + ("l1_gaps",)


def yardstick(trained: CorruptConfig) -> CorruptConfig:
    """The evaluation corruption: the original tokens and rates, the model's mask value and pair task,
    no interferer (the mixture pretext has its own score, `evaluate_mixture`)."""
    return dataclasses.replace(trained, token_frames=16, select_rate=0.15, mask_prob=0.8, noise_prob=0.1, mix_prob=0.0)


def mixture_yardstick(trained: CorruptConfig) -> CorruptConfig:
    """The mixture pretext's fixed corruption: every crop mixed (gain and cover as trained), no masked
    tokens and no pair task, so the score is the separation of the primary alone."""
    return dataclasses.replace(trained, mix_prob=1.0, select_rate=0.0, mask_prob=0.0, noise_prob=0.0, nsp=False)


def band_masks(bins: int, sample_rate: float = 44100.0) -> dict[str, Tensor]:
    """[F] bool per band; bin k is at k * sample_rate / (2 * bins) Hz (the shards' n_fft = 2 * bins)."""
    hz = torch.arange(bins) * (sample_rate / (2 * bins))
    return {name: (hz >= low) & (hz < high) for name, low, high in BANDS_HZ}


def frame_errors(pred: Tensor, target: Tensor, selected: Tensor, bands: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sums over the selected frames: |error| per band and overall (per element) and LSD (per frame).

    Returns 0-d tensors; divide "l1*" by the selected elements of that band and "lsd" by selected frames.
    """
    weight = selected[:, None, None, :].to(pred.dtype)  # [B, 1, 1, T]
    error = (pred - target).abs() * weight
    out = {"l1": error.sum()}
    for name, band in bands.items():
        out[f"l1_{name}"] = error[:, :, band.to(pred.device)].sum()
    floor = 10.0 ** (LSD_FLOOR_DB / 20.0)
    db = 20.0 * (torch.log10(pred.clamp(min=floor)) - torch.log10(target.clamp(min=floor)))
    per_frame = db.square().mean(dim=2).sqrt().mean(dim=1)  # [B, T]: RMS over bins, mean over channels
    out["lsd"] = (per_frame * selected).sum()
    return out


@dataclass
class EvalResult:
    batches: int
    samples: int
    selected_frames: int
    scores: dict[str, dict[str, float]]  # RECONSTRUCTIONS -> METRICS
    all_frames_l1: float  # in the loss domain
    nsp_bce: float
    nsp_accuracy: float
    nsp_chance: float  # accuracy of always answering the majority label of these samples
    loss: float  # the training objective (objective.compute_loss), for choosing the best checkpoint
    corruption: dict = field(default_factory=dict)
    # the mixture pretext (`evaluate_mixture`), when trained with one: model / pass-through L1 on the
    # frames holding an interferer; then `loss` is that model L1, the pretext's own objective
    pretext: dict = field(default_factory=dict)

    @property
    def model_l1(self) -> float:
        return self.scores["model"]["l1"]

    @property
    def copy_nearest_l1(self) -> float:
        return self.scores["copy_nearest"]["l1"]

    @property
    def interpolate_l1(self) -> float:
        return self.scores["interpolate"]["l1"]

    def ratio(self, baseline: str, metric: str = "l1") -> float:
        reference = self.scores[baseline][metric]
        return self.scores["model"][metric] / reference if reference > 0 else float("nan")

    @property
    def ratio_copy(self) -> float:
        return self.ratio("copy_nearest")

    @property
    def ratio_interpolate(self) -> float:
        return self.ratio("interpolate")

    def to_dict(self) -> dict:
        """Flat numbers (metrics.jsonl, TensorBoard): model_l1, copy_nearest_lsd, model_l1_lows, ..."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("scores", "corruption", "pretext")}
        out.update({f"pretext_{k}": v for k, v in self.pretext.items()})
        for name, metrics in self.scores.items():
            out.update({f"{name}_{metric}": value for metric, value in metrics.items()})
        return {**out, "ratio_copy": self.ratio_copy, "ratio_interpolate": self.ratio_interpolate}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict],
    corrupt_cfg: CorruptConfig,
    device: torch.device,
    loss_cfg: LossConfig | None = None,
    seed: int = EVAL_SEED,
    output: str = "mask",
) -> EvalResult:
    """Score `model` (a bare module, not DDP-wrapped) on every batch with `corrupt_cfg` as given (pass
    `yardstick(cfg.corrupt)` for the comparable numbers); restores its train/eval mode."""
    loss_cfg = loss_cfg or LossConfig()
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    sums = {name: dict.fromkeys(METRICS, 0.0) for name in RECONSTRUCTIONS}
    band_elements = dict.fromkeys(METRICS, 0)
    per_sample = dict(all=0.0, bce=0.0, loss=0.0, correct=0.0, label=0.0)
    n_batches = n_samples = n_selected = 0
    bands = None
    try:
        for batch in batches:
            clean = batch["spec"].to(device, non_blocking=True).float()
            group = batch["group"].to(device, non_blocking=True)
            corrupted = corrupt_batch(clean, group, corrupt_cfg, generator)
            with autocast_for(device):
                head, nsp_logit = model(corrupted.input)
            _, parts, reconstruction = compute_loss(head, nsp_logit, corrupted, loss_cfg, corrupt_cfg.nsp, output)
            if bands is None:
                bands = band_masks(clean.shape[2])
            candidates = {
                "model": reconstruction,
                "copy_nearest": copy_nearest(corrupted.input, corrupted.changed(), corrupted.separator),
                "interpolate": interpolate(corrupted.input, corrupted.changed(), corrupted.separator),
            }
            gaps = corrupted.masked if corrupted.masked is not None else corrupted.selected
            for name, pred in candidates.items():
                for metric, value in frame_errors(pred, corrupted.target, corrupted.selected, bands).items():
                    sums[name][metric] += float(value)
                sums[name]["l1_gaps"] += float(frame_errors(pred, corrupted.target, gaps, {})["l1"])
            frames, samples = int(corrupted.selected.sum()), clean.shape[0]
            elements_per_frame = clean.shape[1]
            band_elements["l1"] += frames * elements_per_frame * clean.shape[2]
            band_elements["lsd"] += frames
            band_elements["l1_gaps"] += int(gaps.sum()) * elements_per_frame * clean.shape[2]
            for band_name, band in bands.items():
                band_elements[f"l1_{band_name}"] += frames * elements_per_frame * int(band.sum())
            for key, part in (
                ("all", "all_frames_l1"),
                ("bce", "nsp_bce"),
                ("loss", "loss"),
                ("correct", "nsp_accuracy"),
            ):
                per_sample[key] += float(parts[part]) * samples
            per_sample["label"] += float(corrupted.nsp_label.sum())
            n_batches += 1
            n_samples += samples
            n_selected += frames
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("no validation batches: the shards are empty or unreadable")
    scores = {
        name: {metric: value / max(band_elements[metric], 1) for metric, value in metrics.items()}
        for name, metrics in sums.items()
    }
    positive = per_sample["label"] / n_samples
    return EvalResult(
        batches=n_batches,
        samples=n_samples,
        selected_frames=n_selected,
        scores=scores,
        all_frames_l1=per_sample["all"] / n_samples,
        nsp_bce=per_sample["bce"] / n_samples,
        nsp_accuracy=per_sample["correct"] / n_samples,
        nsp_chance=max(positive, 1.0 - positive),
        loss=per_sample["loss"] / n_samples,
        corruption=dataclasses.asdict(corrupt_cfg),
    )


@torch.no_grad()
def evaluate_mixture(
    model: torch.nn.Module,
    batches: Iterable[dict],
    corrupt_cfg: CorruptConfig,
    device: torch.device,
    loss_cfg: LossConfig | None = None,
    seed: int = EVAL_SEED,
    output: str = "mask",
) -> dict[str, float]:
    """The mixture pretext learned or not: linear L1 to the primary on the frames holding an interferer,
    of the model's estimate and of the mixture itself (doing nothing), on `mixture_yardstick` crops.
    Val batches come in shard order, often several crops of one track: here any other crop of the batch
    may be the interferer (another moment of the same track too). {} when no batch has two crops."""
    cfg = mixture_yardstick(corrupt_cfg)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    sums = {"model_l1": 0.0, "pass_through_l1": 0.0}
    elements = 0
    try:
        for batch in batches:
            clean = batch["spec"].to(device, non_blocking=True).float()
            every_crop_its_own = torch.arange(clean.shape[0], device=device)
            corrupted = corrupt_batch(clean, every_crop_its_own, cfg, generator)
            with autocast_for(device):
                head, nsp_logit = model(corrupted.input)
            _, _, estimate = compute_loss(head, nsp_logit, corrupted, loss_cfg or LossConfig(), False, output)
            weight = corrupted.mixed[:, None, None, :].to(estimate.dtype)
            sums["model_l1"] += float(((estimate - corrupted.target).abs() * weight).sum())
            sums["pass_through_l1"] += float(((corrupted.input - corrupted.target).abs() * weight).sum())
            elements += int(corrupted.mixed.sum()) * clean.shape[1] * clean.shape[2]
    finally:
        model.train(was_training)
    if elements == 0:
        return {}
    out = {k: v / elements for k, v in sums.items()}
    out["ratio"] = out["model_l1"] / out["pass_through_l1"] if out["pass_through_l1"] > 0 else float("nan")
    return out


def describe_corruption(cfg: CorruptConfig) -> str:
    pair = cfg.pair_task.upper() if cfg.nsp else "no pair task"
    return f"{cfg.token_frames}-frame tokens, {cfg.select_rate:.0%} selected, {pair}"


def format_table(result: EvalResult, title: str = "", masked_tokens: bool = True) -> str:
    """The printed comparison: model / baseline < 1 means the model reconstructs better than that baseline.
    A model never trained on masked tokens (`masked_tokens` False: the mixture pretext alone) gets only
    its own score, the mixture line: a sigmoid mask cannot fill a [MASK] frame, so the masked-token
    table would only say that."""
    lines = [title] if title else []
    if result.pretext and not masked_tokens:
        p = result.pretext
        lines += [
            f"{result.batches} batches, {result.samples} samples (fixed mixtures: each crop with another's interferer)",
            f"mixture pretext: L1 to the primary where an interferer is {p['model_l1']:.5f}, the mixture itself "
            f"{p['pass_through_l1']:.5f}: model / doing nothing {p['ratio']:.3f} (below 1: it learned); "
            f"val loss {result.loss:.5f}",
        ]
        return "\n".join(lines)
    corruption = describe_corruption(CorruptConfig(**result.corruption)) if result.corruption else "fixed"
    lines += [
        f"{result.batches} batches, {result.samples} samples, {result.selected_frames} selected frames "
        f"(fixed corruption: {corruption})",
        f"{'':<22}{'masked-token L1':>16}{'model / this':>14}{'LSD dB':>9}{'L1 lows':>10}{'L1 mids':>10}"
        f"{'L1 highs':>10}{'L1 gaps':>10}{'model / this':>14}",
    ]
    names = {"model": "model", "copy_nearest": "copy nearest frame", "interpolate": "linear interpolation"}
    for name, label in names.items():
        s = result.scores[name]
        ratio = 1.0 if name == "model" else result.ratio(name)
        lines.append(
            f"{label:<22}{s['l1']:>16.5f}{ratio:>14.3f}{s['lsd']:>9.2f}{s['l1_lows']:>10.5f}{s['l1_mids']:>10.5f}"
            f"{s['l1_highs']:>10.5f}{s['l1_gaps']:>10.5f}"
            f"{(1.0 if name == 'model' else result.ratio(name, 'l1_gaps')):>14.3f}"
        )
    lines.append(
        f"NSP accuracy {result.nsp_accuracy:.3f} vs chance {result.nsp_chance:.3f} (BCE {result.nsp_bce:.4f}); "
        f"all-frames L1 {result.all_frames_l1:.5f}; val loss {result.loss:.5f}"
    )
    if result.pretext:
        p = result.pretext
        lines.append(
            f"mixture pretext: L1 to the primary where an interferer is {p['model_l1']:.5f}, the mixture itself "
            f"{p['pass_through_l1']:.5f}: model / doing nothing {p['ratio']:.3f}"
        )
    return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint: str, shards: str, batches: int, device: str = "auto", split: str = "val", batch_size: int | None = None
) -> tuple[EvalResult, str]:
    """Load a checkpoint (with its own config) and evaluate it on the yardstick (plus, when it was
    trained with another corruption, a second table on that one); returns the yardstick result and
    the printed tables."""
    from trainer.checkpoint import load_checkpoint, read_checkpoint_config, resolve_checkpoint
    from trainer.config import load_config
    from trainer.data import eval_loader
    from trainer.model import build_model

    path = resolve_checkpoint(checkpoint)
    cfg = load_config(base=read_checkpoint_config(path))
    dev = pick_device(device)
    model = build_model(cfg.model).to(dev)
    meta = load_checkpoint(path, model, device=dev)

    def loader():
        return eval_loader(
            shards,
            batch_size=batch_size or cfg.data.val_batch_size,
            crop_frames=cfg.data.crop_frames,
            max_batches=batches,
            split=split,
            read_timeout=cfg.data.read_timeout,
        )

    result = validate_pretraining(model, loader, cfg, dev)
    masked = cfg.corrupt.select_rate > 0
    table = format_table(
        result, title=f"{path} (step {meta.get('step')}) on {shards} [{split}]: yardstick", masked_tokens=masked
    )
    if yardstick(cfg.corrupt) != cfg.corrupt and cfg.corrupt.mix_prob == 0:
        trained = evaluate(model, loader(), cfg.corrupt, dev, cfg.loss, output=cfg.model.output)
        table += "\n\n" + format_table(trained, title="the training corruption (not comparable across runs)")
    return result, table


def validate_pretraining(model: torch.nn.Module, loader, cfg, device: torch.device) -> EvalResult:
    """The yardstick, plus the mixture pretext's own score when the run mixes (`loader()` gives the
    same val batches each call)."""
    result = evaluate(model, loader(), yardstick(cfg.corrupt), device, cfg.loss, output=cfg.model.output)
    if cfg.corrupt.mix_prob > 0:
        result.pretext = evaluate_mixture(model, loader(), cfg.corrupt, device, cfg.loss, output=cfg.model.output)
        if result.pretext:
            result.loss = result.pretext["model_l1"]
    return result
