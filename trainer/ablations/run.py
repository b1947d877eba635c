"""`trainer ablate`: train a list of config variants on the same shards with the same seed and
budget, score each on the evaluation yardstick, and write one table.

A variants file (YAML) is a list of rows; each names a starting point and overrides:

    - {name: original, preset: original}
    - {name: recipe, preset: recipe}
    - {name: "select 75%", preset: recipe, set: [corrupt.select_rate=0.75]}

Every row trains into OUT/<slug of name>/ with `--steps` (and any `--set` given to the command, e.g.
a common crop or batch size) from seed `run.seed`, so rows differ only in their own overrides. A row
whose run already reached `--steps` is evaluated without training again, so an interrupted ablation
resumes. The table (OUT/ablation.md, also printed) has, per row: the yardstick's masked-token L1 and
its ratio to both baselines, the log-spectral distance, L1 per band, the pair task's accuracy against
its chance level, and the mean seconds per training step (with the machine's load average when the
row trained: timings on a shared machine are only comparable within one table). With a
`Downstream` setting (`--pairs`), trainer/ablations/downstream.py also fine-tunes every row and one
from-scratch model for separation and the table gets their SDR.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainer.ablations.downstream import SCRATCH, Downstream, slug
from trainer.config import load_config

DEFAULT_VARIANTS = Path(__file__).with_name("objectives.yaml")


@dataclass
class Variant:
    name: str
    preset: str
    overrides: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return slug(self.name, empty="variant")


def read_variants(path: str | os.PathLike) -> list[Variant]:
    """Parse and check a variants file; errors name the file and the row."""
    path = Path(path)
    try:
        rows = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable variants file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty list of variants")
    variants, seen = [], set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ValueError(f"{path}: row {i + 1} needs a name (a mapping with name, preset, set)")
        unknown = sorted(set(row) - {"name", "preset", "set"})
        if unknown:
            raise ValueError(f"{path}: row {row['name']!r}: unknown key(s) {', '.join(unknown)}")
        overrides = row.get("set") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError(f"{path}: row {row['name']!r}: set must be a list of section.key=value strings")
        variant = Variant(row["name"], str(row.get("preset", "tiny")), list(overrides))
        if variant.slug in seen:
            raise ValueError(f"{path}: two rows named like {row['name']!r}")
        seen.add(variant.slug)
        try:
            load_config(variant.preset, overrides=variant.overrides)
        except ValueError as exc:
            raise ValueError(f"{path}: row {row['name']!r}: {exc}") from exc
        variants.append(variant)
    return variants


def _seconds_per_step(run_dir: Path, batch_size: int) -> float:
    """Median wall time of the run's training steps after the first five (start-up)."""
    from trainer.logs import read_metrics

    times = sorted(batch_size / r["samples_per_s"] for r in read_metrics(run_dir)[5:] if r.get("samples_per_s"))
    return times[len(times) // 2] if times else float("nan")


def run_ablation(
    variants: list[Variant],
    shards: str,
    out: str | os.PathLike,
    steps: int,
    common: list[str] | tuple[str, ...] = (),
    val_shards: str | None = None,
    batches: int = 16,
    device: str = "auto",
    downstream: Downstream | None = None,
) -> str:
    from trainer.ablations.downstream import FINETUNE_DIR, check_downstream, finetune_row, score_finetunes, scratch_dir
    from trainer.checkpoint import latest_checkpoint, read_meta, resolve_checkpoint
    from trainer.loop import default_val_shards, pretrain, resolve_run
    from trainer.pretrain.evaluate import evaluate_checkpoint

    out = Path(out)
    if downstream is not None:
        check_downstream(downstream, shards, [v.slug for v in variants])
    val = val_shards or default_val_shards(shards, say_so=False) or shards
    rows, finetunes = [], []
    for variant in variants:
        run_dir = out / variant.slug
        overrides = [*common, *variant.overrides, f"run.steps={steps}"]
        started = latest_checkpoint(run_dir / "checkpoints") is not None  # continues with its saved config
        cfg, checkpoint = resolve_run(run_dir, None if started else variant.preset, None, overrides)
        trained = checkpoint is None or int(read_meta(checkpoint).get("step", 0)) < steps
        load = os.getloadavg()[0]
        pretrain(cfg, shards, run_dir, val_shards=None, checkpoint=checkpoint, device=device)
        result, _ = evaluate_checkpoint(str(run_dir), val, batches, device=device)
        per_step = _seconds_per_step(run_dir, cfg.data.batch_size)
        rows.append((variant, result, per_step, load if trained else None))
        print(f"ablate: {variant.name}: model/interp {result.ratio_interpolate:.3f}", flush=True)
        if downstream is not None:
            init = resolve_checkpoint(run_dir)
            finetunes.append(finetune_row(run_dir / FINETUNE_DIR, variant.preset, init, downstream, common, device))
    separation = None
    if downstream is not None:
        scratch = finetune_row(scratch_dir(out), downstream.scratch_preset, None, downstream, common, device)
        separation = score_finetunes(finetunes, [v.name for v in variants], scratch, downstream, device)
        (out / "separation.md").write_text(separation.table + "\n", encoding="utf-8")
    table = format_ablation(rows, steps, shards, common, downstream, separation)
    (out / "ablation.md").write_text(table + "\n", encoding="utf-8")
    return table


def _sdr(value: float, reference: float | None = None) -> str:
    if not math.isfinite(value):
        return "n/a"
    if reference is None or not math.isfinite(reference):
        return f"{value:.2f}"
    return f"{value:.2f} ({value - reference:+.2f})"


def format_ablation(
    rows, steps: int, shards: str, common, downstream: Downstream | None = None, separation=None
) -> str:
    bsseval = separation is not None and downstream.bsseval
    sdr_header = ""
    if separation is not None:
        sdr_header = " inst. SDR MDX dB (vs scratch) |" + (" inst. SDR BSSEval4 dB (vs scratch) |" if bsseval else "")
    header = (
        f"| variant | overrides |{sdr_header} masked L1 | / interp | / copy | [MASK] frames: L1 / interp "
        "| LSD dB (model / interp) | L1 lows | L1 mids | L1 highs | pair acc. / chance | s/step (load) |"
    )
    lines = [
        f"{steps} steps per row on {shards}; common overrides: {' '.join(common) or 'none'}; yardstick: 16-frame "
        "tokens, 15% selected, 80/10/10, the same val crops",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]

    def sdr_cells(mdx_bss: tuple[float, float], reference: tuple[float, float] | None) -> str:
        if separation is None:
            return ""
        cells = [_sdr(mdx_bss[0], reference and reference[0])]
        if bsseval:
            cells.append(_sdr(mdx_bss[1], reference and reference[1]))
        return " " + " | ".join(cells) + " |"

    for index, (variant, r, per_step, load) in enumerate(rows):
        m, i = r.scores["model"], r.scores["interpolate"]
        pair = f"{r.nsp_accuracy:.2f} / {r.nsp_chance:.2f}" if r.corruption.get("nsp") else "none"
        load_text = f"{load:.1f}" if load is not None else "earlier run"
        sdr = sdr_cells(separation.rows[index], separation.scratch) if separation is not None else ""
        lines.append(
            f"| {variant.name} | `{variant.preset}` {' '.join(variant.overrides)} |{sdr} {m['l1']:.5f} "
            f"| {r.ratio_interpolate:.3f} | {r.ratio_copy:.3f} | {r.ratio('interpolate', 'l1_gaps'):.3f} "
            f"| {m['lsd']:.1f} / {i['lsd']:.1f} "
            f"| {m['l1_lows']:.4f} | {m['l1_mids']:.5f} | {m['l1_highs']:.6f} | {pair} "
            f"| {per_step:.2f} ({load_text}) |"
        )
    if separation is not None:
        blank = " — |" * 10
        lines.append(
            f"| {SCRATCH} | `{downstream.scratch_preset}` no pretraining |{sdr_cells(separation.scratch, None)}{blank}"
        )
        floor_bss = "" if not bsseval else f", BSSEval4 {_sdr(separation.floor[1])}"
        oracle_bss = "" if not bsseval else f", BSSEval4 {_sdr(separation.oracle[1])}"
        lines += [
            "",
            f"Separation: each row's final checkpoint fine-tuned {downstream.steps} steps on {downstream.pairs} "
            f"(its preset's training settings and seed, the common overrides), `{SCRATCH}` the same from random "
            f"init; instrumental SDR in dB, median over {separation.tracks} whole val tracks of "
            f"{downstream.manifests} (per track: separation.md)"
            + ("" if bsseval else "; BSSEval v4 not computed (--no-bsseval)"),
            f"floor (mixture as the estimate): MDX {_sdr(separation.floor[0])}{floor_bss}; "
            f"ceiling (oracle ratio mask): MDX {_sdr(separation.oracle[0])}{oracle_bss}",
        ]
    return "\n".join(lines)
