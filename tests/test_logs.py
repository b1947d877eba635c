"""trainer/logs.py: what a restarted run keeps of the history a killed run left behind."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer.logs import RunLog, read_metrics


def killed_then_restarted(run, restart_step: int) -> None:
    log = RunLog(run, 0)
    for step in range(1, 6):
        log.record(step, "train", {"loss": float(step)})
        log.scalars(step, "train", {"loss": float(step)})
    log.close()
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
