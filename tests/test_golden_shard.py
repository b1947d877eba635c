"""The writer and the readers together: `pipeline shard` output read by the trainer's loaders, and one
shard's bytes pinned by a golden sha256.

The golden hash pins the on-disk format (tar headers, member names and order, the .npy header and
payload, the json) across upgrades of Python, numpy, torch and libsndfile. Its input is chosen so
that its spectrum is exact whatever FFT code computes it: 16-bit WAVs that are silent except for
single-sample clicks at multiples of the hop, spaced more than n_fft apart. A frame centred on a
click sees it at the Hann window's peak (1.0), so its spectrum is flat at the click's amplitude,
a power of two that float16 holds exactly; every other frame is zero (in log8 a click frame is one
code across the bins: its level relative to the sample's loudest click). (The spectra of real music
are tested against a whole-track reference in test_stft.py.)

On a deliberate change of the shard format: bump `pipeline.format.FORMAT_VERSION`, run this test,
check the new layout with `pipeline verify` and the trainer, and paste the sha256 the failure
prints into GOLDEN_SHA256 in the same commit (shards/README.md says the same). The log8 hash also
pins the deflate implementation (Python's zlib module; zlib-ng in zlib-compatible mode gives
different, equally valid bytes, so a build that swaps it fails here first); the log8-zstd hash pins
the zstd library that the `zstandard` package bundles (a new zstd release may compress level 1
differently: the old shards stay readable, only this hash needs the new value).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile
import torch

from pipeline import format as fmt
from pipeline.shard.plan import ShardOptions
from pipeline.shard.run import run_shard
from trainer.data import eval_loader, train_loader

from support import track_record

# Format version 2 (encodings): log8-zstd is the default (shards/README.md, docs/terabyte.md say why);
# log8 (gzip, the default before issue 22) and float16 are pinned too, since they stay available and
# readable: their hashes did not change when log8-zstd was added. Version 1's float16 hash was 6e648e7d…3528f4a.
GOLDEN_SHA256 = {
    "log8-zstd": "5ec4e42a0fd1bba855c82cdbd4c0a09c2814220ad56a7bdea6b119e4824bf9ae",
    "log8": "04913edccfe0f2bdb75529282885854c8889e69b763f3cdc0cd1b2f8a367b9b9",
    "float16": "2634e142180d01780c05019f3ff53df578ba8675971b4472c96cf0425f705f68",
}
HOP = fmt.DEFAULT_HOP
CLIP_FRAMES = 32
SHARD_BYTES = 50_000_000  # one shard per split
AMPLITUDES = (0.5, 0.25, 0.125, 0.75)  # 16-bit values n / 32768, exact in float16


def click_track(path, clicks: int, first_amplitude: int) -> float:
    """A stereo WAV of `clicks` clicks, one every 3 hops (> n_fft apart); returns its duration."""
    samples = np.zeros(((clicks + 1) * 3 * HOP, 2), dtype=np.int16)
    for i in range(clicks):
        amplitude = AMPLITUDES[(first_amplitude + i) % len(AMPLITUDES)]
        samples[(i + 1) * 3 * HOP, 0] = int(amplitude * 32768)
        samples[(i + 1) * 3 * HOP, 1] = int(amplitude * 16384)  # the right channel at half level
    soundfile.write(path, samples, fmt.SAMPLE_RATE, subtype="PCM_16")
    return len(samples) / fmt.SAMPLE_RATE


@pytest.mark.parametrize("encoding", fmt.ENCODINGS)
def test_pipeline_shard_output_feeds_the_trainer_loaders_and_its_bytes_are_pinned(tmp_path, encoding):
    records = []
    for i, (split, clicks) in enumerate([("train", 30), ("train", 24), ("train", 20), ("val", 22)]):
        path = tmp_path / "drive" / f"{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        duration = click_track(path, clicks, i)
        records.append(
            track_record(path, f"golden{i:02d}", tmp_path / "drive", f"artist/album {i % 3}", split, duration)
        )
    manifests = tmp_path / "manifests"
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, records)
    out = tmp_path / "shards"
    options = ShardOptions(clip_frames=CLIP_FRAMES, shard_bytes=SHARD_BYTES, encoding=encoding)
    summary = run_shard(manifests, out, options, workers=1, progress=False)
    assert summary.failures == 0 and summary.splits == {"train": 1, "val": 1}

    digest = hashlib.sha256((out / fmt.shard_name("train", 0)).read_bytes()).hexdigest()
    assert digest == GOLDEN_SHA256[encoding], (
        f"the {encoding} shard format changed: new sha256 {digest} (see this module's docstring)"
    )
    assert fmt.read_index(out / fmt.index_name("train")).encoding == encoding

    train = next(iter(train_loader(out, batch_size=4, crop_frames=16, num_workers=0, seed=0, shuffle_buffer=4)))
    assert train["spec"].shape == (4, 2, fmt.STFTParams().bins, 16) and train["spec"].dtype == torch.float32
    assert all(key.startswith("golden0") for key in train["key"]) and len(train["group"]) == 4
    spec = train["spec"]  # every crop scaled by its own max; a click frame is flat across the bins
    assert torch.equal(spec.amax(dim=2), spec.amin(dim=2)) and set(spec.amax(dim=(1, 2, 3)).tolist()) <= {0.0, 1.0}

    val = list(eval_loader(out, batch_size=8, crop_frames=CLIP_FRAMES, max_batches=None))
    index = fmt.read_index(out / fmt.index_name("val"))
    assert sum(len(batch["key"]) for batch in val) == index.totals["samples"]
    click_frames = (val[0]["spec"][:, 0].amax(dim=1) > 0).sum(dim=1)
    assert torch.all(click_frames >= 1)  # every clip of the val track holds a click frame
