"""Where the shards are: a shard directory, an index JSON, a brace pattern or URLs -> the list of
shard files (and the bins or STFT parameters their index declares)."""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

from webdataset.shardlists import expand_urls

from pipeline.format import ShardIndex, STFTParams, decode_meta, index_name, read_index
from trainer.data.reader import ShardReader, is_url


def _fetch_index(url: str) -> ShardIndex:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return ShardIndex.from_json(response.read().decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{url}: unreadable shard index ({exc})") from exc


def resolve_shards(src: str, split: str = "train") -> list[str]:
    """Shard URLs/paths for `src`, which is one of:

    - a shard directory (local, or an http(s) URL ending in "/"): its `{split}.json` index;
    - an index JSON (local path or URL): its shardlist, relative to the index's location;
    - a brace pattern ("shards/train-{000000..000009}.tar", also as a URL), or one tar.
    Raises ValueError naming `src` when nothing usable is found.
    """
    return _resolve(src, split)[0]


def _resolve(src: str, split: str) -> tuple[list[str], int | None]:
    """(shard URLs/paths, the frequency bins the index declares, or None without an index)."""
    src = str(src)
    if is_url(src):
        if src.endswith("/"):
            src = urllib.parse.urljoin(src, index_name(split))
        if src.endswith(".json"):
            index = _fetch_index(src)
            return _nonempty(src, [urllib.parse.urljoin(src, entry.url) for entry in index.shardlist]), _bins(index)
        return _nonempty(src, expand_urls(src)), None

    path = Path(src).expanduser()
    if path.is_dir():
        index_path = path / index_name(split)
        if not index_path.exists():
            raise ValueError(
                f"{path}: no {index_name(split)} shard index in this directory (run `pipeline shard` first)"
            )
        path = index_path
    if path.suffix == ".json":
        index = read_index(path)
        return _nonempty(src, [str(path.parent / entry.url) for entry in index.shardlist]), _bins(index)
    if "{" in src:
        return _nonempty(src, expand_urls(str(path))), None
    if path.is_file():
        return [str(path)], None
    raise ValueError(f"{src}: not a shard directory, index JSON, brace pattern or tar file")


def _bins(index: ShardIndex) -> int:
    return STFTParams.from_dict(index.stft).bins  # read_index has checked the parameters


def _nonempty(src: str, shards: list[str]) -> list[str]:
    if not shards:
        raise ValueError(f"{src}: lists no shards")
    return shards


def shard_bins(src: str, split: str = "train") -> int | None:
    """The frequency bins the shards' index declares (None for a pattern or tar without an index)."""
    return _resolve(src, split)[1]


def shard_stft(src: str, split: str = "train") -> dict:
    """The STFT parameters the shards were made with (from their index, else from the first sample):
    `trainer separate` must analyse audio exactly as the training data was."""
    path = Path(src)
    index = path / f"{split}.json" if path.is_dir() else path
    if index.suffix == ".json" and index.is_file():
        return read_index(index).stft
    for sample in ShardReader(max_empty_in_a_row=None).samples(iter(resolve_shards(src, split)[:1])):
        return decode_meta(sample["json"]).stft
    raise ValueError(f"{src}: cannot read the STFT parameters of the shards (no readable sample)")


__all__ = ["resolve_shards", "shard_bins", "shard_stft"]
