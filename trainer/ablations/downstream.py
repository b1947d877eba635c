"""`trainer ablate --pairs`: what each pretraining variant is worth downstream.

After a row is pretrained, its final checkpoint is fine-tuned for separation on the pair shards
(`trainer finetune --init`, through `resolve_finetune`) into OUT/<slug>/finetune with the same
budget for every row; one more fine-tune of that budget starts from random init (OUT/from-scratch/
finetune, the `--scratch-preset` model), so the table says whether a pretrain helped at all. Every
fine-tune and the two references (mixture as the estimate, oracle ratio mask) are then scored by
`evaluate_separation` on the same whole val tracks of the pairs manifest: instrumental SDR, MDX and
BSSEval v4, the median over tracks. A fine-tune that already reached its steps is not trained
again; one made from an earlier checkpoint of its pretrain (the pretrain was extended since) is an
error rather than a silently stale row.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SCRATCH = "from scratch"
SCRATCH_SLUG = "from-scratch"


def slug(name: str, empty: str = "row") -> str:
    """A row name as a folder name: runs of other characters than letters, digits, `._-` become `-`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or empty


FINETUNE_DIR = "finetune"
DEFAULT_SCRATCH_PRESET = "tiny"  # the recipe's preset, the row a pretrain is meant to beat


@dataclass(frozen=True)
class Downstream:
    pairs: str  # pair shards (`pipeline shard --pairs`)
    manifests: str  # the folder holding pairs.jsonl: the whole val tracks
    steps: int  # fine-tune steps, the same for every row
    tracks: int | None = None  # val tracks scored (None: all)
    bsseval: bool = True
    scratch_preset: str = DEFAULT_SCRATCH_PRESET


@dataclass
class SeparationScores:
    """Median instrumental SDR (MDX, BSSEval v4) per fine-tune, in row order, and the references."""

    rows: list[tuple[float, float]]
    scratch: tuple[float, float]
    floor: tuple[float, float]
    oracle: tuple[float, float]
    tracks: int
    table: str  # evaluate_separation's own table, with every track


def downstream_settings(
    pairs: str | None,
    manifests: str | None,
    steps: int | None,
    tracks: int | None = None,
    bsseval: bool = True,
    scratch_preset: str | None = None,
) -> Downstream | None:
    """The fine-tune options of `trainer ablate` as one setting, or None without --pairs; a missing
    partner option is a ValueError saying which."""
    if pairs is None and manifests is None:
        for option, value in (("--finetune-steps", steps), ("--tracks", tracks), ("--scratch-preset", scratch_preset)):
            if value is not None:
                raise ValueError(f"{option} needs --pairs and --pairs-manifests (the separation fine-tune)")
        return None
    if pairs is None:
        raise ValueError("--pairs-manifests needs --pairs (the pair shards to fine-tune on)")
    if manifests is None:
        raise ValueError("--pairs needs --pairs-manifests (the folder with pairs.jsonl, for the whole val tracks)")
    if steps is None:
        raise ValueError("--pairs needs --finetune-steps (the fine-tune budget of every row)")
    return Downstream(str(pairs), str(manifests), steps, tracks, bsseval, scratch_preset or DEFAULT_SCRATCH_PRESET)


def check_downstream(downstream: Downstream, shards: str, slugs: list[str]) -> None:
    """Everything the fine-tunes and the scoring will read, checked before the first row trains."""
    from pipeline import format as fmt
    from trainer.config import load_config
    from trainer.data import resolve_shards, shard_stft
    from trainer.separation.evaluate import select_pairs

    if SCRATCH_SLUG in (slug.lower() for slug in slugs):
        raise ValueError(f"a row named like {SCRATCH!r} would share OUT/{SCRATCH_SLUG} with the scratch fine-tune")
    resolve_shards(downstream.pairs, "train")  # a missing path or an empty index names itself
    path = Path(downstream.pairs)
    index = path / fmt.index_name("train") if path.is_dir() else path
    if index.suffix == ".json" and index.is_file():  # other sources: the first fine-tune step says so
        kind = fmt.read_index(index).sample_kind
        if kind != fmt.SAMPLE_KIND_PAIRS:
            raise ValueError(
                f"{downstream.pairs}: not pair shards (sample kind {kind!r}); make them with `pipeline shard --pairs`"
            )
    pair_bins = fmt.STFTParams.from_dict(shard_stft(downstream.pairs)).bins
    shard_bins = fmt.STFTParams.from_dict(shard_stft(shards)).bins
    if pair_bins != shard_bins:
        raise ValueError(
            f"{downstream.pairs}: pair shards of {pair_bins} frequency bins, the pretraining shards {shards} "
            f"have {shard_bins}: a pretrained model cannot fine-tune on them"
        )
    select_pairs(downstream.manifests, "val", downstream.tracks)
    load_config(downstream.scratch_preset)  # an unknown preset names itself


def finetune_row(
    run_dir: Path,
    preset: str,
    init: Path | None,
    downstream: Downstream,
    common: list[str] | tuple[str, ...],
    device: str,
) -> Path:
    """Fine-tune from `init` (a pretraining checkpoint) or from scratch into run_dir; returns run_dir.
    The training sections are the preset's plus `common`, as for `trainer finetune --preset --set`."""
    from trainer.checkpoint import latest_checkpoint, read_meta
    from trainer.loop import pretrain as train
    from trainer.separation.finetune import resolve_finetune

    overrides = [*common, f"run.steps={downstream.steps}"]
    if latest_checkpoint(run_dir / "checkpoints") is not None:  # continues with its saved config
        cfg, checkpoint = resolve_finetune(run_dir, None, None, overrides)
    else:
        cfg, checkpoint = resolve_finetune(run_dir, preset, None, overrides, init=str(init) if init else None)
    if checkpoint is not None and init is not None and Path(cfg.run.init or "").name != init.name:
        raise ValueError(
            f"{run_dir} was fine-tuned from {cfg.run.init}, its pretrain is now at {init.name}: "
            f"delete {run_dir} to fine-tune the new checkpoint"
        )
    if checkpoint is not None and int(read_meta(checkpoint)["step"]) >= cfg.run.steps:
        return run_dir  # finished: only read, without its lock, so processes of other rows can share it
    train(cfg, downstream.pairs, run_dir, val_shards=None, checkpoint=checkpoint, device=device)
    return run_dir


def score_finetunes(
    runs: list[Path], labels: list[str], scratch: Path, downstream: Downstream, device: str
) -> SeparationScores:
    """Every fine-tune (`runs`, then `scratch`) and both references on the same val tracks."""
    from trainer.separation.evaluate import evaluate_separation

    scores, table = evaluate_separation(
        [str(r) for r in [*runs, scratch]],
        downstream.manifests,
        "val",
        downstream.tracks,
        downstream.bsseval,
        device,
        labels=[*labels, SCRATCH],
    )
    medians = [(s.medians()[0], s.medians()[1]) for s in scores.values()]
    tracks = len(next(iter(scores.values())).instrumental_mdx)
    return SeparationScores(medians[: len(runs)], medians[-3], medians[-2], medians[-1], tracks, table)


def scratch_dir(out: str | os.PathLike) -> Path:
    return Path(out) / SCRATCH_SLUG / FINETUNE_DIR


__all__ = [
    "Downstream",
    "SeparationScores",
    "downstream_settings",
    "check_downstream",
    "finetune_row",
    "score_finetunes",
    "scratch_dir",
    "slug",
    "SCRATCH",
    "FINETUNE_DIR",
]
