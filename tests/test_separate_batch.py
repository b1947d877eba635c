"""`trainer separate` as a batch tool: windows that cover the track, names from the input path alone,
mirrored folders, skip / --overwrite, --out checks, temporaries of killed runs, the summary line, the
messages, the output options, TTA and ensembles. The model is an untrained test-size separator saved
as a checkpoint (no training: these tests are about the files, not the quality)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from pipeline import format as fmt
from trainer.cli import main as trainer_cli
from trainer.separation.separate import Separator

from support import save_separator

STFT = fmt.STFTParams(n_fft=128, hop=64)
RATE = 44100

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_separator(tmp_path_factory.mktemp("sep") / "run")


def write_song(path: Path, seconds: float = 0.5, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((int(seconds * RATE), 2)).astype(np.float32)
    audio *= peak / np.abs(audio).max()
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, RATE, subtype="PCM_24" if path.suffix == ".flac" else "FLOAT")
    return audio


def run_separate(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(trainer_cli, ["separate", *map(str, args), "--device", "cpu", "--quiet"])
    return result.exit_code, result.stdout, result.stderr


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class _Identity(torch.nn.Module):
    def forward(self, x):
        return torch.ones_like(x), None


# --- windows ---------------------------------------------------------------------------------------


def test_every_window_and_overlap_either_covers_the_track_or_is_refused_naming_both():
    """The whole grid: a combination is refused (naming --window and --overlap) or gives back the
    mixture itself with a mask of ones (every sample covered, weights summing to one)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 2)).astype(np.float32)
    refused = []
    for window in range(2, 13):
        for overlap in np.round(np.arange(0.0, 1.0, 0.05), 2):
            try:
                separator = Separator(_Identity(), STFT, window, float(overlap), batch_size=2)
            except ValueError as exc:
                assert "--window" in str(exc) and "--overlap" in str(exc)
                refused.append((window, overlap))
                continue
            out = np.concatenate(list(separator.instrumental_chunks(x[i : i + 500] for i in range(0, len(x), 500))))
            assert out.shape == x.shape, (window, overlap)
            np.testing.assert_allclose(out, x, atol=1e-4, err_msg=f"window {window} overlap {overlap}")
    assert (2, 0.9) in refused and (2, 0.75) in refused and (3, 0.9) in refused and (4, 0.9) in refused
    assert (2, 0.5) not in refused and (8, 0.9) not in refused


def test_a_window_that_cannot_advance_is_a_one_line_error(checkpoint, tmp_path):
    write_song(tmp_path / "in" / "song.wav")
    code, out, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert code == 0, err
    code, out, err = run_separate(
        tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "o2", "--window", "2", "--overlap", "0.9"
    )
    assert code == 1 and "--window 2 with --overlap 0.9" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists() or not listing(tmp_path / "o2")


# --- names, the walk, skipping ---------------------------------------------------------------------


def test_names_come_from_the_path_alone_and_the_tree_is_mirrored(checkpoint, tmp_path):
    music = tmp_path / "music"
    write_song(music / "Artist" / "Album" / "CD1" / "01 a.wav", seed=1)
    write_song(music / "Artist" / "Album" / "02 b.wav", seed=2)
    write_song(music / "x.flac", seed=3)
    write_song(music / "x.wav", seed=4)  # shares the stem of x.flac
    (music / "cover.jpg").write_bytes(b"jpeg")
    code, out, err = run_separate(music, "--checkpoint", checkpoint, "--out", tmp_path / "o1")
    assert code == 1  # x.flac and x.wav would write the same files: both fail, nothing is renamed by position
    assert err.count("would also write") == 2 and "{input_ext}" in err
    assert listing(tmp_path / "o1") == [
        f"music/Artist/Album/{n}_{s}.flac" for n in ("02 b", "CD1/01 a") for s in ("instrumental", "vocals")
    ]
    assert "2 done, 0 skipped" in out and "2 failed" in out
    # with the input's extension in the name every file has its own, whatever the order of the inputs
    template = ["--filename", "{name}.{input_ext}_{stem}.{ext}"]
    for out_dir, order in (("o2", [music / "x.wav", music / "x.flac"]), ("o3", [music / "x.flac", music / "x.wav"])):
        code, out, err = run_separate(*order, "--checkpoint", checkpoint, "--out", tmp_path / out_dir, *template)
        assert code == 0, err
    for name in ("x.flac_instrumental.flac", "x.wav_vocals.flac"):
        a, _ = soundfile.read(tmp_path / "o2" / name)
        b, _ = soundfile.read(tmp_path / "o3" / name)
        assert np.array_equal(a, b)
    a, _ = soundfile.read(tmp_path / "o2" / "x.flac_instrumental.flac")
    b, _ = soundfile.read(tmp_path / "o2" / "x.wav_instrumental.flac")
    assert not np.array_equal(a, b)


def test_existing_outputs_are_never_overwritten_a_rerun_skips_them_and_overwrite_redoes(checkpoint, tmp_path):
    write_song(tmp_path / "in" / "song.wav", seed=1)
    write_song(tmp_path / "in" / "other.wav", seed=2)
    out = tmp_path / "out" / "in"
    out.mkdir(parents=True)
    (out / "song_instrumental.flac").write_bytes(b"a file of the user's")
    code, stdout, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert code == 1 and "song_instrumental.flac exists but" in err and "--overwrite" in err
    assert (out / "song_instrumental.flac").read_bytes() == b"a file of the user's"
    assert not (out / "song_vocals.flac").exists()
    assert "1 done, 0 skipped" in stdout and "1 failed" in stdout
    before = (out / "other_vocals.flac").stat().st_mtime_ns
    (out / "song_instrumental.flac").unlink()
    code, stdout, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert code == 0 and "1 done, 1 skipped" in stdout and "0 failed" in stdout
    assert (out / "other_vocals.flac").stat().st_mtime_ns == before
    code, stdout, err = run_separate(
        tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "out", "--overwrite"
    )
    assert code == 0 and "2 done, 0 skipped" in stdout


def test_out_inside_or_equal_to_an_input_folder_or_not_a_folder_is_refused(checkpoint, tmp_path):
    write_song(tmp_path / "in" / "song.wav")
    for out in (tmp_path / "in", tmp_path / "in" / "separated"):
        code, _, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", out)
        assert code == 1 and "inside the input folder" in err and len(err.strip().splitlines()) == 1
    assert listing(tmp_path / "in") == ["song.wav"]
    (tmp_path / "afile").write_text("x")
    for out, reason in ((tmp_path / "afile", "is a file"), (tmp_path / "afile" / "sub", "cannot write there")):
        code, _, err = run_separate(tmp_path / "in" / "song.wav", "--checkpoint", checkpoint, "--out", out)
        assert code in (1, 2) and "--out" in err and reason in err, err
        assert "song.wav" not in err  # never reported as a problem of the input


def test_a_mirrored_folder_that_cannot_be_made_fails_its_songs_with_the_reason(checkpoint, tmp_path):
    write_song(tmp_path / "in" / "song.wav")
    write_song(tmp_path / "other.wav")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "in").write_text("a file where the mirrored folder goes")
    code, stdout, err = run_separate(
        tmp_path / "in", tmp_path / "other.wav", "--checkpoint", checkpoint, "--out", tmp_path / "out"
    )
    assert code == 1 and "1 done" in stdout and "1 failed" in stdout
    assert f"error: {tmp_path / 'in' / 'song.wav'}:" in err


def test_temporaries_of_a_killed_run_are_removed_and_never_appear_as_outputs(checkpoint, tmp_path):
    write_song(tmp_path / "in" / "song.wav")
    out = tmp_path / "out" / "in"
    out.mkdir(parents=True)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = [out / f".song_instrumental.tmp-{dead}.flac", out / f".song_vocals.tmp-{dead}.flac"]
    for path in stale:
        path.write_bytes(b"half a file")
    foreign = out / f".notes.tmp-{dead}.txt"  # not one of our output names: left alone
    foreign.write_text("x")
    code, stdout, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert code == 0, err
    assert not any(p.exists() for p in stale) and foreign.exists()
    assert "2 unfinished files of a killed run removed" in stdout
    assert listing(tmp_path / "out") == sorted(
        ["in/song_instrumental.flac", "in/song_vocals.flac", f"in/.notes.tmp-{dead}.txt"]
    )


# --- messages --------------------------------------------------------------------------------------


def test_float_input_above_full_scale_is_told_when_flac_clips_it_and_kept_in_float_wav(checkpoint, tmp_path):
    loud = write_song(tmp_path / "in" / "loud.wav", peak=2.0)
    code, _, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "flac")
    assert code == 0 and "warning:" in err and "dBFS and was clipped in loud_" in err and "--bit-depth float" in err
    code, _, err = run_separate(
        tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "wav", "--format", "wav"
    )
    assert code == 0 and "warning" not in err
    instrumental, _ = soundfile.read(tmp_path / "wav" / "in" / "loud_instrumental.wav", dtype="float32")
    vocals, _ = soundfile.read(tmp_path / "wav" / "in" / "loud_vocals.wav", dtype="float32")
    np.testing.assert_allclose(instrumental + vocals, loud, atol=1e-6)
    assert np.abs(vocals + instrumental).max() > 1.5


def test_the_progress_bar_counts_whole_seconds():
    from trainer.separation.separate import progress_bar

    stream = io.StringIO()
    with progress_bar(4.4, "song", True, file=stream) as bar:
        bar.update(2.2291156462585033)
        bar.refresh()
    text = stream.getvalue()
    assert "2/4 s audio" in text and "2.229" not in text and "4.4" not in text


# --- output options --------------------------------------------------------------------------------


def test_stems_filename_format_and_bit_depth(checkpoint, tmp_path):
    mixture = write_song(tmp_path / "in" / "song.mp3.wav")
    code, _, err = run_separate(
        tmp_path / "in" / "song.mp3.wav", "--checkpoint", checkpoint, "--out", tmp_path / "a", "--stems", "vocals",
        "--filename", "{stem}/{name}.{ext}", "--format", "wav", "--bit-depth", "16",
    )  # fmt: skip
    assert code == 0, err
    assert listing(tmp_path / "a") == ["vocals/song.mp3.wav"]
    info = soundfile.info(tmp_path / "a" / "vocals" / "song.mp3.wav")
    assert info.subtype == "PCM_16" and info.samplerate == RATE and info.frames == len(mixture)
    for bad, field in (
        (["--bit-depth", "float"], "--bit-depth float with --format flac"),
        (["--filename", "{name}.{ext}"], "needs {stem}"),
        (["--filename", "{title}_{stem}.{ext}"], "unknown field {title}"),
        (["--filename", "../{name}_{stem}.{ext}"], "inside --out"),
    ):
        code, _, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "b", *bad)
        assert code == 1 and field in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", tmp_path / "b", "--threads", "0")
    assert code == 2 and "--threads" in err


# --- TTA and ensembles -----------------------------------------------------------------------------


@pytest.mark.parametrize("window, overlap", [(8, 0.0), (9, 0.25), (16, 0.5)])
def test_tta_with_a_mask_of_ones_gives_back_the_mixture(window, overlap):
    from trainer.separation.ensemble import Ensemble

    rng = np.random.default_rng(1)
    for n in (1, 900, 5000):
        x = rng.standard_normal((n, 2)).astype(np.float32)
        ensemble = Ensemble([Separator(_Identity(), STFT, window, overlap, batch_size=3)], tta=True)
        out = np.concatenate(list(ensemble.instrumental_chunks(x[i : i + 700] for i in range(0, n, 700))))
        assert out.shape == x.shape
        np.testing.assert_allclose(out, x, atol=1e-4)


def test_tta_and_ensembles_are_deterministic_and_an_ensemble_of_one_model_twice_is_that_model(tmp_path):
    from trainer.separation.ensemble import load_ensemble

    a, b = save_separator(tmp_path / "a", seed=0), save_separator(tmp_path / "b", seed=1)
    rng = np.random.default_rng(2)
    x = (0.3 * rng.standard_normal((20000, 2))).astype(np.float32)

    def run(checkpoints, tta):
        ensemble = load_ensemble([str(c) for c in checkpoints], "cpu", 2, None, None, tta)
        return np.concatenate(list(ensemble.instrumental_chunks(x[i : i + 4096] for i in range(0, len(x), 4096))))

    single, tta = run([a], False), run([a], True)
    assert np.array_equal(tta, run([a], True)) and not np.array_equal(single, tta)
    assert np.array_equal(run([a, a], False), single)
    both = run([a, b], False)
    assert np.array_equal(both, run([a, b], False))
    np.testing.assert_allclose(both, (single + run([b], False)) / 2, atol=1e-6)
    assert tta.shape == single.shape == x.shape


def test_separate_with_an_ensemble_and_tta_writes_one_pair_per_song(checkpoint, tmp_path):
    mixture = write_song(tmp_path / "in" / "song.wav")
    other = save_separator(tmp_path / "other", seed=3)
    code, stdout, err = run_separate(
        tmp_path / "in", "--checkpoint", checkpoint, "--checkpoint", other, "--tta", "--out", tmp_path / "o",
        "--format", "wav",
    )  # fmt: skip
    assert code == 0, err
    instrumental, _ = soundfile.read(tmp_path / "o" / "in" / "song_instrumental.wav", dtype="float32")
    vocals, _ = soundfile.read(tmp_path / "o" / "in" / "song_vocals.wav", dtype="float32")
    np.testing.assert_allclose(instrumental + vocals, mixture, atol=1e-6)
    assert "1 done" in stdout


@pytest.mark.slow
def test_a_run_killed_at_random_instants_resumes_without_loss_or_leftovers(checkpoint, tmp_path):
    """kill -9 while songs are being written, several times: every file under a final name is a whole
    separation, a rerun does only what is left, and no temporary survives the last run."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    songs = {f"song{i}": write_song(tmp_path / "in" / f"song{i}.wav", seconds=6.0, seed=i) for i in range(4)}
    command = [sys.executable, "-c", "from trainer.cli import main; main()", "separate", str(tmp_path / "in")]
    command += ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    for _ in range(3):
        process = subprocess.Popen(command, cwd=Path(__file__).parent.parent, env=env, stdout=subprocess.PIPE)
        time.sleep(rng.uniform(2.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    result = subprocess.run(command, cwd=Path(__file__).parent.parent, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "0 failed" in result.stdout
    out = tmp_path / "out" / "in"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}_{stem}.flac" for name in songs for stem in ("instrumental", "vocals")
    )
    for name, mixture in songs.items():
        instrumental, _ = soundfile.read(out / f"{name}_instrumental.flac", dtype="float32")
        vocals, _ = soundfile.read(out / f"{name}_vocals.flac", dtype="float32")
        np.testing.assert_allclose(instrumental + vocals, mixture, atol=1e-4)


def test_devices_that_are_not_here_are_one_line_errors(checkpoint, tmp_path):
    write_song(tmp_path / "in" / "song.wav")
    command = ["separate", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    if not torch.backends.mps.is_available():  # a device this machine lacks: one line when it is picked
        result = CliRunner().invoke(trainer_cli, command + ["--device", "mps", "--quiet"])
        assert result.exit_code == 1 and "--device mps" in result.stderr and "MPS is not available" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    result = CliRunner().invoke(trainer_cli, command + ["--device", "tpu", "--quiet"])  # no such device anywhere
    assert result.exit_code == 2 and "'--device': 'tpu' is not a device" in result.stderr


def test_a_second_run_into_the_same_out_is_refused_while_the_first_writes(checkpoint, tmp_path):
    from pipeline.durable import exclusive

    write_song(tmp_path / "in" / "song.wav")
    out = tmp_path / "out"
    out.mkdir()
    with exclusive(out, "held by the test"):  # what a running `trainer separate` holds
        code, _, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", out)
        assert code == 1 and "another trainer separate is writing there" in err and len(err.strip().splitlines()) == 1
    assert listing(out) == []  # nothing written
    code, _, err = run_separate(tmp_path / "in", "--checkpoint", checkpoint, "--out", out)
    assert code == 0, err
    assert listing(out) == ["in/song_instrumental.flac", "in/song_vocals.flac"]  # and no lock file


def test_a_folder_lock_that_the_file_system_cannot_take_warns_and_runs(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    from pipeline import durable

    def no_folder_locks(fd, operation):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(fcntl, "flock", no_folder_locks)
    ran = []
    with durable.exclusive(tmp_path, "busy"):
        ran.append(True)
    assert ran and "cannot lock" in capsys.readouterr().err
    # a lock file on such a file system is still an error, as before: its block never runs
    with pytest.raises(OSError), durable.exclusive(tmp_path / "lock", "busy"):
        ran.append(False)
    assert ran == [True]
