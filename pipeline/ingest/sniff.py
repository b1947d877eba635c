"""What a file is by its name and its first bytes: the extensions nominated as audio or known not to be,
and content sniffing (magic numbers, RIFF/AIFF forms, chains of MPEG audio or ADTS frames), so that a
mislabelled file is caught before ffprobe is asked and a failure can say what the bytes are."""

from __future__ import annotations

# Nominated as audio by their name; the content still has to agree.
AUDIO_EXTENSIONS = frozenset(
    {
        "mp3",
        "mp2",
        "mpga",
        "flac",
        "ogg",
        "oga",
        "opus",
        "m4a",
        "m4b",
        "mp4",
        "aac",
        "wav",
        "wave",
        "aif",
        "aiff",
        "aifc",
        "wma",
        "ape",
        "wv",
        "mpc",
        "mka",
        "webm",
        "alac",
        "tta",
        "dsf",
        "dff",
        "au",
        "caf",
    }
)
# Known not to be audio: skipped without a stat. Anything else is sniffed and kept if it is audio.
OTHER_EXTENSIONS = frozenset(
    {
        "jpg",
        "jpeg",
        "png",
        "gif",
        "bmp",
        "webp",
        "tif",
        "tiff",
        "txt",
        "log",
        "cue",
        "nfo",
        "pdf",
        "m3u",
        "m3u8",
        "pls",
        "sfv",
        "md5",
        "ffp",
        "accurip",
        "db",
        "ini",
        "json",
        "xml",
        "html",
        "htm",
        "url",
        "lnk",
        "doc",
        "docx",
        "rtf",
        "md",
        "csv",
        "zip",
        "rar",
        "7z",
        "par2",
        "exe",
        "iso",
        "torrent",
    }
)


_STRONG_MAGIC = (
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"ID3", "id3"),
    (0, b"MAC ", "ape"),
    (0, b"wvpk", "wavpack"),
    (0, b"MPCK", "musepack"),
    (0, b"MP+", "musepack"),
    (0, b"TTA1", "tta"),
    (0, b"DSD ", "dsf"),
    (0, b"FRM8", "dff"),
    (0, b".snd", "au"),
    (0, b"caff", "caf"),
    (0, b"\x1aE\xdf\xa3", "matroska"),
    (0, b"0&\xb2u\x8ef\xcf\x11", "asf"),
    (4, b"ftyp", "mp4"),
)
_RIFF_FORMS = {(b"RIFF", b"WAVE"), (b"RF64", b"WAVE"), (b"FORM", b"AIFF"), (b"FORM", b"AIFC")}
# kbit/s by bitrate index, per (MPEG-1?, layer); MPEG-2/2.5 layers II and III share a table.
_KBPS = {
    (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _frame_at(data: bytes, i: int) -> tuple[str, int] | None:
    """(kind, frame length) of a bare MPEG audio (mp1/2/3) or ADTS AAC frame header at `data[i]`."""
    if len(data) < i + 4 or data[i] != 0xFF or data[i + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = data[i + 1], data[i + 2]
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    if layer == 0:  # the ADTS syncword is 12 bits and its "layer" is always 0
        if len(data) < i + 6:
            return None
        length = ((data[i + 3] & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        return ("adts", length) if b1 & 0xF6 == 0xF0 and (b2 >> 2) & 0xF < 13 and length >= 7 else None
    bitrate, rate, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or bitrate in (0, 15) or rate == 3:
        return None
    mpeg1 = version == 3
    bits_per_second = _KBPS[mpeg1, layer][bitrate] * 1000
    sample_rate = _MPEG_RATES[version][rate]
    if layer == 3:
        return "mpeg", (12 * bits_per_second // sample_rate + padding) * 4
    per_frame = 144 if mpeg1 or layer == 2 else 72
    return "mpeg", per_frame * bits_per_second // sample_rate + padding


def _mpeg_frame_header(head: bytes) -> str | None:
    frame = _frame_at(head, 0)
    return frame[0] if frame else None


def find_frame_chain(data: bytes, frames: int = 3) -> str | None:
    """A run of `frames` back-to-back MPEG/ADTS frames anywhere in `data`: recognises MP3s that start
    with junk (zero padding, a stray tag) without taking random bytes, where a lone sync word is common
    but a chain of valid headers each at the previous one's computed end is not."""
    i = data.find(b"\xff")
    while i != -1:
        frame, j = _frame_at(data, i), i
        for _ in range(frames - 1):
            if frame is None:
                break
            j += frame[1]
            following = _frame_at(data, j)
            frame = following if following and following[0] == frame[0] else None
        if frame is not None:
            return frame[0]
        i = data.find(b"\xff", i + 1)
    return None


def sniff(head: bytes, strong_only: bool = False) -> str | None:
    """The container a file's first bytes announce, or None. `strong_only` ignores bare MPEG/ADTS
    frame syncs, which random binary data matches now and then: used for files that only the
    content (not the name) nominates."""
    for offset, magic, kind in _STRONG_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if (head[:4], head[8:12]) in _RIFF_FORMS:
        return "wav" if head[8:12] == b"WAVE" else "aiff"
    return None if strong_only else _mpeg_frame_header(head)


def describe_content(head: bytes) -> str:
    """What a non-audio head looks like, for the failure reason."""
    if not head:
        return "empty file"
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
            return "content is text, not audio"
        break
    return f"content is not a known audio format (starts with {head[:8].hex(' ')})"
