"""Durable files and folder locks: the one mechanism every writer of the project uses.

A file is never visible half-written under its final name: it is written under a temporary name in
the same folder, flushed and fsynced, renamed over the final name, and the folder is fsynced so the
rename survives a power cut. Temporary names are `.{name}.tmp-{pid}`: hidden (scans skip them),
never a final name, and the pid tells a later run whether their writer is gone.

One writer per folder: `exclusive` holds a lock file that the kernel releases when its holder dies,
even by kill -9.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = [
    "FolderBusy",
    "check_writable",
    "exclusive",
    "fsync_dir",
    "fsync_file",
    "is_temp_name",
    "remove_stale_temporaries",
    "staged_directory",
    "staged_path",
    "temp_path",
    "write_and_rename",
    "write_text",
]


# --- temporary names --------------------------------------------------------------------------


def temp_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """Where `path` is written before it is renamed into place. `keep_suffix` keeps the extension
    last (`.{stem}.tmp-{pid}{suffix}`) for programs that choose a format by it, such as ffmpeg."""
    path = Path(path)
    if keep_suffix:
        return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def _final_name(temp_name: str) -> str:
    """`.{name}.tmp-{pid}[suffix]` -> name (`keep_suffix` temporaries lose their suffix here)."""
    return temp_name[1:].rpartition(".tmp-")[0]


def _writer_pid(name: str) -> int | None:
    digits = name.rpartition(".tmp-")[2].partition(".")[0]
    return int(digits) if digits.isdigit() else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(
    folder: str | os.PathLike, only_dead_writers: bool = True, only: Callable[[str], bool] | None = None
) -> int:
    """Delete the temporaries in `folder` left by killed runs; returns how many. With
    `only_dead_writers=False` (the caller holds the folder's lock, so nobody else writes there) every
    temporary goes, including one whose pid a new process happens to have reused. `only(final name)`
    limits it to the temporaries of the caller's own names, in a folder shared with other files."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not is_temp_name(entry.name) or (only is not None and not only(_final_name(entry.name))):
            continue
        pid = _writer_pid(entry.name)
        if only_dead_writers and pid is not None and _process_alive(pid):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed += 1
    return removed


# --- fsync --------------------------------------------------------------------------------------


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        return  # some file systems cannot fsync a directory; the rename itself already happened
    finally:
        os.close(fd)


# --- write, then rename ---------------------------------------------------------------------------


@contextmanager
def write_and_rename(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Yield a file opened (`mode` "w" as UTF-8 text, or "wb") on the temporary of `path`. On a normal
    exit the file is flushed, fsynced and renamed to `path`, and the folder fsynced; on any exception
    (kill -9 aside) the temporary is removed and nothing under `path` changes."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def check_writable(folder: str | os.PathLike) -> None:
    """OSError (naming `folder`) unless a file can be written and renamed in `folder` now: creates
    and removes one temporary. Asking `os.access` is not enough (a read-only mount, root)."""
    tmp = temp_path(Path(folder) / "write-check")
    with open(tmp, "x"):
        pass
    tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """The whole of `text` at `path`, or the previous content: never a part."""
    with write_and_rename(path) as fh:
        fh.write(text)


@contextmanager
def staged_path(path: str | os.PathLike, before_rename: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """For files another program writes by name (ffmpeg): yield the temporary path (extension kept);
    once the block has filled it, fsync it, call `before_rename(tmp)` if given, and rename."""
    path = Path(path)
    tmp = temp_path(path, keep_suffix=True)
    try:
        yield tmp
        fsync_file(tmp)
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def staged_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A directory built under a temporary name: yield it empty; afterwards every file in it is
    fsynced and it replaces `path` (an existing `path` is moved aside first and then deleted, so a
    kill at any instant leaves either the old or the new directory under the name)."""
    path = Path(path)
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                fsync_file(child)
        fsync_dir(tmp)
        if path.exists():
            aside = temp_path(path.with_name(path.name + ".old"))
            os.replace(path, aside)
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


# --- one writer per folder ------------------------------------------------------------------------


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock; str() is a one-line message naming the folder."""


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


@contextmanager
def exclusive(
    lock_file: str | os.PathLike, busy_message: str, *, wait: bool = False, per_process: bool = False
) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` for the block.

    `wait=False` fails at once with FolderBusy(busy_message); `wait=True` blocks, for short critical
    sections such as merging a few lines into another stage's file.

    The lock is an flock, which two opens conflict on even inside one process. `per_process=True`
    takes a POSIX record lock instead, for a process that forks workers (the trainer's DataLoader):
    forked children share an flock and would keep it after their parent is killed, refusing the
    resume that follows; a record lock belongs to the process alone and dies with it.
    A file system without locks (ENOLCK, some FUSE mounts) gets a warning, and the block runs unguarded.
    An existing folder as `lock_file` is flocked itself, which leaves no file in it (a folder of the
    user's, such as `trainer separate --out`); a record lock needs a file.
    """
    lock_file = Path(lock_file)
    folder = lock_file.is_dir()
    if folder:
        if per_process:
            raise ValueError(f"{lock_file}: a record lock needs a lock file, not a folder")
        fd = os.open(lock_file, os.O_RDONLY | os.O_DIRECTORY)
    else:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        try:
            if per_process:
                fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            # some network and FUSE file systems lock files but not folders (EINVAL, EBADF)
            if exc.errno in _NO_LOCKS or (folder and exc.errno in (errno.EINVAL, errno.EBADF)):
                print(
                    f"warning: {lock_file}: cannot lock ({exc.strerror}); nothing stops a second writer here",
                    file=sys.stderr,
                )
            elif exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise FolderBusy(busy_message) from None
            else:
                raise
        yield
    finally:
        os.close(fd)  # releases either kind of lock
