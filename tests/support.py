"""Helpers shared by several test modules (fixtures built on them are in conftest.py).

- a small synthetic collection on three "drives" with its manifest, and `pipeline` run as a user would;
- generated shards in the pipeline's format for the trainer tests, and the tiny model shrunk to test size;
- the ffmpeg children of this process (a decoder must never leave one behind).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import webdataset as wds

from pipeline import format as fmt
from pipeline.demo import synth
from pipeline.shard.plan import ShardOptions

# --- a collection and the shard CLI ------------------------------------------------------------

CLIP_FRAMES = 16
SHARD_BYTES = 200_000  # a few tracks per shard
OPTIONS = ShardOptions(clip_frames=CLIP_FRAMES, shard_bytes=SHARD_BYTES)
CLI_OPTIONS = ["--clip-frames", str(CLIP_FRAMES), "--shard-size", str(SHARD_BYTES), "--quiet"]
# (extension, seconds, root, album, split)
LAYOUT = [
    (".mp3", 1.6, "ssd1", "a/one", "train"),
    (".flac", 1.2, "ssd1", "a/one", "train"),
    (".wav", 0.9, "ssd1", "a/two", "train"),
    (".ogg", 1.4, "ssd2", "b/three", "train"),
    (".m4a", 1.0, "ssd2", "b/three", "train"),
    (".opus", 1.3, "ssd2", "b/four", "train"),
    (".flac", 0.8, "ssd3", "c/five", "train"),
    (".mp3", 1.1, "ssd3", "c/six", "val"),
    (".wav", 0.7, "ssd3", "c/six", "val"),
]


def track_record(
    path: Path, track_id: str, root: Path, album_key: str, split: str, duration: float, **changes
) -> fmt.TrackRecord:
    stat = path.stat() if path.exists() else None
    record = fmt.TrackRecord(
        id=track_id,
        path=str(path),
        root=str(root),
        size=stat.st_size if stat else 0,
        mtime=stat.st_mtime if stat else 0.0,
        duration=duration,
        sample_rate=44100,
        channels=2,
        codec=path.suffix.lstrip("."),
        artist=album_key.split("/")[0],
        album=album_key.split("/")[1],
        title=path.stem,
        album_key=album_key,
        split=split,
    )
    return fmt.TrackRecord(**{**record.__dict__, **changes})


def make_collection(base: Path) -> tuple[Path, list[fmt.TrackRecord]]:
    """Synthetic tracks on three "drives" plus a manifest in base/manifests; returns (manifests, tracks)."""
    records = []
    for i, (ext, seconds, root, album_key, split) in enumerate(LAYOUT):
        root_dir = base / root
        path = synth.write_track(
            root_dir / album_key / f"{i:02d}{ext}", seconds=seconds, seed=i, channels=1 if i == 2 else 2
        )
        records.append(track_record(path, f"track{i:02d}", root_dir, album_key, split, seconds))
    # A byte-identical copy: the manifest marks it as a duplicate, so it is never sharded.
    copy = base / "ssd3" / "copy.mp3"
    shutil.copyfile(records[0].path, copy)
    records.append(track_record(copy, "copy00", base / "ssd3", "a/one", "train", 1.6, duplicate_of="track00"))
    manifests = base / "manifests"
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, records)
    return manifests, records


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `pipeline` console entry in a fresh process (what a user, or kill -9, sees)."""
    return subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def shard_bytes(out: Path) -> dict[str, bytes]:
    """Every final shard and index, by name: what 'byte-identical shard set' compares."""
    return {
        p.name: p.read_bytes()
        for p in sorted(out.iterdir())
        if p.is_file() and (p.suffix == ".tar" or p.suffix == ".json")
    }


# --- shards for the trainer ---------------------------------------------------------------------

BINS, GENERATED_CLIP_FRAMES = 64, 160
TRAINER = str(Path(sys.executable).with_name("trainer"))
# The tiny preset, shrunk to test size: every test run uses these plus its own step counts.
SMALL = [
    "model.bins=64",
    "model.num_downsamples=3",
    "model.channels=[4,8,8,16]",
    "model.first_transformer_level=2",
    "model.num_encoders=1",
    "model.num_decoders=1",
    "data.crop_frames=128",
    "data.batch_size=4",
    "data.val_batch_size=4",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "optim.warmup_steps=5",
    "optim.lr=1e-2",
    "run.log_every=5",
    "run.val_batches=2",
    "run.image_every=10",
]


def synthetic_clip(rng: np.random.Generator, fundamental: int, frames: int) -> np.ndarray:
    """Harmonic stacks switched on and off in 8-frame notes: structure a model can learn quickly."""
    bins = np.arange(BINS)[:, None]
    spec = np.zeros((BINS, frames))
    for harmonic in range(1, BINS // fundamental):
        spec += np.exp(-0.5 * ((bins - harmonic * fundamental) / 0.8) ** 2) / harmonic
    notes = rng.random(frames // 8 + 1) < 0.7
    envelope = np.repeat(notes, 8)[:frames] * np.exp(-(np.arange(frames) % 8) / 6.0)
    spec = 30.0 * spec * envelope[None, :] + rng.random((BINS, frames)) * 0.3
    stereo = np.stack([spec, spec * rng.uniform(0.6, 1.0)])
    return stereo.astype(fmt.SPEC_DTYPE)


def write_shards(root: Path, tracks: dict[str, int], clips_per_track: int = 4, shards_per_split: int = 2) -> Path:
    """shards/{split}-NNNNNN.tar + {split}.json in the pipeline's format; the first 3 tracks go to val."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stft = fmt.STFTParams(n_fft=2 * BINS).to_dict()
    for split in fmt.SPLITS:
        track_ids = [t for i, t in enumerate(tracks) if (i < 3) == (split == "val")]
        samples = [(t, c) for c in range(clips_per_track) for t in track_ids]  # tracks interleaved
        entries = []
        for shard in range(shards_per_split):
            name = fmt.shard_name(split, shard)
            mine = samples[shard * len(samples) // shards_per_split : (shard + 1) * len(samples) // shards_per_split]
            with wds.TarWriter(str(root / name)) as sink:
                for track_id, clip in mine:
                    meta = fmt.SampleMeta(
                        track_id=track_id,
                        clip=clip,
                        start_frame=clip * GENERATED_CLIP_FRAMES,
                        valid_frames=GENERATED_CLIP_FRAMES,
                        album_key=f"album/{track_id}",
                        stft=stft,
                    )
                    sink.write(
                        {
                            "__key__": fmt.sample_key(track_id, clip),
                            fmt.SPEC_KEY: fmt.encode_spec(synthetic_clip(rng, tracks[track_id], GENERATED_CLIP_FRAMES)),
                            fmt.META_KEY: fmt.encode_meta(meta),
                        }
                    )
            entries.append(fmt.ShardEntry(name, len(mine), (root / name).stat().st_size))
        index = fmt.ShardIndex(
            split=split,
            shardlist=entries,
            stft=stft,
            clip_frames=GENERATED_CLIP_FRAMES,
            totals={"samples": len(samples), "tracks": len(track_ids)},
        )
        fmt.write_index(root / fmt.index_name(split), index)
    return root


def make_pair_shards(base: Path, stft: fmt.STFTParams, songs: int = 4, seconds: float = 3.0) -> Path:
    """base/songs/Song N/{mixture,instrumental}.wav (synthetic band + voice), their pairs manifest in
    base/m (half the songs val) and pair shards of 64-frame clips in base/shards; returns base."""
    import soundfile

    from pipeline.pairs.run import PairOptions, build_pairs
    from pipeline.shard.run import run_shard

    rate = 44100
    for seed in range(songs):
        acc = 0.6 * synth.synth_music(seconds, rate, 2, seed=seed)
        voice = synth.synth_voice(seconds, rate, 2, seed=seed)
        song = base / "songs" / f"Song {seed}"
        song.mkdir(parents=True)
        soundfile.write(song / "mixture.wav", acc + voice, rate, subtype="FLOAT")
        soundfile.write(song / "instrumental.wav", acc, rate, subtype="FLOAT")
    summary = build_pairs(base / "m", [str(base / "songs")], options=PairOptions(val_fraction=0.5))
    assert summary.pairs == songs and set(summary.splits) == {"train", "val"}
    options = ShardOptions(stft=stft, clip_frames=64, sample_kind=fmt.SAMPLE_KIND_PAIRS)
    run_shard(base / "m", base / "shards", options, workers=1, progress=False)
    return base


def sample_members(key: str, meta: dict | list | str | None = None, spec: np.ndarray | None = None) -> tuple:
    """(key, spec.npy bytes, json bytes) of one hand-made sample: by default a valid one of BINS bins
    and 40 frames; `meta` or `spec` replace what is written (any JSON value, any array)."""
    if spec is None:
        spec = np.ones((2, BINS, 40), dtype=fmt.SPEC_DTYPE)
    buf = io.BytesIO()
    np.save(buf, spec, allow_pickle=False)
    if meta is None:
        meta = {"track_id": key.rsplit("_", 1)[0], "clip": 0, "start_frame": 0, "valid_frames": 40, "album_key": "a/b"}
    return key, buf.getvalue(), json.dumps(meta).encode()


def write_sample_tar(path: Path, samples: list[tuple]) -> Path:
    """A tar of `sample_members` tuples, in order (no index)."""
    with tarfile.open(path, "w") as tar:
        for key, spec, meta in samples:
            for name, data in ((f"{key}.{fmt.SPEC_KEY}", spec), (f"{key}.{fmt.META_KEY}", meta)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


# --- processes ----------------------------------------------------------------------------------


def ffmpeg_children() -> list[int]:
    """Live (not zombie) ffmpeg processes whose parent is this test process."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if comm == "ffmpeg" and int(ppid) == os.getpid() and state != "Z":
            pids.append(int(entry))
    return pids


def save_separator(run: Path, seed: int = 0, stft: fmt.STFTParams | None = None) -> Path:
    """A separation checkpoint of the test-size model with random weights, as `trainer finetune` saves it."""
    import torch

    from trainer.checkpoint import save_checkpoint
    from trainer.config import load_config
    from trainer.separation.task import build_separation_model

    torch.manual_seed(seed)
    cfg = load_config(
        "tiny",
        overrides=SMALL
        + ["data.crop_frames=32", "run.task=separation", "model.mask_prior=0.5"]
        + ["model.output=mask"],
    )
    model = build_separation_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    stft = stft or fmt.STFTParams(n_fft=128, hop=64)
    meta = {"task": "separation", "stft": stft.to_dict(), "init": None}
    save_checkpoint(run / "checkpoints", 1, model, optimizer, scheduler, cfg.to_dict(), meta=meta)
    return run
