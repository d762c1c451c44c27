"""Config dataclasses <-> argparse flags, for any flat dataclass of the project.

Field ``warmup_epochs`` becomes ``--warmup-epochs``; booleans become ``--amp/--no-amp``
(``argparse.BooleanOptionalAction``); ``Literal`` fields get ``choices``; ``tuple[int, ...]``
fields take any number of values; ``X | None`` fields accept ``none``. A field's
``metadata["help"]`` is its help text.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_SCALARS = (int, float, str, Path)


def _none_or(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return (prefix + name).replace("-", "_")


def _split_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


class _OnOffFlag(argparse.BooleanOptionalAction):
    """``--flag/--no-flag`` whose help states its default once, as on/off (argparse's own
    action appends a second ``(default: ...)`` on Python < 3.14)."""

    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, help=help, **kwargs)
        self.help = help


def _argument_kwargs(cls: type, name: str, hint: Any) -> dict[str, Any]:
    base, optional = _split_optional(hint)
    origin = typing.get_origin(base)
    if base is bool:
        return {"action": _OnOffFlag}
    if origin is typing.Literal:
        choices = list(typing.get_args(base))
        convert = type(choices[0])
        return {"type": _none_or(convert) if optional else convert,
                "choices": choices + ([None] if optional else [])}
    if origin in (tuple, list):
        args = typing.get_args(base)
        item = args[0] if args else str
        fixed = origin is tuple and Ellipsis not in args and len(args) > 1
        return {"type": item, "nargs": len(args) if fixed else "*"}
    if base in _SCALARS:
        return {"type": _none_or(base) if optional else base}
    raise TypeError(f"{cls.__name__}.{name}: type {hint!r} has no command-line form")


def add_dataclass_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                       defaults: Any = None, prefix: str = "", suppress: bool = False,
                       only: Iterable[str] | None = None) -> None:
    """Add one flag per init field of dataclass ``cls``; defaults come from ``defaults`` (an
    instance of ``cls``, e.g. a preset's config) or else the field defaults. With
    ``suppress`` a flag not given leaves no attribute: see :func:`dataclass_overrides`.
    ``only``: the names of the fields to add (default: all)."""
    hints = typing.get_type_hints(cls)
    chosen = None if only is None else set(only)
    for f in dataclasses.fields(cls):
        if not f.init or (chosen is not None and f.name not in chosen):
            continue
        kwargs = _argument_kwargs(cls, f.name, hints[f.name])
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
            kwargs["required"] = True
        text = f.metadata.get("help", "")
        if suppress:
            default, kwargs["required"] = argparse.SUPPRESS, False
        elif kwargs.get("action") is _OnOffFlag:
            text = f"{text} (default: {'on' if default else 'off'})".strip()
        else:
            text = f"{text} (default: %(default)s)".strip()
        parser.add_argument(_flag(prefix, f.name), dest=_dest(prefix, f.name), default=default,
                            help=text, **kwargs)


def dataclass_from_args(cls: type[T], namespace: argparse.Namespace, prefix: str = "") -> T:
    """Build ``cls`` from the parsed flags added by :func:`add_dataclass_args`."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = getattr(namespace, _dest(prefix, f.name))
        base, _ = _split_optional(hints[f.name])
        if typing.get_origin(base) is tuple and value is not None:
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def dataclass_overrides(cls: type, namespace: argparse.Namespace, prefix: str = ""
                        ) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given (flags added with ``suppress=True``)."""
    values = {}
    for f in dataclasses.fields(cls):
        dest = _dest(prefix, f.name)
        if f.init and hasattr(namespace, dest):
            value = getattr(namespace, dest)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def dataclass_to_argv(obj: Any, prefix: str = "") -> list[str]:
    """The flags that :func:`add_dataclass_args` parses back into ``obj`` (all fields)."""
    argv: list[str] = []
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value, flag = getattr(obj, f.name), _flag(prefix, f.name)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (tuple, list)):
            argv += [flag, *(repr(v) if isinstance(v, float) else str(v) for v in value)]
        elif value is None:
            argv += [flag, "none"]
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def parse_options(items: list[str] | None, flag: str = "--option", **shorthands: Any
                  ) -> dict[str, Any]:
    """``NAME=VALUE`` items (a repeatable flag) as a dict, plus the ``shorthands`` (flags
    such as ``--eps``) that are not None; each VALUE is read as a YAML scalar (``0.001``,
    ``5``, ``true``, ``none``, a bare word). A malformed item or a name given twice with two
    values is a :class:`~ntksap.errors.ConfigError`."""
    import yaml

    from ..errors import ConfigError

    options: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ConfigError(f"{flag} {item!r} must look like NAME=VALUE, e.g. {flag} eps=0.001")
        try:
            value = yaml.safe_load(text) if text.strip().lower() != "none" else None
        except yaml.YAMLError as err:
            raise ConfigError(f"{flag} {item!r}: cannot read the value ({err})") from err
        if isinstance(value, dict | list):
            raise ConfigError(f"{flag} {item!r}: the value must be a single number, word or "
                              "true/false")
        if name in options and options[name] != value:
            raise ConfigError(f"{flag} {name} given twice ({options[name]!r} and {value!r}); "
                              "give it once")
        options[name] = value
    for name, value in shorthands.items():
        if value is not None and name in options and options[name] != value:
            raise ConfigError(f"--{name} {value} and {flag} {name}={options[name]} disagree; "
                              "give the option once")
        if value is not None:
            options[name] = value
    return options
