"""Every option and every config value is checked at the door (issue 20): table-driven over every
numeric config key and every numeric option of every `pipeline` and `trainer` command, with zero,
negative, huge, non-numeric, NaN and infinite values. A refused value is one line naming the key or
option, the value given and what is allowed; nothing is built first."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import main as pipeline_cli
from pipeline.cli_types import Number, Size
from trainer.cli import main as trainer_cli
from trainer.cli.types import Device
from trainer.config import TrainConfig, load_config
from trainer.limits import LIMITS

BAD = ["0", "-1", "1e30", "123456789012345678901234567890", "lots", ".nan", ".inf", "-.inf"]
ALWAYS_REFUSED = {"1e30", "123456789012345678901234567890", "lots", ".nan", ".inf", "-.inf"}


def _numeric_keys() -> set[str]:
    cfg = TrainConfig()
    keys = set()
    for section in dataclasses.fields(cfg):
        for item in dataclasses.fields(getattr(cfg, section.name)):
            value = getattr(getattr(cfg, section.name), item.name)
            values = value if isinstance(value, (list, tuple)) and value else [value]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                keys.add(f"{section.name}.{item.name}")
    return keys


def test_every_numeric_config_key_has_a_limit():
    assert _numeric_keys() == set(LIMITS)


def _override(key: str, raw: str) -> str:
    default = getattr(getattr(TrainConfig(), key.split(".")[0]), key.split(".")[1])
    if isinstance(default, (list, tuple)):  # every element the bad value (the list keeps its length)
        return f"{key}=[{', '.join([raw] * len(default))}]"
    return f"{key}={raw}"


@pytest.mark.parametrize("raw", BAD)
@pytest.mark.parametrize("key", sorted(LIMITS))
def test_every_config_key_refuses_bad_values_by_name(key, raw):
    override = _override(key, raw)
    try:
        load_config("tiny", overrides=[override])
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message and key.split(".")[1] in message, message
        if raw != "lots":  # a word is "must be like <default>": the kind, not a range
            assert "must be" in message and ("got" in message), message
        return
    assert raw not in ALWAYS_REFUSED, f"{override} was accepted"
    rule = LIMITS[key]
    assert rule.accepts(float(raw)), f"{override} was accepted but {key} must be {rule.allowed()}"


def test_sizes_that_multiply_into_memory_are_refused_before_anything_is_built(tmp_path):
    cfg = load_config(
        "tiny", overrides=["data.crop_frames=1000000", "data.batch_size=60000", "data.shuffle_buffer=1000000"]
    )
    problems = cfg.memory_problems(128 * 2**30)
    assert len(problems) == 2 and "data.batch_size 60000 x data.crop_frames 1000000" in problems[0]
    assert "shuffle buffers" in problems[1]
    assert load_config("base").memory_problems(16 * 2**30) == []

    from support import write_shards

    shards = write_shards(tmp_path / "s", {"a": 5, "b": 7}, clips_per_track=1, shards_per_split=1)
    args = ["pretrain", "--shards", str(shards), "--preset", "tiny", "--run", str(tmp_path / "run"), "--device", "cpu"]
    args += ["--set=data.crop_frames=1000000", "--set=data.batch_size=60000", "--set=model.bins=64"]
    args += ["--set=model.num_downsamples=3", "--set=model.channels=[4,8,8,16]"]
    result = CliRunner().invoke(trainer_cli, args)
    assert result.exit_code == 1 and "per micro-batch, more than this machine's memory" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


# --- command-line options ----------------------------------------------------------------------


def _commands(group: click.Group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


COMMANDS = [(pipeline_cli, path, command) for path, command in _commands(pipeline_cli)]
COMMANDS += [(trainer_cli, path, command) for path, command in _commands(trainer_cli)]


def test_no_numeric_option_is_left_unchecked():
    """click's INT/FLOAT/IntRange/FloatRange accept NaN or have no upper bound: none is left."""
    loose = [
        f"{' '.join(path)} {param.opts[0]}"
        for _, path, command in COMMANDS
        for param in command.params
        if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))
    ]
    assert loose == []


CHECKED = [
    (cli, path, param)
    for cli, path, command in COMMANDS
    for param in command.params
    if isinstance(param, click.Option) and isinstance(param.type, (Number, Size, Device))
]


@pytest.mark.parametrize("raw", ["0", "-1", "1e30", "lots", "nan", "inf", "-inf"])
@pytest.mark.parametrize("cli, path, param", CHECKED, ids=[f"{' '.join(p)} {o.opts[0]}" for _, p, o in CHECKED])
def test_every_checked_option_refuses_bad_values_by_name(cli, path, param, raw):
    if isinstance(param.type, Number) and param.type.accepts(float(raw) if raw != "lots" else raw):
        return  # e.g. --seed 0, --workers 0: allowed values are not this test's business
    if isinstance(param.type, Size) and raw == "1e30":
        raw = "1e30B"
    result = CliRunner().invoke(cli, [*path, param.opts[0], raw])
    assert result.exit_code == 2, (path, param.opts[0], raw, result.output)
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: Invalid value for '{param.opts[0]}': '{raw}' is not "), line
    assert len(CHECKED) > 40


def test_separate_refuses_a_window_batch_that_cannot_fit():
    import torch

    from trainer.separation.separate import _check_memory

    cfg = load_config("tiny")
    _check_memory(cfg, cfg.data.crop_frames, 16, torch.device("cpu"))  # the run's own window fits
    with pytest.raises(ValueError, match=r"--window 1000000 x --batch-size 2: at least .* GB at once, more than"):
        _check_memory(cfg, 10**6, 2, torch.device("cpu"))
