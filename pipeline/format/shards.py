"""Shards and their index: shard file names, and `{split}.json`, a wids shard index plus the STFT
parameters, clip length, encoding and totals (`ShardIndex`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import codec
from pipeline.durable import write_text
from pipeline.format.samples import FORMAT_VERSION, SAMPLE_KIND_SPEC, sample_arrays
from pipeline.format.stft import DEFAULT_CLIP_FRAMES, STFTParams
from pipeline.records import record_from_dict

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
