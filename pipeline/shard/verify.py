"""`pipeline verify`: re-read every shard against its index, the way a trainer would.

Reading goes through plain `webdataset.WebDataset` (no decoders) and `numpy.load(allow_pickle=False)`,
so a shard that passes here loads in the trainer. Every problem is one line naming the file; a bad
shard does not stop the check of the others.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import format as fmt


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    splits: list[str] = field(default_factory=list)
    unchecked: int = 0  # shards whose index entry has no sha256 (written by an older version)

    def summary(self) -> str:
        verdict = f"{len(self.problems)} problems" if self.problems else "ok"
        unchecked = f"; {self.unchecked} without a sha256 in the index" if self.unchecked else ""
        return (
            f"{verdict}: {self.shards} shards ({', '.join(self.splits) or 'no index'}), "
            f"{self.samples} samples, {self.bytes / 1e9:.2f} GB checked{unchecked}"
        )


def verify_shards(out: str | os.PathLike) -> VerifyReport:
    out = Path(out)
    report = VerifyReport()
    if not out.is_dir():
        report.problems.append(f"{out}: no such folder")
        return report
    listed: set[str] = set()
    for index_path in sorted(out.glob("*.json")):
        try:
            index = fmt.read_index(index_path)
        except ValueError as exc:
            report.problems.append(str(exc))
            continue
        report.splits.append(index.split)
        _verify_index(out, index_path, index, report)
        listed.update(entry.url for entry in index.shardlist)
    for path in sorted(out.iterdir()):
        if fmt.is_shard_name(path.name) and path.name not in listed:
            report.problems.append(f"{path}: shard not listed in any index (unfinished or stale run?)")
    if not report.splits and not report.problems:
        report.problems.append(f"{out}: no shard index ({fmt.index_name('train')}, ...) found")
    return report


def _verify_index(out: Path, index_path: Path, index: fmt.ShardIndex, report: VerifyReport) -> None:
    try:
        stft = fmt.STFTParams.from_dict(index.stft)
        fmt.sample_arrays(index.sample_kind, index.encoding)
    except (TypeError, ValueError) as exc:
        report.problems.append(f"{index_path}: bad stft parameters, sample kind or encoding ({exc})")
        return
    expected_shape = (fmt.CHANNELS, stft.bins, index.clip_frames)
    total_samples = total_bytes = 0
    for entry in index.shardlist:
        path = out / entry.url
        report.shards += 1
        if not path.is_file():
            report.problems.append(f"{path}: listed in {index_path.name} but missing")
            continue
        size = path.stat().st_size
        if size != entry.filesize:
            report.problems.append(f"{path}: {size} bytes, index says {entry.filesize}")
        elif entry.sha256:
            digest = fmt.file_sha256(path)
            if digest != entry.sha256:
                report.problems.append(
                    f"{path}: sha256 {digest} differs from the index's {entry.sha256} (damaged on disk?); "
                    "`pipeline shard` redoes it"
                )
        else:
            report.unchecked += 1
        count = _verify_shard(path, index, expected_shape, report.problems)
        if count is not None and count != entry.nsamples:
            report.problems.append(f"{path}: {count} samples, index says {entry.nsamples}")
        report.samples += count or 0
        report.bytes += size
        total_samples += entry.nsamples
        total_bytes += entry.filesize
    totals = index.totals
    if "samples" in totals and totals["samples"] != total_samples:
        report.problems.append(f"{index_path}: totals.samples {totals['samples']} != {total_samples} in shardlist")
    if "bytes" in totals and totals["bytes"] != total_bytes:
        report.problems.append(f"{index_path}: totals.bytes {totals['bytes']} != {total_bytes} in shardlist")


def _verify_shard(path: Path, index: fmt.ShardIndex, shape: tuple, problems: list[str]) -> int | None:
    """Samples in the shard, each checked; None when the tar cannot be read to its end."""
    import webdataset as wds

    count = 0
    before = len(problems)
    try:
        dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
        for sample in dataset:
            count += 1
            _verify_sample(path, sample, index, shape, problems)
            if len(problems) - before >= 10:
                problems.append(f"{path}: stopping after 10 problems in this shard")
                return None
    except Exception as exc:  # webdataset/tarfile raise many types for a damaged tar; all mean the same
        problems.append(f"{path}: unreadable after {count} samples ({type(exc).__name__}: {_one_line(exc)})")
        return None
    return count


def _verify_sample(path: Path, sample: dict, index: fmt.ShardIndex, shape: tuple, problems: list[str]) -> None:
    key = sample.get("__key__", "?")
    where = f"{path}: sample {key}"
    arrays = fmt.sample_arrays(index.sample_kind, index.encoding)
    missing = [k for k in (*arrays, fmt.META_KEY) if k not in sample]
    extra = sorted(k for k in sample if not k.startswith("__") and k not in (*arrays, fmt.META_KEY))
    if missing or extra:
        problems.append(f"{where}: members missing {missing} extra {extra} (the index says {index.encoding})")
        return
    pairs = index.sample_kind == fmt.SAMPLE_KIND_PAIRS
    try:
        meta = fmt.decode_meta(sample[fmt.META_KEY], fmt.PairSampleMeta if pairs else fmt.SampleMeta)
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}: json unreadable ({_one_line(exc)})")
        return
    if meta.encoding != index.encoding:
        problems.append(f"{where}: json says {meta.encoding}, the index {index.encoding}")
        return
    try:
        specs = [array.read() for array in fmt.read_sample(sample)[0]]
    except ValueError as exc:
        problems.append(f"{where}: unreadable magnitude ({_one_line(exc)})")
        return
    for name, spec in zip(arrays, specs):
        if spec.shape != shape:
            problems.append(f"{where}: {name.split('.')[0]} is {spec.shape}, expected {shape}")
            return
    if pairs and meta.target_kind not in fmt.SAMPLE_TARGET_KINDS:
        problems.append(f"{where}: json target_kind {meta.target_kind!r} is not one of {fmt.SAMPLE_TARGET_KINDS}")
    spec = np.concatenate(specs)
    if not _valid_id(meta.track_id) or key != fmt.sample_key(meta.track_id, meta.clip):
        problems.append(f"{where}: json names track {meta.track_id!r} clip {meta.clip}")
    if meta.stft != index.stft:
        problems.append(f"{where}: stft {json.dumps(meta.stft)} differs from the index's")
    if not fmt.min_valid_frames(index.clip_frames) <= meta.valid_frames <= index.clip_frames:
        problems.append(
            f"{where}: valid_frames {meta.valid_frames} outside "
            f"[{fmt.min_valid_frames(index.clip_frames)}, {index.clip_frames}]"
        )
    elif np.any(spec[:, :, meta.valid_frames :]):
        problems.append(f"{where}: non-zero frames after valid_frames {meta.valid_frames}")
    if not np.all(np.isfinite(spec)):
        problems.append(f"{where}: spec holds inf or NaN")


def _valid_id(track_id) -> bool:
    try:
        fmt.sample_key(str(track_id), 0)
    except ValueError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


__all__ = ["verify_shards", "VerifyReport"]
