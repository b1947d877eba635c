"""Manifest + options -> deterministic units of work, one unit per shard file.

A unit is an ordered list of tracks that becomes exactly one `{split}-NNNNNN.tar`. The plan depends
only on the manifest's content and the options (never on worker count, scheduler or manifest line
order), which is what makes shards byte-identical across runs and resumable unit by unit.

Interleaving: every album's tracks are spread evenly over its split with a seeded random phase, so
consecutive tracks come from different albums and, since albums live on drives, from all drives in
proportion. No shard is one album unless the split is.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipeline import format as fmt


@dataclass(frozen=True)
class ShardOptions:
    """Everything besides the manifest that decides the shard bytes."""

    stft: fmt.STFTParams = field(default_factory=fmt.STFTParams)
    clip_frames: int = fmt.DEFAULT_CLIP_FRAMES
    shard_bytes: int = fmt.DEFAULT_SHARD_BYTES
    seed: int = 0
    sample_kind: str = fmt.SAMPLE_KIND_SPEC  # SAMPLE_KIND_PAIRS: units are pairs.jsonl records
    encoding: str = fmt.DEFAULT_ENCODING

    def __post_init__(self):
        fmt.sample_arrays(self.sample_kind, self.encoding)  # ValueError for an unknown kind or encoding
        if self.clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {self.clip_frames}")
        if self.shard_bytes < 1:
            raise ValueError(f"shard size must be >= 1 byte, got {self.shard_bytes}")
        if self.stft.hop > self.stft.n_fft:  # STFTParams checks itself; this is a choice of the shard stage
            raise ValueError(
                f"need hop <= n_fft (frames that skip audio), got n_fft={self.stft.n_fft} hop={self.stft.hop}"
            )

    @property
    def pairs(self) -> bool:
        return self.sample_kind == fmt.SAMPLE_KIND_PAIRS

    def to_dict(self) -> dict:
        out = {
            "stft": self.stft.to_dict(),
            "clip_frames": self.clip_frames,
            "shard_bytes": self.shard_bytes,
            "seed": self.seed,
            "encoding": self.encoding,
            "format_version": fmt.FORMAT_VERSION,
        }
        if self.pairs:  # absent for pretraining shards, whose existing plans must keep their fingerprints
            out["sample_kind"] = self.sample_kind
        return out


# The manifest fields that decide what a track contributes to a shard; tags and drive names do not.
_TRACK_FIELDS = ("id", "path", "size", "mtime", "duration", "album_key", "split")


def track_signature(track: fmt.TrackRecord) -> str:
    """Short hash of the fields that decide a track's samples and place in the plan."""
    data = json.dumps([getattr(track, name) for name in _TRACK_FIELDS], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def expected_clips(duration: float, stft: fmt.STFTParams, clip_frames: int) -> int:
    """Clips a track of `duration` seconds yields (format.STFTParams framing, half-full tail kept)."""
    frames = 1 + int(duration * stft.sample_rate) // stft.hop
    full, tail = divmod(frames, clip_frames)
    return full + (1 if tail >= fmt.min_valid_frames(clip_frames) else 0)


@dataclass(frozen=True)
class Unit:
    split: str
    index: int
    tracks: tuple[fmt.TrackRecord, ...]  # or fmt.PairRecord, which the plan reads by the same names
    est_bytes: int  # tar bytes expected from the manifest durations

    @property
    def name(self) -> str:
        return fmt.shard_name(self.split, self.index)

    @property
    def seconds(self) -> float:
        return sum(t.duration for t in self.tracks)

    def fingerprint(self, options: ShardOptions) -> str:
        """Identifies this unit's shard and its state record: same fingerprint, same file.
        (Duration does not change the bytes, but it feeds the totals the state carries.)"""
        data = {
            "name": self.name,
            "stft": options.stft.to_dict(),
            "clip_frames": options.clip_frames,
            "encoding": options.encoding,
            "format_version": fmt.FORMAT_VERSION,
            "tracks": [[t.id, t.path, t.size, t.mtime, t.duration, t.album_key] for t in self.tracks],
        }
        if options.pairs:
            data["sample_kind"] = options.sample_kind
        return _sha256(data)


@dataclass
class Plan:
    options: ShardOptions
    units: list[Unit]
    tracks: dict[str, str]  # track id -> track_signature, for explaining manifest changes
    skipped_duplicates: int = 0
    appends: int = 0  # `pipeline shard --append` runs that added units after the first plan's

    @property
    def fingerprint(self) -> str:
        data = {"options": self.options.to_dict(), "tracks": sorted(self.tracks.items())}
        if self.appends:  # the same tracks planned afresh would be laid out differently
            data["layout"] = sorted(layout_of(self).items())
        return _sha256(data)

    @property
    def seconds(self) -> float:
        return sum(u.seconds for u in self.units)

    def splits(self) -> list[str]:
        return sorted({u.split for u in self.units}, key=split_order)


def check_track(track: fmt.TrackRecord) -> None:
    """ValueError naming the track and field when a record cannot be planned (a hand-edited or
    foreign manifest). Types are already checked where the manifest is read (format.read_tracks);
    these are the values the planner cannot use."""
    for name in ("size", "duration"):
        if getattr(track, name) < 0:
            raise ValueError(f"track {track.path!r}: {name} must be >= 0, got {getattr(track, name)!r}")
    if not fmt.is_shard_name(fmt.shard_name(track.split, 0)):  # "a/b" would write outside --out
        raise ValueError(
            f"track {track.path!r}: split {track.split!r} cannot name a shard "
            "(letters, digits and _ only; normally train or val)"
        )


def make_plan(tracks: list[fmt.TrackRecord], options: ShardOptions) -> Plan:
    """Group the manifest's unique tracks into shard-sized units, split by split; ValueError (see
    `check_track`) for a record that cannot be planned."""
    for track in tracks:
        check_track(track)
    unique: dict[str, fmt.TrackRecord] = {}
    duplicates = 0
    # Sorting first makes the plan independent of manifest line order; if one id shows up twice
    # without duplicate_of (a manifest glitch), the first path wins and the rest count as duplicates.
    for track in sorted(tracks, key=lambda t: (t.id, t.path)):
        if track.duplicate_of or track.id in unique:
            duplicates += 1
            continue
        unique[track.id] = track
    by_split: dict[str, list[fmt.TrackRecord]] = defaultdict(list)
    for track in unique.values():
        by_split[track.split].append(track)
    units: list[Unit] = []
    for split in sorted(by_split, key=split_order):
        ordered = interleave(by_split[split], split_rng(options, split))
        units.extend(pack(split, ordered, track_sizes(ordered, options), options.shard_bytes))
    return Plan(options, units, {t.id: track_signature(t) for t in unique.values()}, duplicates)


def interleave(tracks: list[fmt.TrackRecord], rng: np.random.Generator) -> list[fmt.TrackRecord]:
    """Seeded order in which each album's tracks sit at evenly spaced positions with a random phase."""
    albums: dict[str, list[fmt.TrackRecord]] = defaultdict(list)
    for track in sorted(tracks, key=lambda t: (t.album_key, t.root, t.id)):
        albums[track.album_key].append(track)
    keyed = []
    for album_key in sorted(albums):
        members = albums[album_key]
        order = rng.permutation(len(members))
        phase = rng.random()
        jitter = rng.random(len(members))
        for slot, member in enumerate(order):
            keyed.append(((slot + phase) / len(members), jitter[slot], members[member].id, members[member]))
    keyed.sort(key=lambda item: item[:3])
    return [item[3] for item in keyed]


def track_sizes(tracks: list[fmt.TrackRecord], options: ShardOptions) -> list[int]:
    """Expected tar bytes of each track (from its manifest duration)."""
    per_clip = fmt.sample_bytes(options.stft, options.clip_frames, options.sample_kind, options.encoding)
    return [expected_clips(t.duration, options.stft, options.clip_frames) * per_clip for t in tracks]


def split_rng(options: ShardOptions, split: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([options.seed, zlib.crc32(split.encode()), *more])


def pack(
    split: str, tracks: list[fmt.TrackRecord], sizes: list[int], shard_bytes: int, first_index: int = 0
) -> list[Unit]:
    """Consecutive tracks into units of about `shard_bytes`, numbered from `first_index`; a track
    larger than that is a unit alone."""
    units: list[Unit] = []
    current: list[fmt.TrackRecord] = []
    current_bytes = 0
    for track, size in zip(tracks, sizes):
        if current and current_bytes + size > shard_bytes:
            units.append(Unit(split, first_index + len(units), tuple(current), current_bytes))
            current, current_bytes = [], 0
        current.append(track)
        current_bytes += size
    if current:
        units.append(Unit(split, first_index + len(units), tuple(current), current_bytes))
    return units


def split_order(split: str) -> tuple[int, str]:
    return (fmt.SPLITS.index(split) if split in fmt.SPLITS else len(fmt.SPLITS), split)


def _sha256(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def describe_changes(old: dict, new: Plan) -> str:
    """Why a stored plan (`plan_record` output) differs from `new`, in one line."""
    reasons = []
    old_options, new_options = _flatten(old.get("options", {})), _flatten(new.options.to_dict())
    for key in sorted(set(old_options) | set(new_options)):
        if old_options.get(key) != new_options.get(key):
            reasons.append(f"{key} {old_options.get(key)!r} -> {new_options.get(key)!r}")
    old_tracks: dict = old.get("tracks", {})
    added = sum(1 for t in new.tracks if t not in old_tracks)
    removed = sum(1 for t in old_tracks if t not in new.tracks)
    changed = sum(1 for t, sig in new.tracks.items() if t in old_tracks and old_tracks[t] != sig)
    if added or removed or changed:
        reasons.append(f"manifest: {added} tracks added, {removed} removed, {changed} changed")
    return "; ".join(reasons) or "plan fingerprint differs"


@dataclass
class PlanRecord:
    """`.state/plan.json` as read back (what `plan_record` writes)."""

    fingerprint: str
    options: dict
    tracks: dict[str, str]  # track id -> track_signature
    units: list[str]
    layout: dict[str, list[str]] = field(default_factory=dict)  # unit name -> its track ids, in order
    appends: int = 0


def layout_of(plan: Plan) -> dict[str, list[str]]:
    return {u.name: [t.id for t in u.tracks] for u in plan.units}


def plan_record(plan: Plan) -> dict:
    """What the executor stores to recognise (and explain) a changed plan, and to extend it."""
    return {
        "fingerprint": plan.fingerprint,
        "options": plan.options.to_dict(),
        "tracks": plan.tracks,
        "units": [u.name for u in plan.units],
        "layout": layout_of(plan),
        "appends": plan.appends,
    }


def _flatten(options: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_SIZE_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_size(text: str) -> int:
    """'1GB', '500M', '64MiB', '2e9' -> bytes (K/M/G/T are powers of 10, Ki/Mi/Gi/Ti of 2)."""
    cleaned = text.strip().lower().replace(" ", "")
    cleaned = cleaned[:-1] if cleaned.endswith("b") else cleaned
    number = cleaned.rstrip("kmgti")
    unit = cleaned[len(number) :]
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"not a size: {text!r} (try 1GB, 500MB, 64MiB)") from exc
    if not 1 <= value < math.inf:  # NaN fails this too
        raise ValueError(f"size must be a finite number of at least 1 byte, got {text!r}")
    return int(value)


__all__ = [
    "ShardOptions",
    "Unit",
    "Plan",
    "check_track",
    "make_plan",
    "pack",
    "track_sizes",
    "split_rng",
    "split_order",
    "layout_of",
    "interleave",
    "expected_clips",
    "track_signature",
    "describe_changes",
    "plan_record",
    "parse_size",
]
