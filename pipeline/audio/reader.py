"""Exactly-n-sample reads from a stream of decoded `[n, 2]` chunks (`decode.decode_chunks`): how the
pairs stage, the separation evaluation and `trainer separate` take windows of a fixed length from a
file, with memory at a chunk."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline import format as fmt
from pipeline.audio.decode import DEFAULT_CHUNK_SAMPLES


class SampleReader:
    """Exactly-n-sample reads from a stream of `[n, 2]` chunks (fewer only at the end)."""

    def __init__(self, chunks: Iterator[np.ndarray]):
        self._chunks = chunks
        self._pending = np.zeros((0, fmt.CHANNELS), dtype=np.float32)
        self.exhausted = False

    def read(self, n: int) -> np.ndarray:
        parts, have = [self._pending], len(self._pending)
        while have < n and not self.exhausted:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.exhausted = True
                break
            parts.append(chunk)
            have += len(chunk)
        joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._pending = joined[n:]
        return joined[:n]

    def skip(self, n: int) -> None:
        while n > 0:
            got = len(self.read(min(n, DEFAULT_CHUNK_SAMPLES)))
            if got == 0:
                return
            n -= got

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


__all__ = ["SampleReader"]
