"""Parsed JSON -> dataclass records, checked against the dataclass's own field types.

The one validation of every JSON file the tools read back (manifests, the ingest state and journal,
shard states, shard indexes, sample metadata, checkpoint metadata): each reader parses the JSON and
builds its record here, so valid JSON of the wrong shape is a ValueError naming the field, never an
AttributeError, KeyError, TypeError or OverflowError somewhere later. The schema is the type hints of
the record dataclass (pipeline/format/ for the on-disk contract), not a check written per field:

    str, bool, int, float, None, X | None, list[X], tuple[X, ...], dict, dict[str, X], Any,
    and nested record dataclasses.

Numbers must lie within the int64 range (what numpy and torch hold, and every size, count or
nanosecond time fits) and floats must be finite: Python's json reads `NaN`, `Infinity` and `1e308`,
which would only fail later as an overflow. An integer is accepted where a float is expected. A
missing field that has no default is an error; keys the dataclass does not name are ignored, so a
reader accepts what a newer writer added.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any

INT_LIMIT = 2**63  # int64, the widest integer numpy/torch store; also bounds floats' magnitude


class RecordError(ValueError):
    """A JSON value that does not fit its record type; the message names the field."""


@functools.cache
def _schema(cls) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, has a default) per init field; string annotations resolved once per class."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (f.name, hints[f.name], f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
        for f in dataclasses.fields(cls)
        if f.init
    )


def record_from_dict(cls, data: Any, where: str | None = None):
    """Build record dataclass `cls` from a parsed JSON value, or raise RecordError naming the field."""
    return _record(cls, data, where or cls.__name__)


def _record(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object, got {_show(data)}")
    values = {}
    for name, hint, has_default in _schema(cls):
        if name in data:
            values[name] = check_value(hint, data[name], f"{where}.{name}")
        elif not has_default:
            raise RecordError(f"{where}: missing field {name!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a record's own __post_init__ checks
        raise RecordError(f"{where}: {exc}") from exc


def check_value(hint: Any, value: Any, where: str) -> Any:
    """`value` as type `hint` (ints widened to float where a float is expected), or RecordError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return check_value(arg, value, where)
                except RecordError:
                    continue
        raise RecordError(f"{where}: expected {_name(hint)}, got {_show(value)}")
    if dataclasses.is_dataclass(hint):
        return _record(hint, value, where)
    if hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool) and -INT_LIMIT < value < INT_LIMIT:
            return value
    elif hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and -INT_LIMIT < value < INT_LIMIT:  # the comparison is also false for NaN
            return float(value)
    elif hint is list or origin is list:
        if isinstance(value, list):
            item = args[0] if args else Any
            return [check_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, list):
            return tuple(check_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    elif hint is dict or origin is dict:
        if isinstance(value, dict):
            item = args[1] if args else Any
            return {k: check_value(item, v, f"{where}.{k}") for k, v in value.items()}
    else:
        raise TypeError(f"{where}: records cannot hold {hint!r}")  # a programming error, not bad input
    raise RecordError(f"{where}: expected {_name(hint)}, got {_show(value)}")


def _name(hint: Any) -> str:
    if hint is int:
        return "an integer within ±2**63"
    if hint is float:
        return "a finite number within ±2**63"
    if hint is type(None):
        return "null"
    names = {str: "a string", bool: "true or false", list: "a list", dict: "an object"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_name(arg) for arg in typing.get_args(hint))
    if origin in names:
        return names[origin]
    if origin is tuple:
        return "a list"
    return getattr(hint, "__name__", repr(hint))


def _show(value: Any) -> str:
    """A JSON value as the user wrote it, shortened to one short line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["RecordError", "record_from_dict", "check_value", "INT_LIMIT"]
