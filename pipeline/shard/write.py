"""One unit -> one shard tar, reproducible to the byte and never visible half-written.

The tar is written by hand from `tarfile.TarInfo` headers with fixed fields (mtime 0, uid/gid 0,
empty user/group names, mode 0o644, ustar) in the plan's order, so the same unit always gives the
same bytes. It goes to a hidden temporary name in the output folder, is fsynced, its state record
(`.state/{shard}.json`) is written, and only then is it renamed to its final name.

A track that fails to decode is cut out of the tar again (truncate back to where it started) and
reported; the unit still completes with the other tracks. So is a track whose file no longer has
the size and mtime the manifest recorded (checked before and after decoding): its id and duration
describe other content, and writing it would put new audio under an old name.

The sha256 of the finished tar is computed while it is written (the hash state is copied at each
track's start, so cutting a track out restores it) and recorded in the state and the index: resume
and `pipeline verify` compare it to the file, which catches a flipped bit that keeps the size.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import format as fmt
from pipeline.durable import write_and_rename, write_text
from pipeline.shard.faults import fault_point, inject_enospc
from pipeline.shard.plan import ShardOptions, Unit

STATE_DIR = ".state"
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_USTAR_NAME_BYTES = 100  # a member name without "/" cannot use ustar's prefix field


@dataclass
class UnitResult:
    """What a unit sends back to the parent (small: no audio) and stores in its state file."""

    name: str
    split: str
    fingerprint: str
    nsamples: int
    filesize: int
    tracks: int  # tracks decoded (with or without clips)
    seconds: float  # manifest duration of those tracks
    failures: list[dict] = field(default_factory=list)  # format.FailureRecord as dicts
    # Failed tracks whose file was gone at the time (an unplugged drive): a rerun redoes the unit
    # once they are back, so the shard ends up as an uninterrupted run would have written it.
    missing: list[str] = field(default_factory=list)
    # sha256 of the finished tar; "" in states written before checksums were recorded.
    sha256: str = ""
    # Failed tracks whose file differed from the manifest at the time: a rerun redoes the unit once
    # they match it again (a file restored from a backup).
    changed: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> UnitResult:
        return fmt.record_from_dict(cls, data)


def state_path(out_dir: Path, shard: str) -> Path:
    return out_dir / STATE_DIR / f"{shard}.json"


def read_state(out_dir: Path, shard: str) -> UnitResult | None:
    """The state record of a shard, or None when missing or unreadable (then the unit is redone)."""
    try:
        return UnitResult.from_dict(json.loads(state_path(out_dir, shard).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_state(out_dir: Path, result: UnitResult) -> None:
    write_text(state_path(out_dir, result.name), json.dumps(asdict(result), sort_keys=True))


class ReproducibleTar:
    """Append-only ustar writer with fixed header fields, a running sha256 of everything written,
    and the ability to cut back to a mark."""

    def __init__(self, fileobj):
        self._fh = fileobj
        self.offset = fileobj.tell()
        self._sha256 = hashlib.sha256()

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._sha256.update(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def mark(self) -> tuple:
        """Where the archive stands now, for `rollback`."""
        return self.offset, self._sha256.copy()

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        header = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        padding = -len(data) % _BLOCK
        inject_enospc(len(header) + len(data) + padding)
        self._write(header)
        self._write(data)
        self._write(b"\0" * padding)
        self.offset += len(header) + len(data) + padding

    def rollback(self, mark: tuple) -> None:
        offset, sha256 = mark
        self._fh.seek(offset)
        self._fh.truncate()
        self.offset, self._sha256 = offset, sha256.copy()

    def finish(self) -> None:
        """End-of-archive blocks, padded to a full record like GNU tar and Python's tarfile."""
        end = self.offset + 2 * _BLOCK
        end += -end % _RECORD
        inject_enospc(end - self.offset)
        self._write(b"\0" * (end - self.offset))
        self.offset = end


def write_unit(unit: Unit, out_dir: str | os.PathLike, options: ShardOptions) -> UnitResult:
    """Decode, cut and write every track of `unit` into its shard; returns counts and failures."""
    from pipeline.audio.decode import DecodeError
    from pipeline.audio.stft import track_clips

    if options.pairs:
        from pipeline.pairs.clips import pair_clips

        track_clips = _pair_samples(pair_clips)
    out_dir = Path(out_dir)
    nsamples = tracks_done = 0
    seconds = 0.0
    failures: list[dict] = []
    missing: list[str] = []
    changed: list[str] = []
    # The state record is written before the tar is renamed into place: a kill in between leaves a
    # state whose shard is missing, which the next run redoes.
    with write_and_rename(out_dir / unit.name, "wb") as fh:
        tar = ReproducibleTar(fh)
        for track in unit.tracks:
            mark, written = tar.mark(), 0
            try:
                _check_unchanged(track)
                for clip in _clips_of(track, options, track_clips, DecodeError):
                    fault_point("decode")
                    key = fmt.sample_key(track.id, clip.clip)
                    common = dict(
                        track_id=track.id,
                        clip=clip.clip,
                        start_frame=clip.start_frame,
                        valid_frames=clip.valid_frames,
                        album_key=track.album_key,
                        stft=options.stft.to_dict(),
                    )
                    if options.pairs:
                        meta = fmt.PairSampleMeta(
                            **common, offset_seconds=track.offset_seconds, target_kind=track.target_kind
                        )
                        arrays = {"mix": clip.spec, "target": clip.target}
                    else:
                        meta = fmt.SampleMeta(**common)
                        arrays = {"spec": clip.spec}
                    for suffix, data in fmt.encode_sample(arrays, meta, options.encoding).items():
                        if suffix == fmt.META_KEY:
                            fault_point("tar-member")
                        tar.add(f"{key}.{suffix}", data)
                    written += 1
                _check_unchanged(track)  # rewritten while it was decoded
            except _TrackFailed as exc:
                tar.rollback(mark)
                failures.append(asdict(fmt.FailureRecord(exc.path or track.path, exc.stage, exc.reason)))
                files = (track.mixture_path, track.target_path) if options.pairs else (track.path,)
                missing += [path for path in files if not os.path.exists(path)]
                if exc.stage == fmt.STAGE_SHARD and exc.reason.startswith((CHANGED_REASON, CHANGED_PAIR_REASON)):
                    changed.append(exc.path or track.path)
                continue
            nsamples += written
            tracks_done += 1
            seconds += track.duration
        tar.finish()
        result = UnitResult(
            unit.name,
            unit.split,
            unit.fingerprint(options),
            nsamples,
            tar.offset,
            tracks_done,
            seconds,
            failures,
            missing,
            tar.sha256,
            changed,
        )
        write_state(out_dir, result)
        fault_point("state")
    fault_point("renamed")
    return result


def _pair_samples(pair_clips):
    """`track_clips` for pairs: the mixture clip, carrying its target clip's spectrogram as `.target`."""

    def clips(pair, stft, clip_frames):
        for mixture, target in pair_clips(pair, stft, clip_frames):
            mixture.target = target.spec
            yield mixture

    return clips


CHANGED_REASON = "changed since ingest: re-run pipeline ingest"
CHANGED_PAIR_REASON = "changed since it was paired: re-run pipeline pairs"


def recorded_files(track: fmt.TrackRecord | fmt.PairRecord) -> list[tuple[str, int, float]]:
    """(path, size, mtime) of every file a manifest record stands for: one track, or a pair's two."""
    if isinstance(track, fmt.PairRecord):
        return [
            (track.mixture_path, track.mixture_size, track.mixture_mtime),
            (track.target_path, track.target_size, track.target_mtime),
        ]
    return [(track.path, track.size, track.mtime)]


def file_changed(path: str, size: int, mtime: float) -> str | None:
    """How the file at `path` differs from its manifest record (size, mtime), or None when it
    matches or is gone (a missing file is the decoder's failure to report)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size != size:
        return f"size {size} -> {st.st_size} bytes"
    if st.st_mtime != mtime:
        return f"mtime {mtime} -> {st.st_mtime}"
    return None


def pair_changed(pair: fmt.PairRecord) -> str | None:
    """`PATH: changed since it was paired: ... (how)` for the first of the pair's files that no
    longer matches its record, or None: what every reader of a pair says before using it."""
    for path, size, mtime in recorded_files(pair):
        difference = file_changed(path, size, mtime)
        if difference is not None:
            return f"{path}: {CHANGED_PAIR_REASON} ({difference})"
    return None


def _check_unchanged(track: fmt.TrackRecord | fmt.PairRecord) -> None:
    reason = CHANGED_PAIR_REASON if isinstance(track, fmt.PairRecord) else CHANGED_REASON
    for path, size, mtime in recorded_files(track):
        difference = file_changed(path, size, mtime)
        if difference is not None:
            raise _TrackFailed(fmt.STAGE_SHARD, f"{reason} ({difference})", path)


class _TrackFailed(Exception):
    def __init__(self, stage: str, reason: str, path: str | None = None):
        super().__init__(reason)
        self.stage, self.reason, self.path = stage, reason, path


def _clips_of(track: fmt.TrackRecord, options: ShardOptions, track_clips, decode_error: type):
    """The decoder's clips for one track. Its failures become _TrackFailed; ours (say ENOSPC on the
    tar, raised in the caller's loop body) pass through untouched."""
    try:
        longest = max(fmt.sample_arrays(options.sample_kind, options.encoding), key=len)
        member = f"{fmt.sample_key(track.id, 0)}.{longest}"
    except ValueError as exc:
        raise _TrackFailed(fmt.STAGE_SHARD, _one_line(exc)) from exc
    if len(member.encode("utf-8")) > _USTAR_NAME_BYTES:  # tarfile would raise mid-unit and fail the job
        raise _TrackFailed(
            fmt.STAGE_SHARD,
            f"track id {track.id!r} is too long for a tar member name "
            f"({len(member.encode('utf-8'))} > {_USTAR_NAME_BYTES} bytes)",
        )
    clips = None
    try:
        try:
            source = track if options.pairs else track.path  # a pair decodes two files
            clips = iter(track_clips(source, options.stft, options.clip_frames))
            while True:
                try:
                    clip = next(clips)
                except StopIteration:
                    return
                yield clip
        except decode_error as exc:
            # a pair's failure is recorded under the file that failed, which the message names
            files = (track.mixture_path, track.target_path) if options.pairs else (track.path,)
            named = next((path for path in files if path in str(exc)), None)
            raise _TrackFailed(
                fmt.STAGE_DECODE, _one_line(exc) if named else f"{track.path}: {_one_line(exc)}", named
            ) from exc
        except (OSError, ValueError) as exc:
            raise _TrackFailed(fmt.STAGE_DECODE, f"{track.path}: {type(exc).__name__}: {_one_line(exc)}") from exc
    finally:
        close = getattr(clips, "close", None)
        if close is not None:
            close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


__all__ = [
    "UnitResult",
    "ReproducibleTar",
    "write_unit",
    "read_state",
    "write_state",
    "state_path",
    "file_changed",
    "recorded_files",
    "pair_changed",
    "CHANGED_REASON",
    "CHANGED_PAIR_REASON",
    "STATE_DIR",
]
