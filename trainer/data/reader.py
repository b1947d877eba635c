"""Shard files -> raw webdataset samples: local paths read with bounded reads, http(s) in this process
with a timeout on every read, and any other URL through webdataset's gopen. An unreadable shard is
logged with its URL and reason and skipped; the samples read before the error are kept."""

from __future__ import annotations

import contextlib
import logging
import tarfile
import urllib.request
from collections.abc import Iterator

from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys

from pipeline.format import is_complete_sample

log = logging.getLogger("trainer.data")  # the loader's warnings keep the logger name users filter on

# For shards read as a stream (HTTP): tarfile's default 10 KiB records mean ~400 Python-level reads
# and a join per 4 MiB sample.
TAR_READ_BYTES = 1 << 20
# Seconds an HTTP shard transfer may deliver nothing before it counts as failed (data.read_timeout).
DEFAULT_READ_TIMEOUT = 60.0


def is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


class ShardReader:
    """Samples of one shard after another; unreadable shards are logged (URL and reason) and skipped."""

    def __init__(self, max_empty_in_a_row: int | None, read_timeout: float = DEFAULT_READ_TIMEOUT):
        # an infinite stream over shards that are all unreadable would otherwise spin forever
        self.max_empty_in_a_row = max_empty_in_a_row
        self.empty_in_a_row = 0
        self.empty_urls: set[str] = set()  # the different shards among them (a stream repeats its shards)
        self.read_timeout = read_timeout

    def samples(self, urls: Iterator[str]) -> Iterator[dict]:
        for url in urls:
            read = 0
            failure: list[Exception] = []
            for sample in group_by_keys(_tar_members(url, failure, self.read_timeout)):
                if not is_complete_sample(sample):
                    log.warning("skipping incomplete sample %s in shard %s", sample.get("__key__"), url)
                    continue
                read += 1
                yield sample
            for exc in failure:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.warning("skipping corrupt shard %s after %d samples: %s: %s", url, read, type(exc).__name__, reason)
            if read:
                self.empty_in_a_row, self.empty_urls = 0, set()
            else:
                self.empty_in_a_row += 1
                self.empty_urls.add(url)
            if self.max_empty_in_a_row is not None and self.empty_in_a_row >= self.max_empty_in_a_row:
                raise RuntimeError(
                    f"none of {len(self.empty_urls)} shards gave a sample in {self.empty_in_a_row} reads in a row "
                    f"(last: {url}): they are empty or unreadable; giving up"
                )


def _tar_members(url: str, failure: list[Exception], read_timeout: float = DEFAULT_READ_TIMEOUT) -> Iterator[dict]:
    """The regular files of one tar (local path, http(s) URL or any URL webdataset's gopen opens), in order.

    A read error ends the shard quietly and is appended to `failure`, so that the sample completed
    just before it still comes out of webdataset's key grouping (which drops it on an exception).
    """
    stream = None
    try:
        stream = _open(url, read_timeout)
        yield from _regular_files(stream, url)
        stream.close()  # a transfer that failed at the end (curl's exit status) surfaces here
    except Exception as exc:
        failure.append(_transport_error(stream) or exc)
    except BaseException:  # the consumer stopped early (GeneratorExit): close quietly
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        raise


def _open(url: str, read_timeout: float):
    """http(s) in this process, with a timeout on every read: a server that stops sending mid-shard
    (webdataset's curl pipe would wait for it forever) is a TimeoutError after `read_timeout` seconds."""
    if is_url(url):
        return urllib.request.urlopen(url, timeout=read_timeout)
    return gopen(url)


def _transport_error(stream) -> Exception | None:
    """Close a stream after a read error; curl's exit status (e.g. an HTTP 404) says more than "empty file"."""
    if stream is None:
        return None
    try:
        stream.close()
    except Exception as exc:
        return exc
    return None


def _regular_files(stream, url: str) -> Iterator[dict]:
    """Each member is read into bytes with a bounded read, never memory-mapped: a local shard that
    shrinks while it is read (deleted, rewritten, a drive going away) then gives a short read, which
    is a truncated shard, where a memory map would kill the process with SIGBUS."""
    seekable = getattr(stream, "seekable", lambda: False)()
    mode = "r:" if seekable else "r|"
    with tarfile.open(fileobj=stream, mode=mode, bufsize=TAR_READ_BYTES) as tar:
        for info in tar:
            if info.isreg():
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError(f"unexpected end of data in {info.name}")
                yield {"fname": info.name, "data": data, "__url__": url}
            tar.members = []  # tarfile would otherwise keep every header of the shard
        if seekable:
            # tarfile takes a cut or garbled header after the first member for the end of the archive
            stream.seek(tar.offset)
            if stream.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
                raise tarfile.ReadError(f"no end-of-archive marker at byte {tar.offset}: truncated or damaged")
