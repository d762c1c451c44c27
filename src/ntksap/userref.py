"""References to a user's code on the command line and in sweep specs: ``MODULE:FACTORY``
(an importable module) or ``path/to/file.py:FACTORY`` (a source file), each naming a callable.

:func:`load_factory` imports it and returns the callable with the digest of its code: the
sha256 of the source file, recorded in a run's config so that a changed model or data set is
a different run (:func:`check_digest` refuses to run a planned run whose code changed).
A file is imported once per process and digest (as a module named after both).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Factory:
    """A user's callable and where it came from."""

    reference: str  # as given: "pkg.mod:make" or "path/net.py:make"
    function: Callable[..., Any]
    digest: str  # sha256 of the source file ("" when the code has no file)


def is_reference(name: str) -> bool:
    """Whether ``name`` is a ``MODULE:FACTORY`` or ``FILE.py:FACTORY`` reference."""
    module, sep, attribute = name.rpartition(":")
    return bool(sep and module and attribute) and not module.startswith("timm")


def load_factory(reference: str, what: str) -> Factory:
    """The callable that ``reference`` names (``what`` names its role in errors, e.g. "model
    factory"); a :class:`ConfigError` of one line when it does not import, is missing or is
    not callable."""
    module_name, _, attribute = reference.rpartition(":")
    module, digest = _import(module_name, reference, what)
    function = module
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise ConfigError(f"{what} {reference!r}: {module_name} has no {attribute!r}; "
                              "name a function or class defined in it")
        function = getattr(function, part)
    if not callable(function):
        raise ConfigError(f"{what} {reference!r}: {attribute} is a "
                          f"{type(function).__name__}, not a callable; name a function or class")
    return Factory(reference, function, digest)


def _import(module_name: str, reference: str, what: str) -> tuple[ModuleType, str]:
    """The module and the sha256 of its source file ("" when it has none)."""
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        return _import_file(Path(module_name).expanduser(), reference, what)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any error of the user's import is one line
        raise ConfigError(f"{what} {reference!r}: cannot import {module_name} "
                          f"({type(err).__name__}: {_first_line(err)}); check the module name "
                          "and that it is installed or on PYTHONPATH") from err
    try:
        source = inspect.getsourcefile(module)
    except TypeError:  # a built-in module
        source = None
    return module, file_digest(Path(source)) if source else ""


def _import_file(path: Path, reference: str, what: str) -> tuple[ModuleType, str]:
    if not path.is_file():
        raise ConfigError(f"{what} {reference!r}: no file {path}; give the path of a Python "
                          "file (relative to the current folder, or absolute)")
    path = path.resolve()
    digest = file_digest(path)
    name = f"ntksap_user_{path.stem}_{digest[:12]}"
    if name in sys.modules:
        return sys.modules[name], digest
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} {reference!r}: {path} is not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickling (DataLoader workers) finds the module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any error of the user's code is one line
        del sys.modules[name]
        raise ConfigError(f"{what} {reference!r}: importing {path} failed "
                          f"({type(err).__name__}: {_first_line(err)}); fix the file") from err
    return module, digest


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_digest(reference: str, recorded: str, current: str, what: str) -> None:
    """A planned run's code is the code it was planned with."""
    if recorded and current != recorded:
        raise ConfigError(f"the {what} {reference!r} changed since this run was planned (its "
                          f"source's sha256 was {recorded[:12]}..., now {current[:12]}...): a "
                          "changed model or data set is another run; plan it again (rerun the "
                          "command or the sweep)")


def call_with_classes(function: Callable[..., Any], num_classes: int) -> Any:
    """``function(num_classes=num_classes)`` when it takes that argument (or ``**kwargs``),
    else ``function()``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature (some built-ins): pass nothing
        return function()
    takes = "num_classes" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return function(num_classes=num_classes) if takes else function()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
