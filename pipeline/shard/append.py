"""`pipeline shard --append`: the stored plan's units exactly as they are, plus new units after them
for the tracks the manifest gained.

The stored plan (`.state/plan.json`) records which tracks each unit holds, so the old units are
rebuilt from it, not re-planned: their fingerprints, and so their shards, stay the same byte for
byte. The added tracks of each split are interleaved among themselves (seeded by the plan's seed, the
split and the number of appends so far, so every album of the new batch is still spread over its
new shards) and packed into units numbered after the split's last one. Everything here is a pure
function of the stored plan and the manifest, so an interrupted append, rerun, makes the same plan
again (or finds it already stored, with nothing left to add) and resumes unit by unit; appending A
then B gives the same bytes however often either run was killed.

Only additions: a removed or changed track, or changed options, is refused (a full rebuild with
`--force` re-interleaves everything).
"""

from __future__ import annotations

from collections import defaultdict

from pipeline import format as fmt
from pipeline.shard.plan import (
    Plan,
    ShardOptions,
    Unit,
    describe_changes,
    interleave,
    make_plan,
    pack,
    split_order,
    split_rng,
    track_sizes,
)


class AppendRefused(ValueError):
    """The manifest or options changed in a way appending cannot express; str() is one line."""


def extend_plan(stored: dict, tracks: list, options: ShardOptions) -> Plan:
    """The plan `stored` (a `plan_record`) with the manifest's new tracks in new units after its own."""
    fresh = make_plan(tracks, options)  # validates the records, drops duplicates, signs the tracks
    old_tracks: dict[str, str] = stored["tracks"]
    removed = [t for t in old_tracks if t not in fresh.tracks]
    changed = [t for t, sig in old_tracks.items() if t in fresh.tracks and fresh.tracks[t] != sig]
    if stored["options"] != options.to_dict() or removed or changed:
        raise AppendRefused(
            f"{describe_changes(stored, fresh)}; --append only adds tracks with the same options "
            "(--force rebuilds the whole set)"
        )
    layout: dict[str, list[str]] = stored.get("layout") or {}
    if sorted(layout) != sorted(stored["units"]) or sorted(t for ids in layout.values() for t in ids) != sorted(
        old_tracks
    ):
        raise AppendRefused("the stored plan does not record its units' tracks (made before --append); --force once")
    records = {t.id: t for unit in fresh.units for t in unit.tracks}
    units = [_stored_unit(name, [records[t] for t in ids], options) for name, ids in layout.items()]
    added: dict[str, list] = defaultdict(list)
    for track_id in sorted(fresh.tracks):
        if track_id not in old_tracks:
            added[records[track_id].split].append(records[track_id])
    appends = int(stored.get("appends", 0)) + (1 if added else 0)
    for split in sorted(added, key=split_order):
        ordered = interleave(added[split], split_rng(options, split, appends))
        first = 1 + max((u.index for u in units if u.split == split), default=-1)
        units += pack(split, ordered, track_sizes(ordered, options), options.shard_bytes, first)
    units.sort(key=lambda u: (split_order(u.split), u.index))
    return Plan(options, units, fresh.tracks, fresh.skipped_duplicates, appends)


def _stored_unit(name: str, tracks: list, options: ShardOptions) -> Unit:
    stem, _, number = name.removesuffix(".tar").rpartition("-")
    if fmt.shard_name(stem, int(number)) != name:
        raise AppendRefused(f"the stored plan names a unit {name!r} that is no shard name; --force once")
    return Unit(stem, int(number), tuple(tracks), sum(track_sizes(tracks, options)))


__all__ = ["extend_plan", "AppendRefused"]
