"""A value against a dataclass field's type annotation: what a method's options and a run's
fields given by name (command line, sweep specs, Python) are checked and converted with."""

from __future__ import annotations

import types
import typing
from typing import Any


def convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits the type annotation ``hint``, the value converted to it: ints
    become floats for float fields, numeric strings numbers, since YAML reads ``1e-3`` as a
    string)."""
    origin = typing.get_origin(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, converted = convert(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(hint), value
    if hint is type(None) or hint is None:
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return False, value
            return True, number
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    cls = origin or hint
    if isinstance(cls, type):
        return isinstance(value, cls), value
    return True, value


def type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


__all__ = ["convert", "type_name"]
