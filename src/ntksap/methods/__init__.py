"""The registry of pruning methods: one file per method, one line here; third-party methods
join through :func:`register_method` or the ``ntksap.methods`` entry-point group.

A third-party package declares its methods in its ``pyproject.toml``::

    [project.entry-points."ntksap.methods"]
    mymethod = "my_package.module:MyMethod"

The group is read once, the first time the registry is consulted; a method's options are its
dataclass's init fields (:func:`check_options` checks names and types, the method's own
``__post_init__`` the values).
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, MethodOptionError, UnknownNameError
from ..registry import PluginRegistry
from ..typecheck import convert, type_name
from .base import Method, ScoreContext, ScoringNet
from .force import FORCE
from .grasp import GraSP
from .iter_snip import IterSNIP
from .magnitude import Magnitude
from .ntksap import NTKSAP
from .ntt import NTT
from .prospr import ProsPr
from .random import Random
from .snip import SNIP
from .synflow import SynFlow

ENTRY_POINT_GROUP = "ntksap.methods"
RESERVED = ("dense", "imp")  # kinds of run, not pruning methods


def _register_entry(name: str, cls: Any) -> None:
    """An entry point of :data:`ENTRY_POINT_GROUP`: the method class it names."""
    cls = register_method(cls)
    if cls.name != name:
        warnings.warn(f"ntksap: entry point {name!r} registers the method under its own name "
                      f"{cls.name!r}; name the entry point after the method", stacklevel=4)


METHODS: dict[str, type[Method]] = PluginRegistry(ENTRY_POINT_GROUP, "pruning method",
                                                  _register_entry, {
    "random": Random,
    "magnitude": Magnitude,
    "snip": SNIP,
    "iter_snip": IterSNIP,
    "grasp": GraSP,
    "synflow": SynFlow,
    "ntksap": NTKSAP,
    "force": FORCE,
    "prospr": ProsPr,
    "ntt": NTT,
})


def register_method(cls: type[Method]) -> type[Method]:
    """Make ``cls`` (a dataclass subclass of :class:`Method` with a ``name``) usable by name in
    ``ntksap.prune``, ``ntksap prune``/``run``, sweeps and reports. Returns ``cls`` (use it as
    a decorator). Registering the same class twice is harmless; another class under a taken
    name is an error."""
    if not (isinstance(cls, type) and issubclass(cls, Method) and dataclasses.is_dataclass(cls)):
        raise ConfigError(f"register_method: {cls!r} is not a dataclass subclass of "
                          "ntksap.Method; decorate it with @dataclass and subclass Method")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"register_method: {cls.__name__} needs a class attribute name, a "
                          f"Python identifier (e.g. name = 'mymethod'); got {name!r}")
    taken = METHODS.own(name)  # type: ignore[attr-defined]
    if name in RESERVED or (taken is not None and taken is not cls):
        owner = "a kind of run" if name in RESERVED else f"{taken.__module__}.{taken.__name__}"
        raise ConfigError(f"register_method: the name {name!r} of {cls.__name__} is taken by "
                          f"{owner}; give the method another name")
    METHODS.put(name, cls)  # type: ignore[attr-defined]
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UnknownNameError("method", name, METHODS)
    return METHODS[name]


def option_fields(cls: type[Method]) -> dict[str, dataclasses.Field]:
    """A method's options: its dataclass's init fields, by name."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def option_defaults(cls: type[Method]) -> dict[str, Any]:
    """The options that have a default, with it."""
    out = {}
    for name, f in option_fields(cls).items():
        if f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
    return out


def check_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for method ``method``, each checked against its field's type (ints become
    floats for float fields, numeric strings numbers: YAML reads ``1e-3`` as a string).
    Unknown option: an error naming the method and its options; wrong type: one naming the
    field and its type. Values are checked by the method itself when it is built."""
    cls = method_class(method)
    fields = option_fields(cls)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise MethodOptionError(f"method {method!r} has no option {', '.join(unknown)}; its "
                                f"options are: {', '.join(sorted(fields)) or 'none'}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: values are not type-checked
        hints = {}
    out = {}
    for name, value in options.items():
        hint = hints.get(name, Any)
        ok, converted = convert(value, hint)
        if not ok:
            raise MethodOptionError(
                f"method {method!r}: option {name} must be of type {type_name(hint)}; got "
                f"{value!r} ({type(value).__name__})")
        out[name] = converted
    return out


__all__ = ["ENTRY_POINT_GROUP", "METHODS", "Method", "ScoreContext", "ScoringNet",
           "check_options", "method_class", "option_defaults", "option_fields",
           "register_method"]
