"""Samples: the webdataset key of a clip, its members (`spec.npy` + `json`; `mix.npy` + `target.npy`
+ `json` for separation pairs), its `json` (`SampleMeta`), the one way to read a sample, and what
a sample and a shard occupy on disk."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline import codec
from pipeline.codec import DEFAULT_ENCODING, ENCODINGS, StoredSpec
from pipeline.format.pairs import TARGET_INSTRUMENTAL
from pipeline.format.stft import STFTParams
from pipeline.records import record_from_dict

# 2: samples carry `encoding` and `codec` (log8 members `*.npy.gz`, log8-zstd `*.log8.zst`); indexes
# carry `encoding`. log8-zstd (issue 22) is a new value of that field, not a new version: older samples
# and their shard plans are unchanged, and an older reader names the encoding it does not know.
# Version-1 shards (float16, no such fields) are still read.
FORMAT_VERSION = 2

SPEC_KEY = "spec.npy"  # the float16 members; sample_arrays() names them for every encoding
META_KEY = "json"
MIX_KEY = "mix.npy"  # pair samples: the mixture's magnitude ...
TARGET_KEY = "target.npy"  # ... and the target's, on the same clip grid
SAMPLE_KIND_SPEC = "spec"  # ShardIndex.sample_kind of pretraining shards
SAMPLE_KIND_PAIRS = "pairs"  # ... and of separation pair shards
SAMPLE_KINDS = (SAMPLE_KIND_SPEC, SAMPLE_KIND_PAIRS)
_ARRAY_NAMES = {SAMPLE_KIND_SPEC: ("spec",), SAMPLE_KIND_PAIRS: ("mix", "target")}
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def sample_key(track_id: str, clip: int) -> str:
    """webdataset `__key__`: no dots (webdataset splits extensions at the first dot)."""
    key = f"{track_id}_{clip:05d}"
    if not _KEY_RE.match(key):
        raise ValueError(f"track id {track_id!r} cannot form a sample key")
    return key


@dataclass
class SampleMeta:
    """The `json` member of a sample."""

    track_id: str
    clip: int
    start_frame: int  # first STFT frame of this clip within the track
    valid_frames: int  # frames [0, valid_frames) are audio; the rest is zero padding
    album_key: str
    stft: dict = field(default_factory=lambda: STFTParams().to_dict())
    format_version: int = FORMAT_VERSION
    encoding: str = codec.FLOAT16  # how the magnitude members are stored (a version-1 json has no field)
    # per array name ("spec", or "mix" and "target"): what decoding needs (log8: reference, range_db,
    # chunk_frames, members; log8-zstd also bins and frames); {} for float16
    codec: dict[str, dict] = field(default_factory=dict)


@dataclass
class PairSampleMeta(SampleMeta):
    """The `json` member of a pair sample: `track_id` is the pair id; plus the alignment applied."""

    offset_seconds: float = 0.0
    target_kind: str = TARGET_INSTRUMENTAL


def encode_spec(spec: np.ndarray) -> bytes:
    """[2, bins, frames] float16 -> the float16 `.npy` bytes (no pickle)."""
    return codec.encode(spec, codec.FLOAT16)[0]


def encode_sample(arrays: dict[str, np.ndarray], meta: SampleMeta, encoding: str) -> dict[str, bytes]:
    """A sample's members (suffix -> bytes, in tar order): each array ("spec", or "mix" and
    "target") in `encoding`, then the json, which records the encoding and what decoding needs."""
    members, descriptions = {}, {}
    for name, spec in arrays.items():
        members[f"{name}.{codec.MEMBER_SUFFIXES[encoding]}"], description = codec.encode(spec, encoding)
        if description:
            descriptions[name] = description
    meta.encoding, meta.codec = encoding, descriptions
    members[META_KEY] = encode_meta(meta)
    return members


def read_sample(sample: dict) -> tuple[list[StoredSpec], SampleMeta]:
    """The one way to read a sample (member suffix -> bytes, as webdataset groups them): its json
    (PairSampleMeta for a pair) and its magnitudes ([spec], or [mix, target]), each opened for
    reading frames (`.read(start, stop)` decodes only those). ValueError when a member is missing,
    the json is not a sample's, or a magnitude disagrees with it (or a pair's with each other).
    Never unpickles anything."""
    if META_KEY not in sample:
        raise ValueError(f"no {META_KEY} member")
    pairs = any(str(k).split(".")[0] == "mix" for k in sample)
    meta = decode_meta(sample[META_KEY], PairSampleMeta if pairs else SampleMeta)
    if meta.encoding not in ENCODINGS:
        raise ValueError(f"{META_KEY}: unknown encoding {meta.encoding!r}")
    stored = []
    for name in _ARRAY_NAMES[SAMPLE_KIND_PAIRS if pairs else SAMPLE_KIND_SPEC]:
        member = f"{name}.{codec.MEMBER_SUFFIXES[meta.encoding]}"
        if member not in sample:
            present = sorted(k for k in sample if str(k).split(".")[0] == name)
            raise ValueError(f"{META_KEY} says {meta.encoding} but there is no {member} member (found {present})")
        try:
            stored.append(codec.open_spec(sample[member], meta.encoding, meta.codec.get(name)))
        except ValueError as exc:
            raise ValueError(f"{member}: {exc}") from exc
    if len({(array.bins, array.frames) for array in stored}) > 1:
        shapes = " and ".join(f"[2, {a.bins}, {a.frames}]" for a in stored)
        raise ValueError(f"mix and target differ in shape: {shapes}")
    return stored, meta


def encode_meta(meta: SampleMeta) -> bytes:
    return json.dumps(asdict(meta), sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_meta(data: bytes | str | dict, cls=SampleMeta) -> SampleMeta:
    """A sample's `json` member; ValueError (naming the field) for anything but a `cls` object."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except UnicodeDecodeError as exc:  # a ValueError too, but its message names bytes, not the member
            raise ValueError(f"{META_KEY} is not UTF-8 text ({exc.reason})") from exc
    return record_from_dict(cls, data, where=META_KEY)


def sample_arrays(sample_kind: str, encoding: str = codec.FLOAT16) -> tuple[str, ...]:
    """The magnitude members of a sample of this kind and encoding (e.g. `spec.log8.zst` for log8-zstd)."""
    if sample_kind not in SAMPLE_KINDS:
        raise ValueError(f"unknown sample kind {sample_kind!r} (known: {', '.join(SAMPLE_KINDS)})")
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    return tuple(f"{name}.{codec.MEMBER_SUFFIXES[encoding]}" for name in _ARRAY_NAMES[sample_kind])


def is_complete_sample(sample: dict) -> bool:
    """Whether a grouped sample has its json and every magnitude member of some kind and encoding."""
    return META_KEY in sample and any(
        all(member in sample for member in sample_arrays(kind, encoding))
        for kind in SAMPLE_KINDS
        for encoding in ENCODINGS
    )


def sample_bytes(
    stft: STFTParams, clip_frames: int, sample_kind: str = SAMPLE_KIND_SPEC, encoding: str = DEFAULT_ENCODING
) -> int:
    """Bytes one sample occupies in a tar: one member per array plus the json (512-byte header each,
    data padded to 512); for log8 an estimate from real music (codec.LOG8_ESTIMATED_RATIO)."""
    array = 128 + codec.stored_bytes_per_frame(stft.bins, encoding) * clip_frames
    meta = 512 if encoding == codec.FLOAT16 else 1024  # ~250-350 bytes of json, + ~150 per log8 array
    return int(len(sample_arrays(sample_kind)) * (512 + -(-array // 512) * 512) + 512 + meta)


def estimated_shard_bytes(
    seconds: float,
    stft: STFTParams,
    clip_frames: int,
    sample_kind: str = SAMPLE_KIND_SPEC,
    encoding: str = DEFAULT_ENCODING,
) -> int:
    """Shard bytes for `seconds` of audio (float16 is ~4.4x a 320 kbps MP3, either log8 ~1.3x; pairs twice that)."""
    clips = seconds * stft.sample_rate / stft.hop / clip_frames
    return int(clips * sample_bytes(stft, clip_frames, sample_kind, encoding))


__all__ = [
    "FORMAT_VERSION",
    "SPEC_KEY",
    "META_KEY",
    "MIX_KEY",
    "TARGET_KEY",
    "SAMPLE_KIND_SPEC",
    "SAMPLE_KIND_PAIRS",
    "SAMPLE_KINDS",
    "sample_arrays",
    "is_complete_sample",
    "sample_key",
    "SampleMeta",
    "PairSampleMeta",
    "encode_spec",
    "encode_sample",
    "read_sample",
    "encode_meta",
    "decode_meta",
    "sample_bytes",
    "estimated_shard_bytes",
]
