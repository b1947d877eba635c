"""The output folder: `pipeline shard` removes and replaces only files it wrote.

A run deletes outdated shards and indexes and renames new ones over their names, so it must know
which files under its names are its own. The rule is by folder, recorded once:

- A folder becomes the tool's when a run claims it: `OUT/.state/owner` is written, and only into a
  folder that holds nothing under the tool's names (shard names `{split}-NNNNNN.tar`, index names
  `{split}.json` of the splits it writes, `.state`). A folder that does hold such files, and
  no owner record, is refused with one line naming them: they are the user's (another dataset's
  shards, a `train.json` of their own), and `--force` does not change that.
- In a claimed folder, files under those names are the tool's, with one check: a file under an
  index name must be a shard index (`__kind__` wids-shard-index-v1), so a user's own `train.json`
  dropped there later is refused rather than replaced.
- Temporaries are removed only when they are temporaries of the tool's names.

A `.state` with a `plan.json` but no owner record was made by a version before the record existed:
it is claimed as is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline import format as fmt
from pipeline.durable import fsync_dir, remove_stale_temporaries, temp_path, write_text

OWNER_FILE = "owner"
LEGACY_PLAN_FILE = "plan.json"  # run.PLAN_FILE; a .state holding it was made by an older version


class ForeignFiles(Exception):
    """The output folder holds files the tool did not write under its names; str() is one line."""


def claim(out: Path, state_dir: str, splits: list[str]) -> None:
    """Make sure `out` is (or becomes) the tool's; ForeignFiles otherwise. Creates `out/state_dir`."""
    state = out / state_dir
    out.mkdir(parents=True, exist_ok=True)
    if state.is_symlink() or (state.exists() and not state.is_dir()):
        raise ForeignFiles(f"{state}: not made by `pipeline shard`; move it away or choose another --out")
    if state.is_dir() and ((state / OWNER_FILE).is_file() or (state / LEGACY_PLAN_FILE).is_file()):
        check_indexes(out, splits)
        if not (state / OWNER_FILE).is_file():
            _write_owner(state)
        return
    if state.is_dir():
        raise ForeignFiles(
            f"{state}: a folder `pipeline shard` did not make (no {state_dir}/{OWNER_FILE}); "
            "move it away or choose another --out"
        )
    names = sorted(p.name for p in out.iterdir() if _is_ours(p.name, splits))
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ForeignFiles(
            f"{out}: holds {shown}, not written by `pipeline shard` here (no {state_dir}/{OWNER_FILE}); "
            f"it never replaces files it did not write: move {'it' if len(names) == 1 else 'them'} away "
            "or choose another --out"
        )
    _create_state(state)


def check_indexes(out: Path, splits: list[str]) -> None:
    """ForeignFiles when a file under one of the index names is not a shard index."""
    for split in sorted(set(fmt.SPLITS) | set(splits)):
        path = out / fmt.index_name(split)
        if not path.exists() and not path.is_symlink():
            continue
        try:
            kind = json.loads(path.read_text(encoding="utf-8")).get("__kind__")
        except (OSError, ValueError, AttributeError):
            kind = None
        if path.is_symlink() or not path.is_file() or kind != fmt.INDEX_KIND:
            raise ForeignFiles(
                f"{path}: not a shard index written by `pipeline shard`; it never replaces files it did "
                "not write: move it away or choose another --out"
            )


def remove_own_temporaries(out: Path, state_dir: str, splits: list[str]) -> None:
    """Leftovers of killed runs (the caller holds the folder's lock, so no writer is alive): in `out`
    only temporaries of shard and index names, in the state folder all of them."""
    remove_stale_temporaries(
        out, only_dead_writers=False, only=lambda name: name == state_dir or _is_ours(name, splits)
    )
    remove_stale_temporaries(out / state_dir, only_dead_writers=False)


def _is_ours(name: str, splits: list[str]) -> bool:
    return fmt.is_shard_name(name) or name in {fmt.index_name(s) for s in set(fmt.SPLITS) | set(splits)}


def _create_state(state: Path) -> None:
    """The state folder appears with its owner record in it (built under a temporary name, then
    renamed), so a second run starting at the same moment never sees a `.state` without one."""
    tmp = temp_path(state)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_owner(tmp)
    try:
        os.rename(tmp, state)
    except OSError:  # another run claimed it first: theirs stands (and is checked under the lock)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (state / OWNER_FILE).is_file():
            raise
    fsync_dir(state.parent)


def _write_owner(state: Path) -> None:
    record = {"written_by": "pipeline shard", "note": "shards, indexes and .state/ here are replaced by it"}
    write_text(state / OWNER_FILE, json.dumps(record, sort_keys=True) + "\n")
    fsync_dir(state)


__all__ = ["claim", "check_indexes", "remove_own_temporaries", "ForeignFiles", "OWNER_FILE"]
