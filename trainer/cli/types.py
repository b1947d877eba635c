"""The `trainer` commands' checked option types: pipeline's numbers and sizes (pipeline/cli_types.py,
one vocabulary for both CLIs and the config table) plus the device.

Training options that set a config key (--steps, --batch-size, --workers) are only parsed here;
their bounds are the key's, in trainer/limits.py's LIMITS, so one value has one rule.
"""

from __future__ import annotations

import re

import click

from pipeline.cli_types import MAX_COUNT, MAX_WORKERS, Float, Int, Number, Size, check_memory

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


class Device(click.ParamType):
    """auto, cpu, mps, cuda or cuda:N. Whether it exists here is asked when it is used
    (trainer.device.pick_device), after the other options are checked."""

    name = "device"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if not _DEVICE.fullmatch(text):
            self.fail(f"{value!r} is not a device (auto, cpu, mps, cuda or cuda:N)", param, ctx)
        return text


DEVICE = Device()

__all__ = ["DEVICE", "Device", "Float", "Int", "Number", "Size", "check_memory", "MAX_COUNT", "MAX_WORKERS"]
