"""Fault injection for the resume tests: kill -9 at a chosen point, or a "full disk".

PIPELINE_SHARD_FAULT="point:N[,point:N...]": SIGKILL this process the N-th time it reaches `point`
(decode, tar-member, state, renamed, index); "enospc:BYTES": the disk is "full" once this process
has written BYTES of shard data. Unset in normal use, where each check is one dict lookup.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

FAULT_ENV = "PIPELINE_SHARD_FAULT"

_fault_hits: Counter = Counter()
_bytes_written = 0


def _faults() -> dict[str, int]:
    spec = os.environ.get(FAULT_ENV, "")
    faults = {}
    for item in filter(None, spec.split(",")):
        point, _, count = item.partition(":")
        faults[point.strip()] = int(count or 1)
    return faults


def fault_point(point: str) -> None:
    target = _faults().get(point) if FAULT_ENV in os.environ else None
    if target is None:
        return
    _fault_hits[point] += 1
    if _fault_hits[point] == target:
        os.kill(os.getpid(), signal.SIGKILL)


def inject_enospc(about_to_write: int) -> None:
    global _bytes_written
    if FAULT_ENV not in os.environ:
        return
    limit = _faults().get("enospc")
    if limit is not None and _bytes_written + about_to_write > limit:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)")
    _bytes_written += about_to_write


__all__ = ["FAULT_ENV", "fault_point", "inject_enospc"]
