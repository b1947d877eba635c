import pytest
import torch

from trainer.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint_config,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)


def make_training(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, generator=generator)
    loss = model(x).pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def test_round_trip_restores_weights_optimiser_and_scheduler(tmp_path):
    model, optimizer, scheduler = make_training(0)
    for i in range(3):
        train_step(model, optimizer, scheduler, i)
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {"run": {"seed": 7}}, meta={"note": "x"})
    assert path.name == "step-0000003"

    model2, optimizer2, scheduler2 = make_training(1)  # different initial weights
    meta = load_checkpoint(path, model2, optimizer2, scheduler2)
    assert meta["step"] == 3 and meta["note"] == "x" and meta["val_loss"] is None
    assert read_checkpoint_config(path) == {"run": {"seed": 7}}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert scheduler2.last_epoch == scheduler.last_epoch == 3
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()

    # Continuing both from here must give identical weights: the Adam moments came back too.
    train_step(model, optimizer, scheduler, 10)
    train_step(model2, optimizer2, scheduler2, 10)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)

    state = torch.load(path / STATE_FILE, weights_only=True)  # nothing but tensors and plain values
    assert set(state) == {"optimizer", "scheduler"}


def test_keeps_last_k_plus_best_and_moves_pointers(tmp_path):
    model, optimizer, scheduler = make_training(0)
    val_losses = {1: 0.9, 2: 0.3, 3: 0.5, 4: None, 5: 0.4}
    for step, val in val_losses.items():
        save_checkpoint(tmp_path, step, model, optimizer, scheduler, {}, val_loss=val, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002", "step-0000004", "step-0000005"]
    assert (tmp_path / "last").read_text().strip() == "step-0000005"
    assert (tmp_path / "best").read_text().strip() == "step-0000002"
    assert read_meta(resolve_checkpoint(tmp_path / "best"))["val_loss"] == 0.3
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp*"))


def test_resolves_checkpoint_from_run_dir_pointer_or_directory(tmp_path):
    model, optimizer, scheduler = make_training(0)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    first = save_checkpoint(ckpt_dir, 10, model, optimizer, scheduler, {})
    second = save_checkpoint(ckpt_dir, 20, model, optimizer, scheduler, {})
    assert resolve_checkpoint(tmp_path / "run") == second
    assert resolve_checkpoint(ckpt_dir) == second
    assert resolve_checkpoint(ckpt_dir / "last") == second
    assert resolve_checkpoint(first) == first
    with pytest.raises(ValueError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path / "elsewhere")


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path):
    model, optimizer, scheduler = make_training(0)
    done = save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {})
    # What kill -9 during the next save leaves behind: a partial temporary directory, `last` unchanged.
    partial = tmp_path / ".step-0000010.tmp-999999999"
    partial.mkdir()
    (partial / WEIGHTS_FILE).write_bytes(b"\x00" * 10)
    assert latest_checkpoint(tmp_path) == done
    assert list_checkpoints(tmp_path) == [done]
    save_checkpoint(tmp_path, 10, model, optimizer, scheduler, {})
    assert not partial.exists()
    assert latest_checkpoint(tmp_path).name == "step-0000010"


def test_resaving_a_step_replaces_it(tmp_path):
    model, optimizer, scheduler = make_training(0)
    save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {}, meta={"n": 1})
    save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {}, meta={"n": 2})
    assert read_meta(tmp_path / "step-0000005")["n"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["step-0000005"]


def test_damaged_or_mismatched_weights_name_the_file(tmp_path):
    model, optimizer, scheduler = make_training(0)
    path = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {})
    with pytest.raises(ValueError, match="do not fit the model"):
        load_checkpoint(path, torch.nn.Linear(6, 1))
    (path / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_checkpoint(path, model)
    (path / "meta.json").write_text("{")
    with pytest.raises(ValueError, match=r"meta\.json"):
        read_meta(path)


def test_empty_or_non_mapping_config_names_the_file(tmp_path):
    # An empty config.yaml used to load as None, which load_config took for "no base": the run's
    # checkpoint was then rebuilt from the tiny preset and failed with a page of size mismatches.
    model, optimizer, scheduler = make_training(0)
    path = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {"run": {"seed": 7}})
    for text in ("", "- a list\n"):
        (path / "config.yaml").write_text(text)
        with pytest.raises(ValueError, match=r"config\.yaml: .*mapping"):
            read_checkpoint_config(path)


def test_weights_of_another_shape_are_a_one_line_error(tmp_path):
    # e.g. resuming with --set model.channels=...: load_state_dict lists every size mismatch on its own
    # line, and the message called the weights "unreadable"
    model, optimizer, scheduler = make_training(0)
    path = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {})
    wider = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.LayerNorm(9), torch.nn.Linear(9, 1))
    with pytest.raises(ValueError, match=r"model\.safetensors: weights do not fit the model") as error:
        load_checkpoint(path, wider)
    assert "\n" not in str(error.value) and "size mismatch for 0.weight" in str(error.value)


def test_a_run_killed_before_its_first_last_pointer_still_evaluates(tmp_path):
    # kill -9 between renaming step-NNNNNNN into place and writing `last`: pretrain resumes from the
    # directory (latest_checkpoint), so evaluate and preview must find it too
    model, optimizer, scheduler = make_training(0)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    done = save_checkpoint(ckpt_dir, 10, model, optimizer, scheduler, {})
    (ckpt_dir / "last").unlink()
    assert latest_checkpoint(ckpt_dir) == done
    assert resolve_checkpoint(tmp_path / "run") == done
    assert resolve_checkpoint(ckpt_dir) == done


def test_a_non_finite_val_loss_never_becomes_best(tmp_path):
    model, optimizer, scheduler = make_training(0)
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {}, val_loss=float("nan"))
    assert not (tmp_path / "best").exists()
    save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {}, val_loss=0.5)
    save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {}, val_loss=float("inf"))
    assert (tmp_path / "best").read_text().strip() == "step-0000002"


@pytest.mark.parametrize("text", ["[]", "null", '{"step": "3"}', '{"step": 3, "val_loss": "low"}', "{}"])
def test_malformed_meta_json_is_one_line_naming_the_file(tmp_path, text):
    model, optimizer, scheduler = make_training(0)
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {})
    (path / "meta.json").write_text(text)
    with pytest.raises(ValueError, match=f"^{path / 'meta.json'}: unreadable checkpoint metadata") as info:
        load_checkpoint(path, model)
    assert "\n" not in str(info.value)
