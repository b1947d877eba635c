"""Command-line values checked at the door: the click types every `pipeline` and `trainer` option uses.

click's own IntRange/FloatRange let NaN through, have no upper bound unless given one, and name
neither the value nor what is allowed in every case; an out-of-range value then surfaces later as a
library error, a failure blamed on an input file, or an allocation that ends in a traceback. These
types refuse it while parsing, as click's one-line usage error

    Error: Invalid value for '--max-offset': 'nan' is not a finite number in [0, 60].

naming the option, the value given and what is allowed. Sizes that multiply into memory are also
bounded together, against the memory of this machine (`check_memory`).
"""

from __future__ import annotations

import math
import os

import click

# Upper bounds where nothing else limits a count: far above any real use, far below an overflow.
MAX_WORKERS = 1024
MAX_COUNT = 10**12  # steps, seeds' neighbours, anything merely counted


def _bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Number(click.ParamType):
    """An int (`integer=True`) or a finite float within [low, high] (either end open on request)."""

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        integer: bool = False,
        low_open: bool = False,
        high_open: bool = False,
        even: bool = False,
    ):
        self.low, self.high, self.integer, self.even = low, high, integer or even, even
        self.low_open, self.high_open = low_open, high_open
        self.name = "integer" if self.integer else "number"

    def allowed(self) -> str:
        kind = "an even integer" if self.even else "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{_bound(self.low)}, {_bound(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_bound(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_bound(self.high)}"
        return kind

    def accepts(self, value) -> bool:
        """Whether `value` (a parsed config value) is allowed: the same rule outside click."""
        number = self._parse(value) if not isinstance(value, str) else None
        return number is not None and self._inside(number)

    def convert(self, value, param, ctx):
        number = self._parse(value)
        if number is None or not self._inside(number):
            self.fail(f"{value!r} is not {self.allowed()}", param, ctx)
        return number

    def _parse(self, value) -> int | float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    return None
        if isinstance(number, float):
            if not math.isfinite(number):
                return None
            if self.integer:
                if not number.is_integer():
                    return None
                number = int(number)
        return number if self.integer else float(number)

    def _inside(self, number: float) -> bool:
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return False
        if self.high is not None and (number >= self.high if self.high_open else number > self.high):
            return False
        return not (self.even and number % 2)

    def get_metavar(self, param, ctx=None) -> str:
        return "INTEGER" if self.integer else "FLOAT"


def Int(low: int | None = None, high: int | None = None, even: bool = False) -> Number:
    return Number(low, high, integer=True, even=even)


def Float(low: float | None = None, high: float | None = None, **open_ends) -> Number:
    return Number(low, high, **open_ends)


class Size(click.ParamType):
    """A byte size ('1GB', '500MB', '64MiB', '2e9') within [low, high] bytes."""

    name = "size"

    def __init__(self, low: int = 1, high: int = 2**50):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        from pipeline.shard.plan import parse_size

        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        else:
            try:
                size = parse_size(str(value))
            except ValueError:
                size = None
        if size is None or not self.low <= size <= self.high:
            self.fail(
                f"{value!r} is not a size from {_human(self.low)} to {_human(self.high)} (e.g. 1GB, 500MB, 64MiB)",
                param,
                ctx,
            )
        return size


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1000:
            return f"{size:g} {unit}"
        size /= 1000
    return f"{size:g} EB"


def machine_memory() -> int:
    """Bytes of physical memory of this machine (what any one allocation can hope for)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check rather than a wrong one
        return 2**62


def check_memory(what: str, needed: float, names: str) -> None:
    """click.UsageError when `needed` bytes (what the options `names` multiply into) exceed this
    machine's memory: refused at the door instead of at the allocation, as a traceback or the OOM killer."""
    available = machine_memory()
    if needed > available:
        raise click.UsageError(
            f"{names}: {what} would need {_human(needed)}, more than this machine's {_human(available)} of memory"
        )


__all__ = ["Number", "Int", "Float", "Size", "check_memory", "machine_memory", "MAX_WORKERS", "MAX_COUNT"]
