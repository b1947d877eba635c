"""trainer/logs.py: what a restarted run keeps of the history a killed run left behind."""

import os
import signal
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer.logs import RunLog, read_metrics

# Another process that takes the run, records step 1, says so and waits to be killed.
HOLD_RUN = """
import sys, time
from trainer.logs import RunLog
log = RunLog(sys.argv[1], 0)
log.record(1, "train", {"loss": 1.0})
print("holding", flush=True)
time.sleep(60)
"""


def killed_then_restarted(run, restart_step: int) -> None:
    log = RunLog(run, 0)
    for step in range(1, 6):
        log.record(step, "train", {"loss": float(step)})
        log.scalars(step, "train", {"loss": float(step)})
    log.close()
    # TensorBoard reads event files in name order: the second, then a per-process counter compared as
    # text ("10" < "9"); a real restart is a later process, so start the next second like one.
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.05)
    log = RunLog(run, restart_step)
    for step in range(restart_step + 1, restart_step + 3):
        log.record(step, "train", {"loss": 10.0 + step})
        log.scalars(step, "train", {"loss": 10.0 + step})
    log.close()


def tensorboard_losses(run) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("train/loss")]


def test_restart_from_a_checkpoint_drops_later_history(tmp_path):
    killed_then_restarted(tmp_path, 2)
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]
    assert tensorboard_losses(tmp_path) == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]


def test_restart_from_scratch_drops_all_history(tmp_path):
    # A run killed before its first checkpoint starts again at step 0: TensorBoard used to keep the
    # killed run's points next to the new ones (no purge at step 0), while metrics.jsonl dropped them.
    killed_then_restarted(tmp_path, 0)
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 11.0), (2, 12.0)]
    assert tensorboard_losses(tmp_path) == [(1, 11.0), (2, 12.0)]


def test_one_writer_per_run_directory(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RuntimeError, match="another trainer pretrain is writing this run"):
            RunLog(tmp_path, 0)
        with pytest.raises(RuntimeError, match="another trainer finetune is writing this run"):
            RunLog(tmp_path, 0, "trainer finetune")
        assert [r["step"] for r in read_metrics(tmp_path)] == [1]  # the refused one truncated nothing
    finally:
        holder.kill()
        holder.wait()
    RunLog(tmp_path, 0).close()  # the kernel dropped the lock with its holder (kill -9)


def test_forked_children_do_not_keep_the_run_locked(tmp_path):
    # DataLoader workers are forked: after a kill -9 of the trainer they live on for a few seconds,
    # and a lock they inherited would refuse the resume that follows.
    log = RunLog(tmp_path, 0)
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:
        log.close()
        RunLog(tmp_path, 0).close()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_filesystem_without_locks_only_warns(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    log = RunLog(tmp_path, 0)
    log.record(1, "train", {"loss": 1.0})
    log.close()
    assert "cannot lock (No locks available)" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]


def test_read_metrics_skips_a_line_torn_by_kill_9(tmp_path):
    log = RunLog(tmp_path, 0)
    log.record(1, "train", {"loss": 1.0})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as metrics:
        metrics.write('{"step": 2, "split": "tra')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
