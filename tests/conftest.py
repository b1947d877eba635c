"""Shared fixtures: small audio files made on the spot with pipeline.demo.synth (never real music)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipeline.demo.synth import synth_music, write_track
from pipeline.shard.run import run_shard

from support import OPTIONS, make_collection

_seeds = itertools.count(1000)


@pytest.fixture
def make_track():
    """make_track(path, seconds=1.0, **write_track_args) -> Path: an encoded synthetic track whose
    codec follows the extension; every call gets fresh content (a new seed), so two calls never
    produce duplicates by accident."""

    def make(path, seconds: float = 1.0, **kwargs) -> Path:
        kwargs.setdefault("seed", next(_seeds))
        return write_track(Path(path), seconds=seconds, **kwargs)

    return make


@pytest.fixture
def make_wav():
    """make_wav(path, seconds=0.5, sample_rate=22050) -> Path: a 16-bit WAV written without ffmpeg,
    for tests that need many distinct files quickly."""

    def make(path, seconds: float = 0.5, sample_rate: int = 22050) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        signal = synth_music(seconds, sample_rate, 2, seed=next(_seeds))
        soundfile.write(path, np.clip(signal, -1, 1), sample_rate, subtype="PCM_16")
        return path

    return make


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """(base, manifests, records): support.make_collection, made once per test module."""
    base = tmp_path_factory.mktemp("collection")
    manifests, records = make_collection(base)
    return base, manifests, records


@pytest.fixture(scope="module")
def clean(collection):
    """The reference shard set of `collection`: an uninterrupted run with one worker."""
    base, manifests, _ = collection
    out = base / "clean"
    run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    return out


@pytest.fixture
def one_thread():
    """Torch on one thread for a test module that trains (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    two cores are shared by every test process, and spinning OpenMP threads only slow each other down."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
