"""`pipeline status`: what is ingested, what is sharded, what is left, and how big it will be."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import format as fmt
from pipeline.shard.plan import check_track


@dataclass
class RootSummary:
    tracks: int = 0
    seconds: float = 0.0
    bytes: int = 0


@dataclass
class SplitShards:
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    tracks: int = 0
    seconds: float = 0.0


@dataclass
class Status:
    tracks: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    per_root: dict[str, RootSummary] = field(default_factory=dict)
    per_split_seconds: dict[str, float] = field(default_factory=dict)
    per_split_tracks: dict[str, int] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)  # (stage, reason kind) -> count
    shards: dict[str, SplitShards] = field(default_factory=dict)
    stft: fmt.STFTParams = field(default_factory=fmt.STFTParams)
    clip_frames: int = fmt.DEFAULT_CLIP_FRAMES
    encoding: str = fmt.DEFAULT_ENCODING  # of the shards found, else what `pipeline shard` writes by default
    sample_kind: str = fmt.SAMPLE_KIND_SPEC  # SAMPLE_KIND_PAIRS: the manifest is pairs.jsonl

    def bytes_per_second(self) -> tuple[float, str]:
        """Shard bytes per second of audio: measured on the shards so far, else estimated."""
        seconds = sum(s.seconds for s in self.shards.values())
        if seconds > 0:
            return sum(s.bytes for s in self.shards.values()) / seconds, f"{self.encoding}, measured on these shards"
        estimate = (
            fmt.estimated_shard_bytes(3600.0, self.stft, self.clip_frames, self.sample_kind, encoding=self.encoding)
            / 3600.0
        )
        return estimate, f"{self.encoding}, estimated at these STFT settings"


def failure_kind(reason: str) -> str:
    """Group failures by the reason's wording, not by the file it names."""
    kind = reason.split(":")[0] if ":" in reason[:80] else reason
    return kind.strip()[:80]


def collect_status(manifests: str | os.PathLike, shards: str | os.PathLike, pairs: bool = False) -> Status:
    """With `pairs`, of pairs.jsonl / pair-failures.jsonl and pair shards (`pipeline shard --pairs`)."""
    status = Status(sample_kind=fmt.SAMPLE_KIND_PAIRS if pairs else fmt.SAMPLE_KIND_SPEC)
    records, name = (fmt.read_pairs, fmt.PAIRS_FILE) if pairs else (fmt.read_tracks, fmt.TRACKS_FILE)
    for track in records(manifests):
        try:
            check_track(track)  # a hand-edited field would otherwise be a TypeError in the sums below
        except ValueError as exc:
            raise ValueError(f"{Path(manifests) / name}: {exc}") from exc
        if track.duplicate_of:
            status.duplicates += 1
            continue
        status.tracks += 1
        status.seconds += track.duration
        root = status.per_root.setdefault(track.root, RootSummary())
        root.tracks += 1
        root.seconds += track.duration
        root.bytes += track.size
        status.per_split_seconds[track.split] = status.per_split_seconds.get(track.split, 0.0) + track.duration
        status.per_split_tracks[track.split] = status.per_split_tracks.get(track.split, 0) + 1
    for failure in fmt.read_failures(manifests, fmt.PAIR_FAILURES_FILE if pairs else fmt.FAILURES_FILE):
        status.failures[(failure.stage, failure_kind(failure.reason))] += 1
    for split in fmt.SPLITS:
        index_path = Path(shards) / fmt.index_name(split)
        if not index_path.exists():
            continue
        index = fmt.read_index(index_path)
        status.stft = fmt.STFTParams.from_dict(index.stft)
        status.clip_frames = index.clip_frames
        status.encoding = index.encoding
        status.shards[split] = SplitShards(
            shards=len(index.shardlist),
            samples=sum(s.nsamples for s in index.shardlist),
            bytes=sum(s.filesize for s in index.shardlist),
            tracks=int(index.totals.get("tracks", 0)),
            seconds=float(index.totals.get("seconds", 0.0)),
        )
    return status


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def format_status(status: Status) -> str:
    per_second, basis = status.bytes_per_second()
    if status.sample_kind == fmt.SAMPLE_KIND_PAIRS:
        lines = [f"pairs: {status.tracks} pairs, {_hours(status.seconds)} of mixtures, {status.duplicates} duplicates"]
    else:
        lines = [f"ingested: {status.tracks} tracks, {_hours(status.seconds)}, {status.duplicates} duplicates"]
    for root, summary in sorted(status.per_root.items()):
        lines.append(
            f"  {root}: {summary.tracks} tracks, {_hours(summary.seconds)}, {_gb(summary.bytes)} of audio files"
        )
    for split in fmt.SPLITS:
        if split in status.per_split_tracks:
            lines.append(
                f"  {split}: {status.per_split_tracks[split]} tracks, {_hours(status.per_split_seconds[split])}"
            )
    failed = sum(status.failures.values())
    lines.append(f"failures: {failed}")
    for (stage, kind), count in status.failures.most_common():
        lines.append(f"  {count:6d}  {stage}: {kind}")
    lines.append(f"sharded ({per_second * 3600 / 1e9:.2f} GB per hour of audio, {basis}):")
    for split in fmt.SPLITS:
        shards = status.shards.get(split)
        wanted = status.per_split_seconds.get(split, 0.0)
        if shards is None:
            lines.append(f"  {split}: nothing yet; estimated {_gb(wanted * per_second)}")
            continue
        left = max(0.0, wanted - shards.seconds)
        lines.append(
            f"  {split}: {shards.shards} shards, {shards.samples} samples, {_gb(shards.bytes)}, "
            f"{shards.tracks} tracks, {_hours(shards.seconds)}; left {_hours(left)} "
            f"(estimated {_gb(left * per_second)})"
        )
    return "\n".join(lines)
