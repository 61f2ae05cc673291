"""Reading events back: a recording's line (a dict) into the typed event it holds, every field
checked against the type its class declares, with a message that says what does not fit."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import MISSING, fields
from enum import StrEnum
from functools import cache
from typing import Any, get_args, get_origin, get_type_hints

from codeloop.core.events import EVENT_TYPES, Event


class _Mismatch(ValueError):
    """A value that does not fit its declared type; the message says where and how."""


def event_from_dict(data: Any, skipped: set[str] | None = None) -> Event | None:
    """The event a dict (a recording's line) holds, every field checked against the type its
    class declares; raises ValueError saying what does not fit.

    An event type or a field this codeloop does not know is an error, unless `skipped` is
    given: format 1 stays forward compatible, so a reader of a newer codeloop's recording
    leaves it out and names it there (`type`, or `type.field`), returning None for the type;
    a kind or outcome it does not know is then kept as the string it is.
    """
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object ({_shown(data)})")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ValueError("field 'type' " + (
            f"should be a string, not {_shown(kind)}" if "type" in data else "is missing"))
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        if skipped is None:
            raise ValueError(f"unknown event type {kind!r}")
        skipped.add(kind)
        return None
    try:
        values = _record(data, cls, kind, skipped, ignore=("type",))
    except _Mismatch as exc:
        raise ValueError(f"{kind} field {exc}") from None
    return cls(**values)


def _record(data: dict[str, Any], cls: type, label: str, skipped: set[str] | None,
            ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of a `cls` (an event, or a record inside one) that `data` holds, read."""
    declared = _declared_fields(cls)
    values = {}
    for name, value in data.items():
        if name in ignore:
            continue
        if name not in declared:
            if skipped is None:
                raise ValueError(f"unknown field {name!r} in a {label} event")
            skipped.add(f"{label}.{name}")
            continue
        values[name] = _read(value, declared[name][0], repr(name), skipped is not None)
    missing = [name for name, (_, required) in declared.items()
               if required and name not in values]
    if missing:
        raise _Mismatch(f"{missing[0]!r} is missing")
    return values


@cache
def _declared_fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """Each field of a dataclass: its declared type, and whether every line must carry it (it
    has no default). Read from the dataclass itself, so a new field is checked too."""
    hints = get_type_hints(cls)
    return {f.name: (hints[f.name], f.default is MISSING and f.default_factory is MISSING)
            for f in fields(cls)}


_SCALAR_NAMES = {int: "an integer", float: "a finite number", str: "a string",
                 bool: "true or false"}


def _read(value: Any, hint: Any, where: str, lenient: bool) -> Any:
    """`value` (a field named `where`) as the declared type `hint` holds it: an enum member, a
    record, or the value itself; raises _Mismatch saying where it does not fit, and how."""
    origin = get_origin(hint)
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise _Mismatch(f"{where} should be {_type_name(hint)}, not {_shown(value)}")
        item = get_args(hint)[-1]
        if origin is list:
            return [_read(v, item, f"{where}[{i!r}]", lenient) for i, v in enumerate(value)]
        return {k: _read(v, item, f"{where}[{k!r}]", lenient) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        if isinstance(value, str) and value in hint._value2member_map_:
            return hint(value)
        if isinstance(value, str) and lenient:  # a newer codeloop's kind: kept as it is
            return value
        raise _Mismatch(f"{where} should be one of {', '.join(hint)}, not {_shown(value)}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _Mismatch(f"{where} should be an object, not {_shown(value)}")
        try:
            return hint(**_record(value, hint, hint.__name__, set() if lenient else None))
        except _Mismatch as exc:
            raise _Mismatch(f"{where}: {exc}") from None
    if not _fits(value, hint):
        raise _Mismatch(f"{where} should be {_type_name(hint)}, not {_shown(value)}")
    return value


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if isinstance(value, bool):  # JSON true/false is never a number
        return hint is bool
    if hint is float:  # JSON has one number type; an infinity would stall the player forever
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return _SCALAR_NAMES.get(hint) or str(hint).replace("typing.", "")


def _shown(value: Any) -> str:
    """A value as the line wrote it, cut short (a recorded patch can be megabytes)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
