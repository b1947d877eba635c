"""`pipeline ingest` end to end: records, duplicates, splits, incremental runs, bad roots, kill -9."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import pipeline.ingest.run as ingest_module
from pipeline import format as fmt
from pipeline.cli import main
from pipeline.ingest.journal import JOURNAL_FILE
from pipeline.ingest.manifest import assign_splits
from pipeline.ingest.run import ingest

SPEC_FIELDS = [
    "id",
    "path",
    "root",
    "size",
    "mtime",
    "duration",
    "sample_rate",
    "channels",
    "codec",
    "artist",
    "album",
    "title",
    "album_key",
    "split",
    "duplicate_of",
]


def manifest_bytes(manifests):
    return (Path(manifests) / fmt.TRACKS_FILE).read_bytes(), (Path(manifests) / fmt.FAILURES_FILE).read_bytes()


def by_name(tracks):
    return {os.path.basename(t.path): t for t in tracks}


@pytest.fixture
def two_drives(tmp_path, make_track):
    """drive1: a tagged album and a folder-named one; drive2: an identical copy of one track, plus a
    symlink and a hard link to another on drive1."""
    d1, d2 = tmp_path / "ssd1", tmp_path / "ssd2"
    tagged = {"artist": "Tag Artist", "album": "Tag Album", "title": "Tagged Song"}
    make_track(d1 / "Folder Artist" / "Folder Album" / "01 First.mp3", tags=tagged)
    make_track(d1 / "Folder Artist" / "Folder Album" / "02 Second.flac", tags={**tagged, "title": "Two"})
    first = make_track(d1 / "Other Artist" / "Other Album" / "01 - Loose One.ogg")
    make_track(d1 / "Other Artist" / "Other Album" / "CD2" / "02 Deep.m4a")
    make_track(d1 / "Other Artist" / "Other Album" / "03 Opus.opus")
    (d2 / "copy").mkdir(parents=True)
    (d2 / "copy" / "same.ogg").write_bytes(first.read_bytes())
    (d1 / "Favourites").mkdir()
    (d1 / "Favourites" / "fav.ogg").symlink_to(first)
    os.link(first, d1 / "Other Artist" / "hardlink.ogg")
    return d1, d2


def test_records_names_duplicates_and_splits(two_drives, tmp_path):
    d1, d2 = two_drives
    summary = ingest([str(d1), str(d2)], tmp_path / "m", workers=2, progress=False)
    lines = (tmp_path / "m" / fmt.TRACKS_FILE).read_text(encoding="utf-8").splitlines()
    assert all(list(json.loads(line)) == SPEC_FIELDS for line in lines)
    tracks = fmt.read_tracks(tmp_path / "m")
    assert [t.path for t in tracks] == sorted(t.path for t in tracks)
    t = by_name(tracks)
    assert (summary.tracks, summary.duplicates, summary.failures, summary.probed) == (8, 3, 0, 6)

    assert (t["01 First.mp3"].artist, t["01 First.mp3"].album, t["01 First.mp3"].title) == (
        "Tag Artist",
        "Tag Album",
        "Tagged Song",
    )
    assert t["01 First.mp3"].album_key == t["02 Second.flac"].album_key == "tag artist/tag album"
    loose, deep = t["01 - Loose One.ogg"], t["02 Deep.m4a"]
    assert (loose.artist, loose.album, loose.title) == ("Other Artist", "Other Album", "Loose One")
    assert (deep.artist, deep.album, deep.title, deep.codec) == ("Other Artist", "Other Album", "Deep", "aac")
    assert t["03 Opus.opus"].codec == "opus" and t["01 First.mp3"].root == str(d1)

    # One piece of content reached four ways: the smallest path that is not a symlink is canonical
    # ("Favourites/fav.ogg" sorts first but must not name the track), the rest point at it.
    sightings = [t[n] for n in ("01 - Loose One.ogg", "fav.ogg", "hardlink.ogg", "same.ogg")]
    assert len({s.id for s in sightings}) == 1
    canonical = loose
    assert canonical.duplicate_of is None
    assert all(s.duplicate_of == canonical.id for s in sightings if s is not canonical)
    assert {(s.album_key, s.split, s.title) for s in sightings} == {
        ("other artist/other album", loose.split, "Loose One")
    }
    assert t["same.ogg"].root == str(d2) and t["fav.ogg"].path == str(d1 / "Favourites" / "fav.ogg")

    # Two albums: exactly one is val, and no album is in both splits.
    splits = {}
    for track in tracks:
        splits.setdefault(track.album_key, set()).add(track.split)
    assert all(len(s) == 1 for s in splits.values())
    assert sorted(s.pop() for s in splits.values()) == ["train", "val"]
    assert len({t.id for t in tracks if t.duplicate_of is None}) == 5


def test_splits_are_per_album_deterministic_and_never_empty():
    keys = [f"artist {i}/album {i}" for i in range(2000)]
    splits = assign_splits(keys, 0.02)
    assert splits == assign_splits(reversed(keys), 0.02)
    assert 20 <= sum(s == "val" for s in splits.values()) <= 60
    more = assign_splits(keys + ["new/album"], 0.02)
    assert all(more[k] == splits[k] for k in keys)  # adding an album never moves another
    assert sorted(assign_splits(["a/x", "b/y"], 0.0).values()) == ["train", "val"]
    assert sorted(assign_splits(["a/x", "b/y"], 0.999).values()) == ["train", "val"]
    assert set(assign_splits(["a/x", "b/y"], 1.0).values()) == {"val"}
    assert assign_splits(["only/one"], 0.02) == {"only/one": "train"}


def test_hostile_inputs_end_to_end(tmp_path, make_track):
    root = tmp_path / "drive"
    good = make_track(root / "A" / "B" / "good.mp3", seconds=6.0)
    (root / "A" / "B" / "truncated.mp3").write_bytes(good.read_bytes()[: good.stat().st_size // 8])
    (root / "A" / "B" / "empty.mp3").write_bytes(b"")
    (root / "A" / "B" / "text.mp3").write_text("liner notes\n")
    (root / "A" / "B" / "random.ogg").write_bytes(random.Random(7).randbytes(3000))
    make_track(root / "A" / "B" / "flac inside.mp3", extra_args=["-c:a", "flac", "-f", "flac"])
    (root / "A" / "x.mp3").mkdir()
    (root / "A" / "broken.flac").symlink_to(root / "gone.flac")
    (root / "A" / "B" / "loop").symlink_to(root / "A")
    make_track(root / "A" / "C" / "surround.wav", channels=6)
    make_track(root / "A" / "C" / "lofi.wav", channels=1, sample_rate=22050, extra_args=["-c:a", "pcm_u8"])
    make_track(root / "A" / "C" / "hires.flac", sample_rate=96000, extra_args=["-c:a", "flac", "-sample_fmt", "s32"])
    make_track(root / "A" / "C" / "tiny.opus", seconds=0.1)
    make_track(root / "A" / "C" / "ünï cødé\nnew line [1].m4a")
    summary = ingest([str(root)], tmp_path / "m", progress=False)

    tracks = by_name(fmt.read_tracks(tmp_path / "m"))
    assert sorted(tracks) == sorted(
        [
            "good.mp3",
            "flac inside.mp3",
            "surround.wav",
            "lofi.wav",
            "hires.flac",
            "tiny.opus",
            "ünï cødé\nnew line [1].m4a",
        ]
    )
    assert tracks["flac inside.mp3"].codec == "flac"
    assert (tracks["surround.wav"].channels, tracks["lofi.wav"].sample_rate, tracks["hires.flac"].sample_rate) == (
        6,
        22050,
        96000,
    )
    assert tracks["tiny.opus"].duration < 0.2
    assert tracks["ünï cødé\nnew line [1].m4a"].title == "ünï cødé\nnew line [1]"
    failures = {os.path.basename(f.path): (f.stage, f.reason) for f in fmt.read_failures(tmp_path / "m")}
    assert failures == {
        "truncated.mp3": ("probe", "truncated: the header says 6.0 s but the audio data ends at 0.7 s"),
        "empty.mp3": ("probe", "not audio: empty file"),
        "text.mp3": ("probe", "not audio: content is text, not audio"),
        "random.ogg": ("probe", failures["random.ogg"][1]),
        "broken.flac": ("scan", f"broken symlink -> {root / 'gone.flac'}"),
    }
    assert failures["random.ogg"][1].startswith("not audio: content is not a known audio format")
    assert summary.failures == 5 and summary.root_errors == {}


def test_file_deleted_between_scan_and_probe_is_a_failure(tmp_path, make_wav, monkeypatch):
    keep, doomed = make_wav(tmp_path / "d" / "keep.wav"), make_wav(tmp_path / "d" / "doomed.wav")
    real_scan = ingest_module.scan_roots

    def scan_then_delete(roots, *options):
        scans = real_scan(roots, *options)
        doomed.unlink()
        return scans

    monkeypatch.setattr(ingest_module, "scan_roots", scan_then_delete)
    summary = ingest([str(tmp_path / "d")], tmp_path / "m", progress=False)
    assert [t.path for t in fmt.read_tracks(tmp_path / "m")] == [str(keep)]
    assert [(f.path, f.reason) for f in fmt.read_failures(tmp_path / "m")] == [
        (str(doomed), "file vanished between scan and probe")
    ]
    assert summary.failures == 1


def test_incremental_runs_probe_only_what_changed(tmp_path, make_wav):
    root = tmp_path / "d"
    files = [make_wav(root / "Art" / f"Album {i % 3}" / f"{i:02d} t.wav") for i in range(6)]
    (root / "notes.mp3").write_text("not audio")
    m = tmp_path / "m"
    first = ingest([str(root)], m, progress=False)
    assert (first.probed, first.reused) == (7, 0)
    before = manifest_bytes(m)

    again = ingest([str(root)], m, progress=False)
    assert (again.probed, again.reused) == (0, 7)  # failures are cached too
    assert manifest_bytes(m) == before

    os.utime(files[0], ns=(0, 1_000_000_000))  # changed mtime: probed again
    files[1].unlink()  # vanished: leaves the manifest
    new = make_wav(root / "Art" / "Album 9" / "new.wav")
    third = ingest([str(root)], m, progress=False)
    assert (third.probed, third.reused) == (2, 5)
    paths = [t.path for t in fmt.read_tracks(m)]
    assert str(files[1]) not in paths and str(new) in paths
    assert next(t for t in fmt.read_tracks(m) if t.path == str(files[0])).mtime == 1.0
    journal = [json.loads(line)["path"] for line in (m / JOURNAL_FILE).read_text().splitlines()]
    assert sorted(journal) == sorted(paths + [str(root / "notes.mp3")])

    # Without the journal the previous manifest still saves the probes of tracks.
    rebuilt_from = manifest_bytes(m)
    (m / JOURNAL_FILE).unlink()
    fourth = ingest([str(root)], m, progress=False)
    assert (fourth.probed, fourth.reused) == (1, 6)  # only the failure is probed again
    assert manifest_bytes(m) == rebuilt_from


def test_unchanged_run_leaves_manifests_alone_and_any_change_rebuilds(tmp_path, make_wav):
    root, m = tmp_path / "d", tmp_path / "m"
    for i in range(4):
        make_wav(root / f"Artist {i}" / f"Album {i}" / "t.wav")
    ingest([str(root)], m, progress=False)
    before = manifest_bytes(m)
    stamp = (m / fmt.TRACKS_FILE).stat().st_mtime_ns
    again = ingest([str(root)], m, progress=False)
    assert (again.files, again.tracks, again.reused, again.probed) == (4, 4, 4, 0)
    assert (m / fmt.TRACKS_FILE).stat().st_mtime_ns == stamp and manifest_bytes(m) == before

    # Someone else touched the manifest: it is rebuilt, identically, without probing.
    (m / fmt.TRACKS_FILE).write_text("")
    assert ingest([str(root)], m, progress=False).probed == 0
    assert manifest_bytes(m) == before
    # Another option is another manifest.
    ingest([str(root)], m, val_fraction=1.0, progress=False)
    assert {t.split for t in fmt.read_tracks(m)} == {"val"}
    # A new broken link is a new scan failure.
    (root / "broken.mp3").symlink_to(root / "nowhere.mp3")
    assert ingest([str(root)], m, val_fraction=1.0, progress=False).failures == 1


def test_later_stage_failures_survive_reingest(tmp_path, make_wav):
    wav = make_wav(tmp_path / "d" / "a.wav")
    ingest([str(tmp_path / "d")], tmp_path / "m", progress=False)
    decode_failure = fmt.FailureRecord(str(wav), "decode", "ffmpeg: broken frame")
    gone_failure = fmt.FailureRecord(str(tmp_path / "d" / "gone.wav"), "decode", "old")
    fmt.write_jsonl(tmp_path / "m" / fmt.FAILURES_FILE, [decode_failure, gone_failure])
    ingest([str(tmp_path / "d")], tmp_path / "m", progress=False)
    assert fmt.read_failures(tmp_path / "m") == [decode_failure]


def test_bad_root_is_one_line_error_others_proceed_and_kept(tmp_path, make_wav):
    good, usb = tmp_path / "good", tmp_path / "usb"
    make_wav(good / "a.wav")
    on_usb = make_wav(usb / "b.wav")
    runner = CliRunner()
    args = ["ingest", str(good), str(usb), "--manifests", str(tmp_path / "m")]
    assert runner.invoke(main, args).exit_code == 0
    usb.rename(tmp_path / "unplugged")
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert f"pipeline ingest: error: {usb}: no such directory\n" in result.output
    assert result.output.count("\n") == 2  # that line and the summary line, no traceback
    assert [t.path for t in fmt.read_tracks(tmp_path / "m")] == [str(good / "a.wav"), str(on_usb)]

    result = runner.invoke(main, ["ingest", str(good), str(tmp_path / "nothing"), "--manifests", str(tmp_path / "m2")])
    assert result.exit_code == 1
    assert [t.path for t in fmt.read_tracks(tmp_path / "m2")] == [str(good / "a.wav")]


def test_cli_prints_one_summary_line_when_not_a_terminal(tmp_path, make_wav):
    make_wav(tmp_path / "d" / "a.wav")
    result = CliRunner().invoke(
        main,
        ["ingest", str(tmp_path / "d"), "--manifests", str(tmp_path / "m"), "--workers", "1", "--val-fraction", "0.5"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ingest: 1 roots, 1 files: 1 tracks (0 duplicates), 0 failures; probed 1")
    assert result.output.count("\n") == 1
    bad = CliRunner().invoke(main, ["ingest", str(tmp_path / "d"), "--val-fraction", "2"])
    assert bad.exit_code == 2 and "--val-fraction" in bad.output


def test_kill_9_mid_probe_resumes_without_reprobing(tmp_path, make_wav):
    root = tmp_path / "d"
    for i in range(30):
        make_wav(root / f"Artist {i % 4}" / f"Album {i % 8}" / f"{i:02d}.wav", seconds=0.2)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    journal = killed / JOURNAL_FILE
    cmd = [
        sys.executable,
        "-c",
        "from pipeline.cli import main; main()",
        "ingest",
        str(root),
        "--workers",
        "1",
        "--manifests",
    ]
    proc = subprocess.Popen(cmd + [str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 5):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = journal.read_text().count("\n")
    assert 5 <= done < 30, "the run must be killed mid-probe"
    assert not (killed / fmt.TRACKS_FILE).exists()  # nothing half-written under the final name

    resumed = subprocess.run(cmd + [str(killed)], capture_output=True, text=True, check=True)
    subprocess.run(cmd + [str(clean)], capture_output=True, text=True, check=True)
    assert f"probed {30 - done}, reused {done};" in resumed.stdout
    assert manifest_bytes(killed) == manifest_bytes(clean)
    assert len(fmt.read_tracks(killed)) == 30


def test_summary_fields_are_counts(tmp_path, make_wav):
    make_wav(tmp_path / "d" / "a.wav")
    summary = ingest([str(tmp_path / "d"), str(tmp_path / "d")], tmp_path / "m", progress=False)
    counts = dataclasses.asdict(summary)
    assert counts["roots"] == [str(tmp_path / "d")]  # a root given twice is scanned once
    assert (counts["files"], counts["tracks"], counts["probed"]) == (1, 1, 1)


def test_progress_bar_on_request(tmp_path, make_wav, capsys):
    make_wav(tmp_path / "d" / "a.wav")
    ingest([str(tmp_path / "d")], tmp_path / "m", progress=True)
    err = capsys.readouterr().err
    assert "probe" in err and "1/1" in err


def test_demo_collection_shows_tags_folders_duplicates_and_failures(tmp_path):
    from pipeline.demo.collection import make_demo_collection

    roots = make_demo_collection(
        tmp_path / "demo", artists=2, albums_per_artist=3, tracks_per_album=1, min_seconds=0.5, max_seconds=1.0
    )
    summary = ingest([str(r) for r in roots], tmp_path / "m", progress=False)
    assert (summary.tracks, summary.duplicates, summary.failures) == (8, 2, 1)
    tracks = [t for t in fmt.read_tracks(tmp_path / "m") if t.duplicate_of is None]
    assert sorted(t.codec for t in tracks) == sorted(["mp3", "flac", "vorbis", "aac", "opus", "pcm_s16le"])
    assert {t.root for t in tracks} == {str(r) for r in roots}
    untagged = [t for t in tracks if t.artist == "Demo Artist B"]
    assert untagged and all(t.title.startswith("Song 2.") for t in untagged)  # from "01 Song 2.x.y.ext"
    [failure] = fmt.read_failures(tmp_path / "m")
    assert failure.path.endswith("liner notes.mp3") and failure.reason == "not audio: content is text, not audio"
    again = make_demo_collection(
        tmp_path / "demo", artists=2, albums_per_artist=3, tracks_per_album=1, min_seconds=0.5, max_seconds=1.0
    )
    assert again == roots and ingest([str(r) for r in roots], tmp_path / "m", progress=False).probed == 0
    # Made elsewhere, the collection has the same bytes, so the same ids, splits and shards everywhere
    # (Ogg and Opus muxing would otherwise draw a random stream serial number).
    elsewhere = make_demo_collection(
        tmp_path / "other", artists=2, albums_per_artist=3, tracks_per_album=1, min_seconds=0.5, max_seconds=1.0
    )
    ingest([str(r) for r in elsewhere], tmp_path / "m2", progress=False)
    assert sorted(t.id for t in fmt.read_tracks(tmp_path / "m2")) == sorted(
        t.id for t in fmt.read_tracks(tmp_path / "m")
    )


@pytest.mark.slow
def test_kill_9_at_many_instants_always_leaves_valid_manifests(tmp_path, make_wav):
    root = tmp_path / "d"
    for i in range(24):
        make_wav(root / f"Artist {i % 3}" / f"Album {i % 6}" / f"{i:02d}.wav", seconds=0.2)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    cmd = [
        sys.executable,
        "-c",
        "from pipeline.cli import main; main()",
        "ingest",
        str(root),
        "--workers",
        "2",
        "--manifests",
    ]
    subprocess.run(cmd + [str(clean)], capture_output=True, check=True)
    for delay in (0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0):
        make_wav(root / "new" / f"{delay}.wav", seconds=0.2)  # every round has something to probe
        proc = subprocess.Popen(cmd + [str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if (killed / fmt.TRACKS_FILE).exists():
            assert len(fmt.read_tracks(killed)) >= 1  # complete and parseable, never torn
            fmt.read_failures(killed)
    subprocess.run(cmd + [str(killed)], capture_output=True, check=True)
    subprocess.run(cmd + [str(clean)], capture_output=True, check=True)
    assert manifest_bytes(killed) == manifest_bytes(clean)
    assert not list(killed.glob("*.tmp-*"))  # temporaries of killed runs are cleaned up


def test_journal_survives_a_line_torn_inside_a_character(tmp_path, make_wav):
    wav = make_wav(tmp_path / "d" / "ünï.wav")
    m = tmp_path / "m"
    ingest([str(tmp_path / "d")], m, progress=False)
    line = (m / JOURNAL_FILE).read_bytes()
    cut = line.index("ü".encode()) + 1  # inside the two bytes of "ü"
    (m / JOURNAL_FILE).write_bytes(line + line[:cut])
    os.utime(wav, ns=(0, 5))  # changed: probed and appended after the torn line
    (tmp_path / "m" / ".tracks.jsonl.tmp-999999999").write_text("left by a killed run")
    assert ingest([str(tmp_path / "d")], m, progress=False).probed == 1
    assert ingest([str(tmp_path / "d")], m, progress=False).probed == 0
    assert not list(m.glob("*.tmp-*"))


def test_damaged_previous_manifest_is_a_warning_and_rebuilt(tmp_path, make_wav, capsys):
    make_wav(tmp_path / "d" / "a.wav")
    m = tmp_path / "m"
    ingest([str(tmp_path / "d")], m, progress=False)
    good = manifest_bytes(m)
    (m / fmt.FAILURES_FILE).write_text("{not json\n")
    (m / JOURNAL_FILE).unlink()
    (m / fmt.TRACKS_FILE).write_text('{"id": "x"}\n{torn')
    summary = ingest([str(tmp_path / "d")], m, progress=False)
    err = capsys.readouterr().err
    assert f"pipeline ingest: warning: {m / fmt.TRACKS_FILE}:1: not a valid TrackRecord line" in err
    assert f"{m / fmt.FAILURES_FILE}:1: not a valid FailureRecord line" in err
    assert summary.probed == 1 and manifest_bytes(m) == good


def test_nested_roots_list_each_file_once(tmp_path, make_wav):
    make_wav(tmp_path / "d" / "inner" / "a.wav")
    summary = ingest([str(tmp_path / "d"), str(tmp_path / "d" / "inner")], tmp_path / "m", progress=False)
    [track] = fmt.read_tracks(tmp_path / "m")
    assert summary.tracks == 1 and track.root == str(tmp_path / "d")


def test_unwritable_manifests_folder_is_a_one_line_error(tmp_path, make_wav):
    make_wav(tmp_path / "d" / "a.wav")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "d"), "--manifests", str(tmp_path / "blocker" / "m")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"Error: {tmp_path / 'blocker' / 'm'}")


def test_a_second_ingest_into_the_same_manifests_is_refused_while_the_first_runs(tmp_path):
    """Two writers of one manifest would lose each other's work: the second is a one-line error."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.durable import exclusive
    from pipeline.format import MANIFESTS_LOCK

    root = tmp_path / "drive"
    root.mkdir()
    manifests = tmp_path / "manifests"
    with exclusive(manifests / MANIFESTS_LOCK, "held by the test"):
        result = CliRunner().invoke(main, ["ingest", str(root), "--manifests", str(manifests)])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "another `pipeline ingest` is writing here" in result.output and str(manifests) in result.output
    again = CliRunner().invoke(main, ["ingest", str(root), "--manifests", str(manifests)])
    assert again.exit_code == 0, again.output


def test_compilation_keeps_its_album_key_when_rebuilt_from_the_manifest(tmp_path, make_track):
    """The manifest records `artist`, not the album artist the album key came from: rebuilding from
    it (journal gone, or a drive unplugged) must not move a compilation's tracks to new album keys,
    which could put one album in both splits."""
    root, usb, m = tmp_path / "d", tmp_path / "usb", tmp_path / "m"
    compilation = {"album_artist": "Various Artists", "album": "Hits"}
    make_track(root / "01 a.flac", tags={**compilation, "artist": "Singer One", "title": "A"})
    make_track(usb / "02 b.flac", tags={**compilation, "artist": "Singer Two", "title": "B"})
    ingest([str(root), str(usb)], m, progress=False)
    good = manifest_bytes(m)
    assert {t.album_key for t in fmt.read_tracks(m)} == {"various artists/hits"}

    (m / JOURNAL_FILE).unlink()
    assert ingest([str(root), str(usb)], m, progress=False).probed == 0
    assert manifest_bytes(m) == good

    usb.rename(tmp_path / "unplugged")
    assert ingest([str(root), str(usb)], m, progress=False).root_errors
    assert manifest_bytes(m) == good


def test_unplugged_drive_with_a_link_keeps_the_canonical_sighting(tmp_path, make_wav):
    """The manifest does not record which sightings were symlinks: a link kept from an unplugged
    drive must not become the canonical sighting (shard would then read the absent drive)."""
    main_drive, usb, m = tmp_path / "z_main", tmp_path / "a_usb", tmp_path / "m"
    track = make_wav(main_drive / "Artist" / "Album" / "t.wav")
    usb.mkdir()
    (usb / "fav.wav").symlink_to(track)
    ingest([str(main_drive), str(usb)], m, progress=False)
    good = manifest_bytes(m)
    assert by_name(fmt.read_tracks(m))["t.wav"].duplicate_of is None

    usb.rename(tmp_path / "unplugged")
    assert ingest([str(main_drive), str(usb)], m, progress=False).root_errors
    assert manifest_bytes(m) == good


def test_nan_val_fraction_is_a_usage_error(tmp_path):
    """click's FloatRange lets NaN through (every comparison with it is False)."""
    (tmp_path / "d").mkdir()
    result = CliRunner().invoke(
        main, ["ingest", str(tmp_path / "d"), "--manifests", str(tmp_path / "m"), "--val-fraction", "nan"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--val-fraction" in result.output and not (tmp_path / "m").exists()


def test_roots_that_are_files_missing_or_unreadable_are_errors_of_that_root_only(tmp_path, make_wav, monkeypatch):
    """Issue 10, class 6: each bad root is one line, the others are ingested, exit code 1 (not a usage error)."""
    make_wav(tmp_path / "good" / "Artist" / "Album" / "01 a.wav")
    (tmp_path / "locked").mkdir()
    a_file = make_wav(tmp_path / "file.wav")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: "locked" not in str(p) and real_access(p, mode))  # root reads all
    args = [str(tmp_path / "good"), str(a_file), str(tmp_path / "missing"), str(tmp_path / "locked")]
    result = CliRunner().invoke(main, ["ingest", *args, "--manifests", str(tmp_path / "m")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("pipeline ingest: error:")]
    assert errors == [
        f"pipeline ingest: error: {a_file}: not a directory",
        f"pipeline ingest: error: {tmp_path / 'missing'}: no such directory",
        f"pipeline ingest: error: {tmp_path / 'locked'}: cannot read: permission denied",
    ]
    [track] = fmt.read_tracks(tmp_path / "m")
    assert (track.artist, track.album) == ("Artist", "Album")


def test_nested_roots_give_the_same_names_in_either_order(tmp_path, make_wav):
    outer = tmp_path / "drive"
    inner = outer / "Artist"
    make_wav(inner / "Album" / "01 Song.wav")
    records = []
    for order, manifests in (([outer, inner], "m1"), ([inner, outer], "m2")):
        ingest([str(r) for r in order], tmp_path / manifests, progress=False)
        [track] = fmt.read_tracks(tmp_path / manifests)
        records.append((track.root, track.artist, track.album, track.album_key, track.title))
    assert records[0] == records[1] == (str(outer), "Artist", "Album", "artist/album", "Song")
