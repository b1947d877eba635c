"""The one contract between the pipeline stages and the trainer.

Everything that is written by one stage and read by another is defined here: manifest records
(tracks.jsonl, failures.jsonl, pairs.jsonl), the audio/STFT constants, sample keys, the sample
payloads (`spec.npy` + `json`; `mix.npy` + `target.npy` + `json` for separation pairs), shard names
and the shard index schema. Writers and readers both import
this module; nothing else may hard-code these names or layouts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from pipeline import codec
from pipeline.codec import DEFAULT_ENCODING, ENCODINGS, StoredSpec
from pipeline.durable import write_and_rename, write_text
from pipeline.records import RecordError, record_from_dict

# 2: samples carry `encoding` and `codec` (log8 members `*.npy.gz`); indexes carry `encoding`.
# Version-1 shards (float16, no such fields) are still read.
FORMAT_VERSION = 2

# --- manifests/ ---------------------------------------------------------------------------

DEFAULT_MANIFESTS_DIR = "manifests"
TRACKS_FILE = "tracks.jsonl"
FAILURES_FILE = "failures.jsonl"
MANIFESTS_LOCK = ".lock"  # held by `pipeline ingest` while it runs, and by `pipeline shard` to merge failures
SPLITS = ("train", "val")

# FailureRecord.stage: where a file was given up on.
STAGE_SCAN = "scan"  # walking the roots: broken links, unreadable folders, undecodable names
STAGE_PROBE = "probe"  # ffprobe and content sniffing
STAGE_DECODE = "decode"  # decoding the audio for a shard
STAGE_SHARD = "shard"  # a track the shard stage cannot write (e.g. an id that cannot form a sample key)
STAGE_PAIR = "pair"  # `pipeline pairs`: no partner, no correlation, lengths that differ, unreadable
INGEST_STAGES = (STAGE_SCAN, STAGE_PROBE)  # replaced by every ingest; later stages' records are kept
SHARD_STAGES = (STAGE_DECODE, STAGE_SHARD)  # replaced by every shard run for the tracks it plans


@dataclass
class TrackRecord:
    """One line of tracks.jsonl. `id` is derived from content, never from the path."""

    id: str
    path: str  # absolute
    root: str  # the ingest root (drive) it was found under
    size: int
    mtime: float
    duration: float  # seconds
    sample_rate: int
    channels: int
    codec: str
    artist: str
    album: str
    title: str
    album_key: str  # what the train/val split is decided on
    split: str  # "train" or "val"
    duplicate_of: str | None = None  # id of the track this file duplicates, else None


@dataclass
class FailureRecord:
    """One line of failures.jsonl: a file that could not be used, and why."""

    path: str
    stage: str  # one of the STAGE_* constants
    reason: str  # one line


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def record_to_json(record) -> str:
    # Flat records skip asdict(), whose recursive deep copy was two thirds of the time to write a
    # manifest (pipeline ingest rewrites it after any change); anything nested still goes through it.
    data = {name: getattr(record, name) for name in _field_names(type(record))}
    if not all(type(value) in _JSON_SCALARS for value in data.values()):
        data = asdict(record)
    return json.dumps(data, ensure_ascii=False, sort_keys=False)


def write_jsonl(path: str | os.PathLike, records: Iterable) -> None:
    """Write records to `path`, one JSON object per line, atomically (durable.write_and_rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_and_rename(path) as fh:
        for record in records:
            fh.write(record_to_json(record))
            fh.write("\n")


def read_jsonl(path: str | os.PathLike, cls) -> Iterator:
    """Yield `cls` records from a jsonl file; a missing file yields nothing."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield record_from_dict(cls, json.loads(line))
            except ValueError as exc:  # json.JSONDecodeError and RecordError are both ValueErrors
                raise ValueError(f"{path}:{lineno}: not a valid {cls.__name__} line ({exc})") from exc


def read_tracks(manifests_dir: str | os.PathLike) -> list[TrackRecord]:
    return list(read_jsonl(Path(manifests_dir) / TRACKS_FILE, TrackRecord))


def read_failures(manifests_dir: str | os.PathLike, name: str = FAILURES_FILE) -> list[FailureRecord]:
    return list(read_jsonl(Path(manifests_dir) / name, FailureRecord))


# --- manifests/pairs.jsonl: mixture / instrumental pairs for separation ----------------------

PAIRS_FILE = "pairs.jsonl"
PAIR_FAILURES_FILE = "pair-failures.jsonl"  # FailureRecords, stage `pair` (and `decode` from shard --pairs)
TARGET_INSTRUMENTAL = "instrumental"  # the target is the partner file itself
TARGET_RESIDUAL = "mixture_minus_vocals"  # the partner is a vocals stem; the target is mixture - vocals
TARGET_KINDS = (TARGET_INSTRUMENTAL, TARGET_RESIDUAL)
LAYOUT_STEMS = "stems"  # a folder per song: mixture.<ext> + instrumental / vocals / ... stems
LAYOUT_PARALLEL = "parallel"  # two folders, mixtures and instrumentals, matched by file name


@dataclass
class PairRecord:
    """One line of pairs.jsonl: a mixture, its separation target, and how they line up.

    Alignment: the partner file's audio at time `t + offset_seconds` is the mixture's at `t`
    (a positive offset: the instrumental starts later in its file). The shard stage and the
    evaluation read the partner from `offset_seconds` on (zeros before its start), cut to the
    mixture's length. `id` is derived from both contents, the target kind and the offset, so any
    change to either file or to the alignment is a new pair.
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

    @property
    def duplicate_of(self) -> None:
        return None


def read_pairs(manifests_dir: str | os.PathLike) -> list[PairRecord]:
    return list(read_jsonl(Path(manifests_dir) / PAIRS_FILE, PairRecord))


# --- audio and STFT -----------------------------------------------------------------------

SAMPLE_RATE = 44100
CHANNELS = 2
SPEC_DTYPE = np.float16


DEFAULT_N_FFT = 2048
DEFAULT_HOP = 1024


@dataclass(frozen=True)
class STFTParams:
    """STFT magnitude of the 44.1 kHz stereo signal, |X| unnormalised, periodic Hann window.

    Framing is "centred with zero padding" (torch.stft(center=True, pad_mode="constant")): frame f
    covers samples [f*hop - n_fft/2, f*hop + n_fft/2), zeros outside the track, so a track of N
    samples has 1 + N // hop frames. The Nyquist bin is dropped: bins = n_fft // 2.
    Invalid parameters are a ValueError here, where every stage builds them.
    """

    n_fft: int = DEFAULT_N_FFT
    hop: int = DEFAULT_HOP
    window: str = "hann"
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        values = (self.n_fft, self.hop, self.sample_rate)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ValueError(f"n_fft, hop and sample_rate must be integers, got {values}")
        if self.n_fft < 2 or self.n_fft % 2 or self.hop < 1 or self.sample_rate < 1:
            raise ValueError(
                f"need an even n_fft >= 2, hop >= 1 and sample_rate >= 1, "
                f"got n_fft={self.n_fft} hop={self.hop} sample_rate={self.sample_rate}"
            )
        if self.window != "hann":
            raise ValueError(f"only the hann window is supported, got {self.window!r}")

    @property
    def bins(self) -> int:
        return self.n_fft // 2

    def to_dict(self) -> dict:
        return {**asdict(self), "bins": self.bins}

    @classmethod
    def from_dict(cls, data: dict) -> STFTParams:
        return cls(**{k: data[k] for k in ("n_fft", "hop", "window", "sample_rate") if k in data})


DEFAULT_CLIP_FRAMES = 1024


def min_valid_frames(clip_frames: int) -> int:
    """A tail (or a whole short track) becomes a zero-padded clip when it fills at least half a clip."""
    return (clip_frames + 1) // 2


# --- samples ------------------------------------------------------------------------------

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
    # chunk_frames, members); {} for float16
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
    """The magnitude members of a sample of this kind and encoding (e.g. `spec.npy.gz` for log8)."""
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
    """Shard bytes for `seconds` of audio (float16 is ~4.4x a 320 kbps MP3, log8 ~1.1x; pairs twice that)."""
    clips = seconds * stft.sample_rate / stft.hop / clip_frames
    return int(clips * sample_bytes(stft, clip_frames, sample_kind, encoding))


# --- shards and index ---------------------------------------------------------------------

DEFAULT_SHARDS_DIR = "shards"
INDEX_KIND = "wids-shard-index-v1"
DEFAULT_SHARD_SIZE = "1GB"  # what `pipeline shard --shard-size` parses by default
DEFAULT_SHARD_BYTES = 1_000_000_000


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


_SHARD_NAME_RE = re.compile(r"^[A-Za-z0-9_]+-\d{6}\.tar$")


def is_shard_name(name: str) -> bool:
    """Whether a file name is a final shard name (as `shard_name` makes them)."""
    return _SHARD_NAME_RE.match(name) is not None


def index_name(split: str) -> str:
    return f"{split}.json"


@dataclass
class ShardEntry:
    url: str  # relative to the index file's directory
    nsamples: int
    filesize: int
    sha256: str = ""  # of the whole shard file; "" in indexes written before it was recorded


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes (what `ShardEntry.sha256` records), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ShardIndex:
    """`{split}.json`: a wids shard index (`wids-shard-index-v1`) plus STFT parameters and totals."""

    split: str
    shardlist: list[ShardEntry]
    stft: dict  # STFTParams.to_dict()
    clip_frames: int
    totals: dict[str, int | float]  # {"samples", "tracks", "seconds", "bytes"}
    format_version: int = FORMAT_VERSION
    sample_kind: str = SAMPLE_KIND_SPEC  # SAMPLE_KIND_PAIRS: separation pairs (mix.npy + target.npy)
    encoding: str = codec.FLOAT16  # every sample's encoding (a version-1 index has no field)

    def to_json(self) -> str:
        data = {
            "__kind__": INDEX_KIND,
            "wids_version": 1,
            "name": self.split,
            "split": self.split,
            "format_version": self.format_version,
            # An entry without a checksum omits the key rather than carrying "" (older readers, wids).
            "shardlist": [{k: v for k, v in asdict(s).items() if v != "" or k != "sha256"} for s in self.shardlist],
            "stft": self.stft,
            "clip_frames": self.clip_frames,
            "encoding": self.encoding,
            "totals": self.totals,
        }
        if self.sample_kind != SAMPLE_KIND_SPEC:  # pretraining indexes stay as they were
            data["sample_kind"] = self.sample_kind
        return json.dumps(data, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ShardIndex:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("__kind__") != INDEX_KIND:
            kind = data.get("__kind__") if isinstance(data, dict) else None
            raise ValueError(f"not a {INDEX_KIND} file (kind={kind!r})")
        # a plain wids index (another tool's) names no split, STFT or clip length: ours are the defaults
        defaults = {"split": data.get("name", ""), "stft": STFTParams().to_dict(), "clip_frames": DEFAULT_CLIP_FRAMES}
        index = record_from_dict(cls, {"totals": {}, **defaults, **data}, where="index")
        STFTParams.from_dict(index.stft)  # every reader builds them: refuse bad ones here, naming the file
        sample_arrays(index.sample_kind, index.encoding)  # an unknown kind or encoding is a ValueError naming it
        return index


def read_index(path: str | os.PathLike) -> ShardIndex:
    path = Path(path)
    try:
        return ShardIndex.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable shard index ({exc})") from exc


def write_index(path: str | os.PathLike, index: ShardIndex) -> None:
    write_text(path, index.to_json())


__all__ = [
    # manifests/
    "DEFAULT_MANIFESTS_DIR",
    "TRACKS_FILE",
    "FAILURES_FILE",
    "MANIFESTS_LOCK",
    "SPLITS",
    "STAGE_SCAN",
    "STAGE_PROBE",
    "STAGE_DECODE",
    "STAGE_SHARD",
    "INGEST_STAGES",
    "SHARD_STAGES",
    "TrackRecord",
    "FailureRecord",
    "record_to_json",
    "record_from_dict",
    "RecordError",
    "write_jsonl",
    "read_jsonl",
    "read_tracks",
    "read_failures",
    # manifests/pairs.jsonl
    "STAGE_PAIR",
    "PAIRS_FILE",
    "PAIR_FAILURES_FILE",
    "TARGET_INSTRUMENTAL",
    "TARGET_RESIDUAL",
    "TARGET_KINDS",
    "LAYOUT_STEMS",
    "LAYOUT_PARALLEL",
    "PairRecord",
    "read_pairs",
    # audio and STFT
    "SAMPLE_RATE",
    "CHANNELS",
    "SPEC_DTYPE",
    "DEFAULT_N_FFT",
    "DEFAULT_HOP",
    "STFTParams",
    "DEFAULT_CLIP_FRAMES",
    "min_valid_frames",
    # samples
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
    "ENCODINGS",
    "DEFAULT_ENCODING",
    "StoredSpec",
    "encode_spec",
    "encode_sample",
    "read_sample",
    "encode_meta",
    "decode_meta",
    "sample_bytes",
    "estimated_shard_bytes",
    # shards/ and the index
    "DEFAULT_SHARDS_DIR",
    "INDEX_KIND",
    "DEFAULT_SHARD_SIZE",
    "DEFAULT_SHARD_BYTES",
    "shard_name",
    "is_shard_name",
    "index_name",
    "ShardEntry",
    "file_sha256",
    "ShardIndex",
    "read_index",
    "write_index",
]
