"""Walk the roots (drives) safely and cheaply: every candidate audio file with its stat.

- File and directory symlinks are followed; a directory reached twice (symlink loop, bind mount, a
  link to an ancestor) is entered once, by its (st_dev, st_ino), in a deterministic order.
- Scanning stays in the collection: a directory symlink whose target is outside every root is a
  scan failure and is not followed (unless `follow_outside_links`), and pseudo-filesystems (proc,
  sysfs, devtmpfs, cgroup, ...: found by device number in /proc/self/mountinfo) are never entered,
  whichever way they are reached (a link to /, a root of /).
- Broken or looping file links and unreadable directories become scan failures, never exceptions.
- Names with spaces, brackets, dots, newlines and any Unicode work; names that are not valid UTF-8
  cannot be written to the JSON manifest and are reported as failures (path shown with \\x escapes).
- Hidden entries (names starting with ".": AppleDouble `._*` files, `.Trash-*`, `.Spotlight-V100`)
  are skipped: they are metadata or deleted copies, never part of the collection.
- Known non-audio names (covers, logs, cue sheets) are skipped without a stat, which keeps an
  unchanged re-ingest at one `stat` per audio file.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipeline import format as fmt
from pipeline.format import FailureRecord
from pipeline.ingest.sniff import AUDIO_EXTENSIONS, OTHER_EXTENSIONS


@dataclass(slots=True)
class FoundFile:
    path: str  # absolute, as reached (a symlink keeps its own path)
    root: str
    size: int
    mtime: float
    dev: int  # of the file the path resolves to: a hard link or symlink shares it with its target
    ino: int
    by_extension: bool  # False: only the content can tell whether it is audio
    is_link: bool = False  # the path itself is a symlink


@dataclass
class RootScan:
    root: str
    files: list[FoundFile] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    error: str | None = None  # the whole root could not be scanned


def printable_path(path: str) -> str:
    """A path that can be written as UTF-8: undecodable bytes shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Kernel and virtual file systems: their "files" are not audio, and reading some of them blocks.
PSEUDO_FILESYSTEMS = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "binfmt_misc",
        "autofs",
        "efivarfs",
        "rpc_pipefs",
        "nsfs",
        "selinuxfs",
        "nfsd",
    }
)


def pseudo_filesystems(mountinfo: str = "/proc/self/mountinfo") -> dict[int, str]:
    """st_dev -> file system type of every mounted pseudo-filesystem (empty when /proc is absent)."""
    devices = {}
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields, _, rest = line.partition(" - ")
                fstype = rest.split(" ", 1)[0]
                major_minor = fields.split(" ")[2:3]
                if fstype in PSEUDO_FILESYSTEMS and major_minor and ":" in major_minor[0]:
                    major, minor = major_minor[0].split(":")
                    devices[os.makedev(int(major), int(minor))] = fstype
    except (OSError, ValueError):
        pass
    return devices


def _inside(path: str, real_roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in real_roots)


def root_error(root: str, pseudo: dict[int, str] | None = None) -> str | None:
    """Why a root cannot be scanned, or None."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return "no such directory"
    except OSError as exc:
        return f"cannot access: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if pseudo and st.st_dev in pseudo:
        return f"a {pseudo[st.st_dev]} pseudo-filesystem, not a collection"
    if not os.access(root, os.R_OK | os.X_OK):
        return "cannot read: permission denied"
    return None


def scan_root(
    root: str,
    roots: list[str] | None = None,
    follow_outside_links: bool = False,
    pseudo: dict[int, str] | None = None,
) -> RootScan:
    """All candidate files under `root` (absolute paths, unsorted). `roots`: every root of the run
    (default: this one); a directory symlink leading outside all of them is recorded, not followed,
    unless `follow_outside_links`. `pseudo`: st_dev -> type of the pseudo-filesystems never entered
    (default: those mounted now)."""
    root = os.path.abspath(root)
    pseudo = pseudo_filesystems() if pseudo is None else pseudo
    real_roots = [os.path.realpath(r) for r in (roots or [root])]
    result = RootScan(root)
    result.error = root_error(root, pseudo)
    if result.error:
        return result
    root_stat = os.stat(root)
    visited: set[tuple[int, int]] = set()
    # Real directories first, symlinked ones after: a directory reachable both ways is scanned under
    # its real path, and the choice does not depend on names.
    pending = [(root, (root_stat.st_dev, root_stat.st_ino))]
    linked: deque[tuple[str, tuple[int, int]]] = deque()
    files, failures = result.files, result.failures
    audio_ext, other_ext = AUDIO_EXTENSIONS, OTHER_EXTENSIONS
    while pending or linked:
        directory, key = pending.pop() if pending else linked.popleft()
        if key in visited:
            continue
        visited.add(key)
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            failures.append(
                FailureRecord(
                    printable_path(directory), fmt.STAGE_SCAN, f"cannot list directory: {exc.strerror or exc}"
                )
            )
            continue
        subdirs = []
        directory_is_utf8 = _is_utf8(directory)
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            try:
                if entry.is_dir():
                    subdirs.append(entry)
                    continue
            except OSError:
                pass  # an unresolvable link: is_file/stat below reports it
            ext = name.rpartition(".")[2].lower() if "." in name else ""
            if ext in other_ext:
                continue
            try:
                st = entry.stat()
            except OSError as exc:
                if entry.is_symlink():
                    failures.append(_link_failure(entry.path, exc))
                continue  # deleted while we looked: it is simply not there
            if not stat.S_ISREG(st.st_mode):
                continue  # fifos, sockets, devices: opening them could block
            if not (directory_is_utf8 and _is_utf8(name)):
                failures.append(
                    FailureRecord(printable_path(entry.path), fmt.STAGE_SCAN, "file name is not valid UTF-8")
                )
                continue
            files.append(
                FoundFile(
                    entry.path,
                    root,
                    st.st_size,
                    st.st_mtime,
                    st.st_dev,
                    st.st_ino,
                    ext in audio_ext,
                    entry.is_symlink(),
                )
            )
        # Depth first, by name, so which path of a directory reached twice gets scanned is fixed.
        subdirs.sort(key=lambda e: e.name, reverse=True)
        for entry in subdirs:
            try:
                st = entry.stat()
            except OSError as exc:
                failures.append(
                    FailureRecord(printable_path(entry.path), fmt.STAGE_SCAN, f"cannot enter: {exc.strerror or exc}")
                )
                continue
            is_link = entry.is_symlink()
            if st.st_dev in pseudo:
                if is_link:  # a mount point met on the way (a root of /) is skipped without a word
                    failures.append(
                        FailureRecord(
                            printable_path(entry.path),
                            fmt.STAGE_SCAN,
                            f"directory symlink to a {pseudo[st.st_dev]} pseudo-filesystem: not scanned",
                        )
                    )
                continue
            if is_link and not follow_outside_links:
                target = os.path.realpath(entry.path)
                if not _inside(target, real_roots):
                    failures.append(
                        FailureRecord(
                            printable_path(entry.path),
                            fmt.STAGE_SCAN,
                            f"directory symlink leads outside every root (-> {printable_path(target)}): "
                            "not followed (--follow-outside-links follows it)",
                        )
                    )
                    continue
            (linked.appendleft if is_link else pending.append)((entry.path, (st.st_dev, st.st_ino)))
    return result


def _link_failure(path: str, exc: OSError) -> FailureRecord:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    reason = "broken symlink" if isinstance(exc, FileNotFoundError) else f"unresolvable symlink ({exc.strerror or exc})"
    return FailureRecord(printable_path(path), fmt.STAGE_SCAN, f"{reason} -> {printable_path(target)}")


def scan_roots(roots: list[str], follow_outside_links: bool = False) -> list[RootScan]:
    """Scan every root at once, one thread each: roots are separate drives, and stat/readdir release
    the GIL, so a slow USB drive does not hold up the fast ones."""
    if not roots:
        return []
    pseudo = pseudo_filesystems()
    with ThreadPoolExecutor(max_workers=len(roots), thread_name_prefix="scan") as pool:
        return list(pool.map(lambda root: scan_root(root, roots, follow_outside_links, pseudo), roots))
