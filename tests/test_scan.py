"""scan.py: symlinks, loops, broken links, odd names, special files and bad roots."""

import os

import pytest

from pipeline.ingest.scan import scan_root, scan_roots


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def found_paths(scan):
    return sorted(os.path.relpath(f.path, scan.root) for f in scan.files)


def test_candidates_by_extension_and_unknown_names(tmp_path):
    touch(tmp_path / "A" / "B" / "01 x.MP3")
    touch(tmp_path / "A" / "B" / "cover.jpg")
    touch(tmp_path / "A" / "B" / "rip.log")
    touch(tmp_path / "A" / "B" / "track02")  # no extension: only its content can tell
    touch(tmp_path / "A" / ".hidden.mp3")
    touch(tmp_path / "A" / "._01 x.mp3")  # macOS AppleDouble metadata
    touch(tmp_path / ".Trash-1000" / "old.mp3")
    scan = scan_root(str(tmp_path))
    assert found_paths(scan) == ["A/B/01 x.MP3", "A/B/track02"]
    by_ext = {os.path.basename(f.path): f.by_extension for f in scan.files}
    assert by_ext == {"01 x.MP3": True, "track02": False}
    assert scan.failures == [] and scan.error is None
    f = next(f for f in scan.files if f.path.endswith("x.MP3"))
    st = os.stat(f.path)
    assert (f.size, f.mtime, f.dev, f.ino, f.root) == (1, st.st_mtime, st.st_dev, st.st_ino, str(tmp_path))


def test_directory_named_like_audio_is_walked_not_taken(tmp_path):
    touch(tmp_path / "x.mp3" / "inner.flac")
    assert found_paths(scan_root(str(tmp_path))) == ["x.mp3/inner.flac"]


def test_file_symlinks_are_followed_and_broken_ones_recorded(tmp_path):
    target = touch(tmp_path / "A" / "song.flac", b"abc")
    (tmp_path / "link.flac").symlink_to(target)
    (tmp_path / "broken.mp3").symlink_to(tmp_path / "nowhere.mp3")
    (tmp_path / "self.mp3").symlink_to(tmp_path / "self.mp3")
    scan = scan_root(str(tmp_path))
    assert found_paths(scan) == ["A/song.flac", "link.flac"]
    link = next(f for f in scan.files if f.path.endswith("link.flac"))
    real = next(f for f in scan.files if f.path.endswith("song.flac"))
    assert (link.dev, link.ino, link.size) == (real.dev, real.ino, 3)
    reasons = {os.path.basename(f.path): f.reason for f in scan.failures}
    assert reasons["broken.mp3"] == f"broken symlink -> {tmp_path / 'nowhere.mp3'}"
    assert reasons["self.mp3"].startswith("unresolvable symlink (Too many levels of symbolic links)")
    assert {f.stage for f in scan.failures} == {"scan"}


def test_directory_symlink_loops_are_entered_once(tmp_path):
    touch(tmp_path / "A" / "B" / "t.mp3")
    (tmp_path / "A" / "B" / "up").symlink_to(tmp_path / "A")  # loop to an ancestor
    (tmp_path / "A" / "self").symlink_to(".")
    (tmp_path / "elsewhere").symlink_to(tmp_path / "A" / "B")  # the same directory by another name
    scan = scan_root(str(tmp_path))
    assert found_paths(scan) == ["A/B/t.mp3"]  # the real path wins: "A" sorts before "elsewhere"


def test_odd_names(tmp_path):
    names = [
        "Ünïcödé 日本語.flac",
        "with\nnewline.mp3",
        "[brackets] (1) {x}.ogg",
        "dots...in.name.wav",
        "  spaces  .m4a",
        "-starts-with-dash.opus",
    ]
    for name in names:
        touch(tmp_path / "Dir. With [Odd] Name" / name)
    assert found_paths(scan_root(str(tmp_path))) == sorted(f"Dir. With [Odd] Name/{n}" for n in names)


def test_names_that_are_not_utf8_are_failures(tmp_path):
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.mp3")
    with open(bad, "wb") as fh:
        fh.write(b"x")
    scan = scan_root(str(tmp_path))
    assert scan.files == []
    [failure] = scan.failures
    assert failure.path == f"{tmp_path}/caf\\xe9.mp3" and failure.reason == "file name is not valid UTF-8"
    failure.path.encode("utf-8")  # writable to the manifest


def test_special_files_are_skipped(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp3")  # opening it would block forever
    assert scan_root(str(tmp_path)).files == []


def test_bad_roots_are_errors_of_that_root_only(tmp_path):
    touch(tmp_path / "good" / "a.mp3")
    touch(tmp_path / "file.mp3")
    scans = scan_roots([str(tmp_path / "missing"), str(tmp_path / "good"), str(tmp_path / "file.mp3")])
    assert [s.error for s in scans] == ["no such directory", None, "not a directory"]
    assert found_paths(scans[1]) == ["a.mp3"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory regardless of permissions")
def test_unreadable_directories_are_failures(tmp_path):
    touch(tmp_path / "locked" / "a.mp3")
    touch(tmp_path / "open" / "b.mp3")
    os.chmod(tmp_path / "locked", 0)
    try:
        scan = scan_root(str(tmp_path))
        assert found_paths(scan) == ["open/b.mp3"]
        assert [f.reason for f in scan.failures] == ["cannot list directory: Permission denied"]
        assert scan_root(str(tmp_path / "locked")).error == "cannot read: permission denied"
    finally:
        os.chmod(tmp_path / "locked", 0o755)


def test_unreadable_directories_are_failures_even_as_root(tmp_path, monkeypatch):
    """The same as above without relying on permissions (which root ignores): the OS refuses."""
    touch(tmp_path / "locked" / "a.mp3")
    touch(tmp_path / "open" / "b.mp3")
    real_scandir, real_access = os.scandir, os.access

    def scandir(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_root(str(tmp_path))
    assert found_paths(scan) == ["open/b.mp3"]
    assert [(f.path, f.reason) for f in scan.failures] == [
        (str(tmp_path / "locked"), "cannot list directory: Permission denied")
    ]
    monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and "locked" not in str(path))
    assert scan_root(str(tmp_path / "locked")).error == "cannot read: permission denied"


def test_directory_links_outside_every_root_are_recorded_not_followed(tmp_path):
    """Issue 10, class 4: a link to / walked the whole machine."""
    root, outside, other = tmp_path / "root", tmp_path / "outside", tmp_path / "other-root"
    touch(root / "A" / "B" / "t.mp3")
    touch(outside / "x" / "far.mp3")
    touch(other / "near.mp3")
    (root / "A" / "away").symlink_to(outside)
    (root / "A" / "sibling").symlink_to(other)  # another root of the same run: inside the collection
    [scan, _] = scan_roots([str(root), str(other)])
    assert found_paths(scan) == ["A/B/t.mp3", "A/sibling/near.mp3"]
    [failure] = scan.failures
    assert (failure.path, failure.stage) == (str(root / "A" / "away"), "scan")
    assert failure.reason == (
        f"directory symlink leads outside every root (-> {outside}): not followed (--follow-outside-links follows it)"
    )
    [followed, _] = scan_roots([str(root), str(other)], follow_outside_links=True)
    assert found_paths(followed) == ["A/B/t.mp3", "A/away/x/far.mp3", "A/sibling/near.mp3"]
    assert followed.failures == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a mounted /proc")
def test_pseudo_filesystems_are_never_entered(tmp_path):
    touch(tmp_path / "A" / "t.mp3")
    (tmp_path / "A" / "kernel").symlink_to("/proc")
    (tmp_path / "A" / "devices").symlink_to("/sys")
    scan = scan_roots([str(tmp_path)], follow_outside_links=True)[0]
    assert found_paths(scan) == ["A/t.mp3"]
    assert sorted(f.reason for f in scan.failures) == [
        "directory symlink to a proc pseudo-filesystem: not scanned",
        "directory symlink to a sysfs pseudo-filesystem: not scanned",
    ]
    assert scan_root("/proc").error == "a proc pseudo-filesystem, not a collection"
