"""probe.py: content sniffing, the fingerprint, and ffprobe on every format and hostile input."""

import os
import random
import re

import pytest

from pipeline.ingest.probe import BLOCK_BYTES, ProbeError, mp3_declares_length, probe_file, read_head_and_fingerprint
from pipeline.ingest.sniff import describe_content, find_frame_chain, sniff


def probe_failure(path) -> str:
    with pytest.raises(ProbeError) as info:
        probe_file(str(path))
    return str(info.value)


@pytest.mark.parametrize(
    "head, kind",
    [
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"ID3\x04\x00", "id3"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"FORM\x00\x00\x00\x00AIFF", "aiff"),
        (b"\x00\x00\x00\x20ftypM4A ", "mp4"),
        (b"\xff\xfb\x90\x64", "mpeg"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "adts"),
    ],
)
def test_sniff_recognises_audio_containers(head, kind):
    assert sniff(head) == kind


def test_sniff_rejects_text_random_and_weak_syncs_when_asked():
    assert sniff(b"hello world, these are liner notes") is None
    assert sniff(b"\xff\xff\xff\xff") is None  # bad bitrate index / reserved layer bits
    assert sniff(b"\xff\xfb\x90\x64", strong_only=True) is None
    assert describe_content(b"plain text\n") == "content is text, not audio"
    assert describe_content("Liner notes: été".encode()[:-1]) == "content is text, not audio"
    assert describe_content(b"") == "empty file"
    assert "not a known audio format" in describe_content(bytes(range(200, 256)))


def test_fingerprint_follows_content_not_name(tmp_path):
    data = os.urandom(5 * BLOCK_BYTES)
    a, b = tmp_path / "a.flac", tmp_path / "sub dir" / "b.mp3"
    b.parent.mkdir()
    a.write_bytes(data)
    b.write_bytes(data)
    _, size, fp_a = read_head_and_fingerprint(str(a))
    _, _, fp_b = read_head_and_fingerprint(str(b))
    assert size == len(data) and fp_a == fp_b and re.fullmatch(r"[0-9a-f]{32}", fp_a)
    # A change inside each sampled block (first, middle, last) changes the id.
    for offset in (10, len(data) // 2, len(data) - 10):
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        b.write_bytes(changed)
        assert read_head_and_fingerprint(str(b))[2] != fp_a
    # Small files are hashed whole; the size is part of the hash.
    small = tmp_path / "small.wav"
    small.write_bytes(data[: 2 * BLOCK_BYTES])
    fp_small = read_head_and_fingerprint(str(small))[2]
    small.write_bytes(data[: 2 * BLOCK_BYTES] + b"\x00")
    assert read_head_and_fingerprint(str(small))[2] != fp_small


@pytest.mark.parametrize(
    "ext, codec",
    [(".mp3", "mp3"), (".flac", "flac"), (".ogg", "vorbis"), (".m4a", "aac"), (".opus", "opus"), (".wav", "pcm_s16le")],
)
def test_every_format_is_probed(tmp_path, make_track, ext, codec):
    path = make_track(tmp_path / f"t{ext}", seconds=1.5, tags={"artist": "Ä", "album": "B (1)", "title": "C"})
    result = probe_file(str(path))
    assert result.codec == codec and result.channels == 2
    assert abs(result.duration - 1.5) < 0.1
    assert result.sample_rate == (48000 if ext == ".opus" else 44100)
    assert result.tags == {"artist": "Ä", "album": "B (1)", "title": "C"}


def test_flac_named_mp3_is_audio(tmp_path, make_track):
    path = make_track(tmp_path / "really flac.mp3", extra_args=["-c:a", "flac", "-f", "flac"])
    result = probe_file(str(path))
    assert result.codec == "flac"


def test_mp3_starting_with_junk_is_found_by_its_frame_chain(tmp_path, make_track):
    mp3 = make_track(tmp_path / "clean.mp3", extra_args=["-c:a", "libmp3lame", "-id3v2_version", "0", "-f", "mp3"])
    padded = tmp_path / "padded.mp3"
    padded.write_bytes(b"\x00" * 1000 + b"junk" + mp3.read_bytes())
    assert probe_file(str(padded)).codec == "mp3"
    rng = random.Random(3)
    assert all(find_frame_chain(rng.randbytes(BLOCK_BYTES)) is None for _ in range(20))
    assert find_frame_chain(b"\xff" * BLOCK_BYTES) is None


def test_unusual_but_valid_audio(tmp_path, make_track):
    surround = probe_file(str(make_track(tmp_path / "51.wav", channels=6)))
    assert surround.channels == 6
    lofi = probe_file(
        str(make_track(tmp_path / "lofi.wav", channels=1, sample_rate=22050, extra_args=["-c:a", "pcm_u8"]))
    )
    assert (lofi.channels, lofi.sample_rate, lofi.codec) == (1, 22050, "pcm_u8")
    hires = probe_file(
        str(make_track(tmp_path / "hires.flac", sample_rate=96000, extra_args=["-c:a", "flac", "-sample_fmt", "s32"]))
    )
    assert hires.sample_rate == 96000 and hires.codec == "flac"
    short = probe_file(str(make_track(tmp_path / "short.mp3", seconds=0.1)))
    assert 0 < short.duration < 0.2


def test_truncated_files_are_failures(tmp_path, make_track):
    for ext in (".mp3", ".flac"):
        whole = make_track(tmp_path / f"whole{ext}", seconds=6.0).read_bytes()
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(whole[: len(whole) // 8])
        assert probe_failure(cut).startswith("truncated: the header says 6.0 s")


@pytest.mark.parametrize("ext, codec", [(".aif", "pcm_s16be"), (".aiff", "pcm_s24be")])
def test_plain_aiff_is_a_track(tmp_path, make_track, ext, codec):
    """ffprobe's seek past the end fails on AIFF: it must not make the file a failure (issue 10, class 5)."""
    path = make_track(tmp_path / f"t{ext}", seconds=1.5, extra_args=["-c:a", codec, "-f", "aiff"])
    result = probe_file(str(path))
    assert result.codec == codec and abs(result.duration - 1.5) < 0.01


@pytest.mark.parametrize(
    "ext, args, reason",
    [
        (".wav", [], "truncated: the WAV header says"),
        (".aiff", ["-c:a", "pcm_s16be", "-f", "aiff"], "truncated: the AIFF header says"),
        (".flac", [], "truncated: the header says 4.0 s"),
        (".mp3", [], "truncated: the header says 4.0 s"),
        (".m4a", [], "truncated: the MP4 'mdat' box"),
        (".m4a", ["-c:a", "aac", "-movflags", "+faststart", "-f", "ipod"], "truncated: the MP4 'mdat' box"),
        (".ogg", [], "truncated: the Ogg stream has no end-of-stream page"),
        (".opus", [], "truncated: the Ogg stream has no end-of-stream page"),
        (".wv", ["-c:a", "wavpack", "-f", "wv"], "truncated: the header says 4.0 s"),
    ],
    ids=["wav", "aiff", "flac", "mp3", "m4a", "m4a-faststart", "ogg", "opus", "wavpack"],
)
def test_a_truncated_file_of_any_container_is_a_failure_never_a_shorter_track(tmp_path, make_track, ext, args, reason):
    whole = make_track(tmp_path / f"whole{ext}", seconds=4.0, extra_args=args or None)
    assert abs(probe_file(str(whole)).duration - 4.0) < 0.1
    data = whole.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert probe_failure(cut).startswith(reason)


def test_vbr_mp3_without_length_header_is_a_track_with_its_real_duration(tmp_path):
    """Old VBR encoders write no Xing/VBRI frame: ffprobe then guesses the duration from the first
    bitrate (55 s for this 40 s file with a quiet intro), which must not read as truncation."""
    from pipeline.demo.synth import encode, synth_music

    signal = synth_music(40.0, seed=3)
    signal[: 44100 * 10] *= 0.01  # a quiet intro: a low first bitrate, so the guess overshoots
    vbr = ["-c:a", "libmp3lame", "-q:a", "2"]
    bare = encode(signal, 44100, tmp_path / "no header.mp3", extra_args=vbr + ["-write_xing", "0"])
    tagged = encode(signal, 44100, tmp_path / "xing.mp3", extra_args=vbr, tags={"title": "x" * 200})
    assert abs(probe_file(str(bare)).duration - 40.0) < 0.1
    assert abs(probe_file(str(tagged)).duration - 40.0) < 0.1
    assert not mp3_declares_length(bare.read_bytes()[:BLOCK_BYTES])
    assert mp3_declares_length(tagged.read_bytes()[:BLOCK_BYTES])  # found behind the ID3v2 tag
    # Cut in half, the headerless file is a (shorter) track; with a header it is a failure.
    cut_bare, cut_tagged = tmp_path / "cut bare.mp3", tmp_path / "cut tagged.mp3"
    cut_bare.write_bytes(bare.read_bytes()[: bare.stat().st_size // 2])
    cut_tagged.write_bytes(tagged.read_bytes()[: tagged.stat().st_size // 2])
    assert 5.0 < probe_file(str(cut_bare)).duration < 35.0
    assert probe_failure(cut_tagged).startswith("truncated: the header says 40.0 s")


@pytest.mark.parametrize("junk", [100, BLOCK_BYTES + 7, 5 * BLOCK_BYTES])
def test_mp3_after_any_amount_of_junk_is_a_track_with_its_decoded_duration(tmp_path, make_track, junk):
    """The frame chain is looked for in the first block only; past it, ffmpeg decides. ffprobe would
    count the junk as audio at the first frame's bitrate (7.4 s for 3 s after 70 KB), so the
    duration is that of the decoded samples."""
    mp3 = make_track(
        tmp_path / "clean.mp3", seconds=3.0, extra_args=["-c:a", "libmp3lame", "-id3v2_version", "0", "-f", "mp3"]
    )
    padded = tmp_path / "padded.mp3"
    padded.write_bytes(random.Random(junk).randbytes(junk) + mp3.read_bytes())
    result = probe_file(str(padded))
    # ffmpeg may lose a few frames resynchronising after random junk: the duration is what it decodes
    assert result.codec == "mp3" and result.duration == pytest.approx(probe_file(str(mp3)).duration, abs=0.2)
    (tmp_path / "noise.mp3").write_bytes(random.Random(1).randbytes(3 * BLOCK_BYTES))
    assert probe_failure(tmp_path / "noise.mp3").startswith("not audio: content is not a known audio format")


def test_hostile_non_audio_is_a_failure_with_reason(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "notes.mp3").write_text("these are not songs\n")
    (tmp_path / "noise.ogg").write_bytes(bytes(range(256)) * 64)
    assert probe_failure(tmp_path / "empty.mp3") == "not audio: empty file"
    assert probe_failure(tmp_path / "notes.mp3") == "not audio: content is text, not audio"
    assert probe_failure(tmp_path / "noise.ogg").startswith("not audio: content is not a known audio format")
    assert probe_failure(tmp_path / "gone.mp3") == "file vanished between scan and probe"


def test_container_without_audio_is_a_failure(tmp_path, make_track):
    video_only = tmp_path / "clip.m4a"
    make_track(
        video_only,
        extra_args=["-f", "lavfi", "-i", "color=c=black:s=16x16:d=1", "-map", "1:v", "-c:v", "mpeg4", "-f", "mp4"],
    )
    assert probe_failure(video_only) == "no audio stream"


def test_content_only_candidates_are_ignored_not_failed(tmp_path, make_track):
    (tmp_path / "README").write_text("not audio")
    assert probe_file(str(tmp_path / "README"), by_extension=False) is None
    flac = make_track(tmp_path / "track01", extra_args=["-c:a", "flac", "-f", "flac"])
    assert probe_file(str(flac), by_extension=False).codec == "flac"


def test_no_packet_past_the_end_asks_again_for_the_last_seconds(monkeypatch):
    """Some demuxers find nothing when seeking past the end; the tail is then read from duration - 2 s."""
    import pipeline.ingest.probe as probe

    stream = {"codec_name": "wmav2", "sample_rate": "44100", "channels": 2, "duration": "10.0"}
    asked = []

    def fake_ffprobe(path, read_from="99999999"):
        asked.append((path, read_from))
        return {"streams": [stream], "packets": [{"pts_time": "9.9", "duration_time": "0.1"}]}

    monkeypatch.setattr(probe, "run_ffprobe", fake_ffprobe)
    assert probe.interpret({"streams": [stream], "packets": []}, "/x.wma")[:4] == (10.0, 44100, 2, "wmav2")
    assert asked == [("/x.wma", "8.000")]
    with pytest.raises(ProbeError, match="no audio packets can be read"):
        probe.interpret({"streams": [stream], "packets": []})


def test_a_failure_an_older_prober_decided_is_probed_again_once(tmp_path, make_track):
    """Upgrading must not keep a track out: a journaled 'not audio' from before junk-prefixed MP3s
    were decoded is probed again; the new outcome is then reused like any other."""
    import json

    from pipeline import format as fmt
    from pipeline.ingest.journal import JOURNAL_FILE
    from pipeline.ingest.run import ingest

    mp3 = make_track(tmp_path / "clean.mp3", seconds=2.0, extra_args=["-c:a", "libmp3lame", "-f", "mp3"])
    root = tmp_path / "root"
    root.mkdir()
    padded = root / "padded.mp3"
    padded.write_bytes(random.Random(1).randbytes(2 * BLOCK_BYTES) + mp3.read_bytes())
    mp3.unlink()
    st = padded.stat()
    old = {"path": str(padded), "size": st.st_size, "mtime": st.st_mtime, "kind": "failure"}
    old["reason"] = "not audio: content is not a known audio format (starts with 00)"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / JOURNAL_FILE).write_text(json.dumps(old) + "\n")
    first = ingest([str(root)], tmp_path / "m")
    assert [t.path for t in fmt.read_tracks(tmp_path / "m")] == [str(padded)]
    again = ingest([str(root)], tmp_path / "m")
    assert (first.probed, again.probed) == (1, 0)
