"""manifests/pairs.jsonl: mixture / instrumental pairs for separation (`PairRecord`), the kinds of
target and the folder layouts they are found in."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.format.manifests import read_jsonl

PAIRS_FILE = "pairs.jsonl"
PAIR_FAILURES_FILE = "pair-failures.jsonl"  # FailureRecords, stage `pair` (and `decode` from shard --pairs)
TARGET_INSTRUMENTAL = "instrumental"  # the target is the partner file itself
TARGET_RESIDUAL = "mixture_minus_vocals"  # the partner is a vocals stem; the target is mixture - vocals
TARGET_KINDS = (TARGET_INSTRUMENTAL, TARGET_RESIDUAL)
TARGET_PSEUDO = "pseudo_label"  # a pair sample's target estimated by a separator (`trainer pseudo-label`)
SAMPLE_TARGET_KINDS = (*TARGET_KINDS, TARGET_PSEUDO)  # what a pair sample's json may record
LAYOUT_STEMS = "stems"  # a folder per song: mixture.<ext> + instrumental / vocals / ... stems
LAYOUT_PARALLEL = "parallel"  # two folders, mixtures and instrumentals, matched by file name


@dataclass
class PairRecord:
    """One line of pairs.jsonl: a mixture, its separation target, and how they line up.

    Alignment: the partner file's audio at time `t + offset_seconds` is the mixture's at `t`
    (a positive offset: the instrumental starts later in its file). The shard stage and the
    evaluation read the partner from `offset_seconds` on (zeros before its start), cut to the
    mixture's length. `id` is derived from both contents, the target kind and the offset, so any
    change to either file or to the alignment is a new pair; a byte-identical copy of a pair has
    the same id and is marked `duplicate_of`.
    """

    id: str
    name: str  # the song: its folder (stems layout) or its file name without extension (parallel)
    layout: str  # LAYOUT_STEMS or LAYOUT_PARALLEL
    root: str  # the ROOT (or --mixtures folder) it was found under
    mixture_path: str  # absolute
    mixture_id: str  # content fingerprint, as tracks.jsonl ids
    mixture_size: int
    mixture_mtime: float
    duration: float  # mixture seconds: the pair's length
    target_path: str  # the instrumental, or the vocals stem when target_kind is TARGET_RESIDUAL
    target_id: str
    target_size: int
    target_mtime: float
    target_duration: float
    target_kind: str  # one of TARGET_KINDS
    offset_seconds: float
    correlation: float  # normalised cross-correlation at the offset (1 = identical up to scale)
    album_key: str
    split: str  # "train" or "val": a whole album (or song, when untagged) goes to one split
    # The id of the canonical pair when this pair's mixture is content-identical to another pair's
    # (a copied song folder): such a pair takes the canonical's split and album and is never
    # sharded or scored, so one song can neither be counted twice nor sit in both splits.
    duplicate_of: str | None = None

    # The shard planner reads records by these names (as it reads TrackRecords).
    @property
    def path(self) -> str:
        return self.mixture_path

    @property
    def size(self) -> int:
        return self.mixture_size

    @property
    def mtime(self) -> float:
        return self.mixture_mtime


def read_pairs(manifests_dir: str | os.PathLike) -> list[PairRecord]:
    return list(read_jsonl(Path(manifests_dir) / PAIRS_FILE, PairRecord))


__all__ = [
    "PAIRS_FILE",
    "PAIR_FAILURES_FILE",
    "TARGET_INSTRUMENTAL",
    "TARGET_RESIDUAL",
    "TARGET_KINDS",
    "TARGET_PSEUDO",
    "SAMPLE_TARGET_KINDS",
    "LAYOUT_STEMS",
    "LAYOUT_PARALLEL",
    "PairRecord",
    "read_pairs",
]
