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
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from pipeline.durable import write_and_rename, write_text
from pipeline.records import RecordError, record_from_dict

FORMAT_VERSION = 1

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

SPEC_KEY = "spec.npy"
META_KEY = "json"
MIX_KEY = "mix.npy"  # pair samples: the mixture's magnitude ...
TARGET_KEY = "target.npy"  # ... and the target's, on the same clip grid
SAMPLE_KIND_SPEC = "spec"  # ShardIndex.sample_kind of pretraining shards
SAMPLE_KIND_PAIRS = "pairs"  # ... and of separation pair shards
SAMPLE_KINDS = (SAMPLE_KIND_SPEC, SAMPLE_KIND_PAIRS)
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


@dataclass
class PairSampleMeta(SampleMeta):
    """The `json` member of a pair sample: `track_id` is the pair id; plus the alignment applied."""

    offset_seconds: float = 0.0
    target_kind: str = TARGET_INSTRUMENTAL


def encode_spec(spec: np.ndarray) -> bytes:
    """[2, bins, frames] float16 -> .npy bytes (no pickle)."""
    if spec.ndim != 3 or spec.shape[0] != CHANNELS or spec.dtype != SPEC_DTYPE:
        raise ValueError(
            f"spec must be [{CHANNELS}, bins, frames] {np.dtype(SPEC_DTYPE)}, got {spec.shape} {spec.dtype}"
        )
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(spec), allow_pickle=False)
    return buf.getvalue()


def decode_spec(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


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


def sample_arrays(sample_kind: str) -> tuple[str, ...]:
    """The `.npy` members of a sample of this kind."""
    if sample_kind not in SAMPLE_KINDS:
        raise ValueError(f"unknown sample kind {sample_kind!r} (known: {', '.join(SAMPLE_KINDS)})")
    return (MIX_KEY, TARGET_KEY) if sample_kind == SAMPLE_KIND_PAIRS else (SPEC_KEY,)


def sample_bytes(stft: STFTParams, clip_frames: int, sample_kind: str = SAMPLE_KIND_SPEC) -> int:
    """Bytes one sample occupies in a tar: one member per array plus the json (512-byte header each,
    data padded to 512)."""
    npy = 128 + CHANNELS * stft.bins * clip_frames * np.dtype(SPEC_DTYPE).itemsize
    meta = 512  # the json member is ~250-350 bytes, padded to one block
    return len(sample_arrays(sample_kind)) * (512 + -(-npy // 512) * 512) + 512 + meta


def estimated_shard_bytes(
    seconds: float, stft: STFTParams, clip_frames: int, sample_kind: str = SAMPLE_KIND_SPEC
) -> int:
    """Shard bytes for `seconds` of audio (float16 magnitude is ~4x a 320 kbps MP3; pairs twice that)."""
    clips = seconds * stft.sample_rate / stft.hop / clip_frames
    return int(clips * sample_bytes(stft, clip_frames, sample_kind))


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
        sample_arrays(index.sample_kind)  # an unknown kind is a ValueError naming it
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
    "sample_key",
    "SampleMeta",
    "PairSampleMeta",
    "encode_spec",
    "decode_spec",
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
