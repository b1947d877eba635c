"""Fault injection across the chain (issue 6): kill -9 at random instants, and a drive that vanishes.

Every kill is a SIGKILL of the command's whole process group (it runs in its own session), at a
random instant drawn from a printed seed, so a failure can be replayed. While a victim runs, its
output folder is watched: nothing under a final name may ever be partial or rewritten.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline import format as fmt
from pipeline.demo import synth
from pipeline.ingest.journal import JOURNAL_FILE
from pipeline.shard.run import run_shard

from support import CLI_OPTIONS, OPTIONS, make_collection, shard_bytes, track_record

PIPELINE = [sys.executable, "-c", "from pipeline.cli import main; main()"]
POLL_SECONDS = 0.02


def start(cmd: list[str]) -> subprocess.Popen:
    """A victim in its own process group, so the kill also takes its ffmpeg children and workers.
    Its stderr goes to a file (a pipe nobody reads could fill and stall it); see victim_stderr."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    proc.log = log
    return proc


def victim_stderr(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")


def kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL the group; False when the command had already finished on its own (then successfully)."""
    finished = proc.poll() is not None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        finished = True
    proc.wait(timeout=30)
    if finished:
        assert proc.returncode == 0, f"a run between kills failed: {victim_stderr(proc)}"
    return finished


def watch_until(proc: subprocess.Popen, seconds: float, observe) -> None:
    """Call observe() every POLL_SECONDS until `seconds` pass or the command exits (then once more)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        observe()
        time.sleep(POLL_SECONDS)
    observe()


# --- 1. pipeline shard ------------------------------------------------------------------------


def shard_cmd(manifests: Path, out: Path, workers: int = 2) -> list[str]:
    return [
        *PIPELINE,
        "shard",
        "--manifests",
        str(manifests),
        "--out",
        str(out),
        "--workers",
        str(workers),
        *CLI_OPTIONS,
    ]


class ShardWatcher:
    """Every file under a final shard or index name equals the clean run's; a finished tar is never
    replaced or touched again (same inode and mtime at every later look)."""

    def __init__(self, out: Path, reference: dict[str, bytes]):
        self.out, self.reference = out, reference
        self.finished: dict[str, tuple[int, int]] = {}

    def __call__(self) -> None:
        if not self.out.exists():
            return
        for path in self.out.iterdir():
            if path.name not in self.reference:
                assert not (path.suffix in (".tar", ".json") and not path.name.startswith(".")), (
                    f"unexpected final file {path.name}"
                )
                continue
            try:
                stat = path.stat()
                data = path.read_bytes() if path.name not in self.finished else None
            except FileNotFoundError:
                assert path.suffix == ".json", f"{path.name} vanished after it was final"
                continue  # an index being replaced (atomically) by the resumed run
            if path.suffix == ".tar":
                identity = (stat.st_ino, stat.st_mtime_ns)
                if path.name in self.finished:
                    assert self.finished[path.name] == identity, f"{path.name} was rewritten"
                    continue
                self.finished[path.name] = identity
            if data is not None:
                assert data == self.reference[path.name], f"{path.name} is partial or differs from the clean run"


@pytest.fixture(scope="module")
def shard_collection(tmp_path_factory):
    """test_shard's 9 tracks: (manifests, the clean run's shard set by name)."""
    base = tmp_path_factory.mktemp("faults-shard")
    manifests, _ = make_collection(base)
    run_shard(manifests, base / "clean", OPTIONS, workers=1, progress=False)
    return manifests, shard_bytes(base / "clean")


@pytest.fixture(scope="module")
def larger_shard_collection(tmp_path_factory):
    """30 tracks in every codec on three drives, about 20 shards: enough work for ten kills in a row."""
    base = tmp_path_factory.mktemp("faults-shard-larger")
    extensions = [".mp3", ".flac", ".wav", ".ogg", ".m4a", ".opus"]
    records = []
    for i in range(30):
        root, album, seconds = base / f"ssd{i % 3 + 1}", f"artist{i % 4}/album{i % 6}", 1.0 + (i % 5) * 0.2
        path = synth.write_track(root / album / f"{i:02d}{extensions[i % 6]}", seconds=seconds, seed=100 + i)
        records.append(track_record(path, f"track{i:02d}", root, album, "val" if i % 6 == 5 else "train", seconds))
    manifests = base / "manifests"
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, records)
    run_shard(manifests, base / "clean", OPTIONS, workers=1, progress=False)
    return manifests, shard_bytes(base / "clean")


def kill_shard_repeatedly(
    manifests: Path, out: Path, reference: dict[str, bytes], kills: int, seed: int
) -> ShardWatcher:
    """`kills` runs in a row, each SIGKILLed a random 0-0.3 s after a random 0 to 2 more shards became
    final. Instants are drawn in progress rather than seconds because the same run takes a few times
    longer on the loaded machine than on an idle one; a late kill may find the run done (it must then
    have succeeded)."""
    rng = random.Random(seed)
    watcher = ShardWatcher(out, reference)
    tars = sum(name.endswith(".tar") for name in reference)
    interrupted = 0
    for _ in range(kills):
        target = min(len(watcher.finished) + rng.randint(0, 2), tars)
        proc = start(shard_cmd(manifests, out))
        deadline = time.monotonic() + 60
        while proc.poll() is None and len(watcher.finished) < target and time.monotonic() < deadline:
            watcher()
            time.sleep(POLL_SECONDS)
        watch_until(proc, rng.uniform(0.0, 0.3), watcher)
        interrupted += not kill_group(proc)
        watcher()
    print(f"seed {seed}: {interrupted} of {kills} shard runs killed before they finished")
    assert interrupted >= min(kills, 3), f"seed {seed}: only {interrupted} runs were killed before they finished"
    return watcher


def finish_shard_and_compare(
    manifests: Path, out: Path, reference: dict[str, bytes], watcher: ShardWatcher, seed: int
) -> None:
    kept = dict(watcher.finished)
    result = subprocess.run(shard_cmd(manifests, out), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    assert f"{len(kept)} kept" in result.stdout, f"seed {seed}: {result.stdout}"
    assert shard_bytes(out) == reference, f"seed {seed}"
    now = {name: ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) for name in kept}
    assert now == kept, f"seed {seed}: finished shards were redone"
    leftovers = [p.name for folder in (out, out / ".state") for p in folder.iterdir() if ".tmp-" in p.name]
    assert leftovers == [], f"seed {seed}"


@pytest.mark.timeout(120)
def test_shard_killed_once_then_resumed_equals_clean_run(shard_collection, tmp_path):
    """The quick version: one kill a random 0-0.1 s after the first shard is final, so it lands mid-work."""
    manifests, reference = shard_collection
    out = tmp_path / "out"
    seed = random.randrange(10**6)
    watcher = ShardWatcher(out, reference)
    proc = start(shard_cmd(manifests, out))
    deadline = time.monotonic() + 60
    while proc.poll() is None and not watcher.finished and time.monotonic() < deadline:
        watcher()
        time.sleep(POLL_SECONDS)
    watch_until(proc, random.Random(seed).uniform(0.0, 0.1), watcher)
    assert not kill_group(proc), f"seed {seed}: the run finished before the kill: {victim_stderr(proc)}"
    watcher()
    assert watcher.finished, f"seed {seed}"  # on an idle machine all tars may be final, the index not yet
    finish_shard_and_compare(manifests, out, reference, watcher, seed)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_shard_killed_at_ten_random_instants_in_a_row_equals_clean_run(larger_shard_collection, tmp_path):
    manifests, reference = larger_shard_collection
    seed = random.randrange(10**6)
    watcher = kill_shard_repeatedly(manifests, tmp_path / "out", reference, 10, seed)
    finish_shard_and_compare(manifests, tmp_path / "out", reference, watcher, seed)


# --- 2. pipeline ingest -----------------------------------------------------------------------


def ingest_cmd(roots: list[Path], manifests: Path) -> list[str]:
    return [*PIPELINE, "ingest", *map(str, roots), "--manifests", str(manifests), "--workers", "2"]


def manifest_files(manifests: Path) -> tuple[bytes, bytes]:
    return (manifests / fmt.TRACKS_FILE).read_bytes(), (manifests / fmt.FAILURES_FILE).read_bytes()


INGEST_FILES = 50  # in three_drives


@pytest.fixture
def three_drives(tmp_path, make_wav):
    """Three roots of short WAVs, plus files that must become failures (so failures.jsonl matters)."""
    roots = [tmp_path / name for name in ("ssd1", "ssd2", "usb")]
    for i in range(48):
        make_wav(roots[i % 3] / f"Artist {i % 4}" / f"Album {i % 7}" / f"{i:02d}.wav", seconds=0.1)
    (roots[1] / "bad").mkdir()
    (roots[1] / "bad" / "text.mp3").write_text("not audio at all\n")
    (roots[2] / "bad.flac").write_bytes(b"")
    return roots


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ingest_killed_at_ten_random_instants_in_a_row_equals_clean_run(three_drives, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(ingest_cmd(three_drives, clean), capture_output=True, check=True, timeout=120)
    reference = manifest_files(clean)
    assert reference[0].count(b"\n") + reference[1].count(b"\n") == INGEST_FILES

    def manifest_is_whole():
        # Only ever the finished manifest: the inputs never change, so it is the clean run's, whole.
        for name, expected in zip((fmt.TRACKS_FILE, fmt.FAILURES_FILE), reference):
            try:
                assert (killed / name).read_bytes() == expected, f"{name} seen partial or different"
            except FileNotFoundError:
                continue

    def journaled() -> int:
        try:
            return (killed / JOURNAL_FILE).read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    # A finished ingest makes the next run a no-op, so instants are drawn in progress, not seconds:
    # each run dies a random 0-0.3 s after its journal grew by a random 1-8 probes (mid-probe, or
    # later in scan/manifest/compaction once everything is probed).
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    interrupted = 0
    for _ in range(10):
        target = min(journaled() + rng.randint(1, 8), INGEST_FILES)
        proc = start(ingest_cmd(three_drives, killed))
        deadline = time.monotonic() + 60
        while proc.poll() is None and journaled() < target and time.monotonic() < deadline:
            manifest_is_whole()
            time.sleep(POLL_SECONDS)
        watch_until(proc, rng.uniform(0.0, 0.3), manifest_is_whole)
        interrupted += not kill_group(proc)
        manifest_is_whole()
    print(f"seed {seed}: {interrupted} of 10 ingest runs killed before they finished")
    assert interrupted >= 1, f"seed {seed}: no run was killed before it finished"
    result = subprocess.run(ingest_cmd(three_drives, killed), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    assert manifest_files(killed) == reference, f"seed {seed}"
    assert not list(killed.glob("*.tmp-*")), f"seed {seed}"


# --- 3. trainer pretrain ----------------------------------------------------------------------

TRAIN_STEPS, CKPT_EVERY, KEEP_LAST = 20, 4, 2


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    from test_pretrain import write_shards

    tracks = {f"track{i:02d}": fundamental for i, fundamental in enumerate([5, 7, 6, 9, 11, 13, 8, 10])}
    return write_shards(tmp_path_factory.mktemp("faults-shards"), tracks)


def pretrain_cmd(shards: Path, run: Path) -> list[str]:
    from test_pretrain import SMALL, TRAINER

    overrides = SMALL + [
        "data.num_workers=1",
        f"run.ckpt_every={CKPT_EVERY}",
        f"run.val_every={CKPT_EVERY}",
        f"run.keep_last={KEEP_LAST}",
        "run.val_batches=1",
    ]
    return [
        TRAINER,
        "pretrain",
        "--shards",
        str(shards),
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--steps",
        str(TRAIN_STEPS),
        "--run",
        str(run),
        *[f"--set={item}" for item in overrides],
    ]


def metric_rows(run: Path, split: str = "train") -> list[dict]:
    """metrics.jsonl as it is on disk, duplicates included; a last line still being written is left out."""
    try:
        lines = (run / "metrics.jsonl").read_text().split("\n")[:-1]
    except FileNotFoundError:
        return []
    return [row for row in map(json.loads, lines) if row["split"] == split]


def checkpoints(run: Path) -> tuple[list[str], str, str]:
    folder = run / "checkpoints"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir()),
        (folder / "last").read_text().strip(),
        (folder / "best").read_text().strip(),
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pretrain_killed_twice_then_rerun_finishes_like_an_uninterrupted_run(tiny_shards, tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    result = subprocess.run(
        pretrain_cmd(tiny_shards, reference),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr

    for kill_after in (CKPT_EVERY + 2, 3 * CKPT_EVERY + 1):  # each past a checkpoint, mid-interval
        proc = start(pretrain_cmd(tiny_shards, run))  # rerunning into the run folder resumes it
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            rows = metric_rows(run)
            if rows and rows[-1]["step"] >= kill_after:
                break
            time.sleep(POLL_SECONDS)
        assert not kill_group(proc), f"the run ended before it could be killed: {victim_stderr(proc)}"
        last = int((run / "checkpoints" / "last").read_text().strip().removeprefix("step-"))
        assert (kill_after // CKPT_EVERY) * CKPT_EVERY <= last < TRAIN_STEPS  # a checkpoint to resume from
    result = subprocess.run(
        pretrain_cmd(tiny_shards, run),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr

    rows = metric_rows(run)
    assert [r["step"] for r in rows] == list(range(1, TRAIN_STEPS + 1))  # exactly one row per step
    expected = {r["step"]: r for r in metric_rows(reference)}
    for row in rows:  # exact CPU mode: the same batches, corruptions and updates
        for key in ("loss", "masked_l1", "nsp_bce", "grad_norm", "lr"):
            assert row[key] == expected[row["step"]][key], (row["step"], key)
    val = [(r["step"], r["model_l1"], r["nsp_accuracy"]) for r in metric_rows(run, "val")]
    assert val == [(r["step"], r["model_l1"], r["nsp_accuracy"]) for r in metric_rows(reference, "val")]
    assert [step for step, _, _ in val] == list(range(CKPT_EVERY, TRAIN_STEPS + 1, CKPT_EVERY))
    names, last, best = checkpoints(run)
    assert (names, last, best) == checkpoints(reference)
    assert last == f"step-{TRAIN_STEPS:07d}" and best in names
    newest = [f"step-{s:07d}" for s in range(TRAIN_STEPS - (KEEP_LAST - 1) * CKPT_EVERY, TRAIN_STEPS + 1, CKPT_EVERY)]
    assert set(names) == set(newest) | {best}
    assert not list((run / "checkpoints").glob(".*.tmp-*"))


# --- 4. a drive that vanishes mid-run ---------------------------------------------------------


def unplug_on_call(module, name: str, calls: int, root: Path, away: Path, monkeypatch) -> None:
    """Wrap module.name so that `root` is renamed to `away` just before its `calls`-th call."""
    real = getattr(module, name)
    count = 0

    def wrapped(*args, **kwargs):
        nonlocal count
        count += 1
        if count == calls:
            root.rename(away)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.timeout(120)
def test_shard_drive_vanishing_mid_run_fails_its_tracks_and_rerun_completes_them(tmp_path, monkeypatch):
    from pipeline.audio import stft

    manifests, records = make_collection(tmp_path)
    clean = tmp_path / "clean"
    run_shard(manifests, clean, OPTIONS, workers=1, progress=False)
    reference = shard_bytes(clean)
    (manifests / fmt.FAILURES_FILE).unlink(missing_ok=True)

    usb, away = tmp_path / "ssd2", tmp_path / "ssd2-unplugged"
    out = tmp_path / "out"
    unplug_on_call(stft, "track_clips", 3, usb, away, monkeypatch)  # workers=1: units run in this process
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    monkeypatch.undo()

    failures = fmt.read_failures(manifests)
    on_usb = {r.path for r in records if r.root == str(usb) and not r.duplicate_of}
    assert failures and {f.stage for f in failures} == {"decode"}
    assert {f.path for f in failures} <= on_usb and summary.failures == len(failures)
    assert all(f.reason.startswith(f.path) and "\n" not in f.reason for f in failures)
    assert (out / "train.json").exists() and (out / "val.json").exists()  # the rest completed
    assert shard_bytes(out) != reference

    away.rename(usb)
    summary = run_shard(manifests, out, OPTIONS, workers=1, progress=False)
    assert shard_bytes(out) == reference
    assert summary.failures == 0 and fmt.read_failures(manifests) == []
    assert 0 < summary.written < summary.shards  # only the shards that lost tracks were redone


@pytest.mark.timeout(120)
def test_ingest_drive_vanishing_mid_run_is_an_error_for_it_and_rerun_completes_it(
    tmp_path, make_wav, monkeypatch, capsys
):
    import pipeline.ingest.run as ingest_module
    from pipeline.ingest.run import ingest

    roots = [tmp_path / name for name in ("ssd1", "ssd2", "usb")]
    for i in range(12):
        make_wav(roots[i % 3] / f"Album {i % 4}" / f"{i:02d}.wav", seconds=0.2)
    clean = tmp_path / "clean"
    ingest([str(r) for r in roots], clean, workers=1, progress=False)

    usb, away = roots[2], tmp_path / "usb-unplugged"
    manifests = tmp_path / "m"
    # Probes go round-robin over the roots: the 5th is on ssd2, after one usb file was probed.
    unplug_on_call(ingest_module, "probe_file", 5, usb, away, monkeypatch)
    summary = ingest([str(r) for r in roots], manifests, workers=1, progress=False)
    monkeypatch.undo()

    assert list(summary.root_errors) == [str(usb)]
    assert f"pipeline ingest: error: {usb}: " in capsys.readouterr().err
    tracks = fmt.read_tracks(manifests)
    assert {t.path for t in tracks if t.root != str(usb)} == {
        t.path for t in fmt.read_tracks(clean) if t.root != str(usb)
    }
    vanished = {f.path for f in fmt.read_failures(manifests)}
    assert vanished and vanished <= {t.path for t in fmt.read_tracks(clean) if t.root == str(usb)}

    away.rename(usb)
    summary = ingest([str(r) for r in roots], manifests, workers=1, progress=False)
    assert summary.root_errors == {}
    assert manifest_files(manifests) == manifest_files(clean)
