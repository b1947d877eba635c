"""One writer per folder: an flock that the kernel releases when its holder dies (even by kill -9)."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock; str() is a one-line message naming the folder."""


@contextmanager
def exclusive(lock_file: str | Path, busy_message: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` for the block.

    `wait=False` fails at once with FolderBusy(busy_message); `wait=True` blocks, for short
    critical sections such as merging a few lines into another stage's file.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise FolderBusy(busy_message) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
