"""Model registry: ``build_model(name, num_classes)`` and each model's natural input shape.

A model is named by
- a registered name: the built-in networks, those of :func:`register_model` and those that
  installed packages declare in the ``ntksap.models`` entry-point group (an entry point names a
  factory ``f(num_classes) -> nn.Module`` or a :class:`ModelSpec`)::

      [project.entry-points."ntksap.models"]
      mynet = "my_package.models:make_mynet"

- ``timm:NAME``: any model of timm (when timm is installed: ``pip install 'ntksap[timm]'``),
  built with ``pretrained=False``;
- ``MODULE:FACTORY`` or ``path/to/file.py:FACTORY``: a callable returning an ``nn.Module``,
  given ``num_classes`` when it takes that argument (:mod:`ntksap.userref`).

Whatever the source, the harness re-draws the weights of theta_0 with the run's ``init`` scheme
(Kaiming-normal by default) from the run's seed, as for the built-in models.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from importlib import metadata
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnknownNameError
from ..init import KAIMING, initialize_, kaiming_init_
from ..registry import PluginRegistry
from ..userref import call_with_classes, is_reference, load_factory
from .spec import ModelSpec

ENTRY_POINT_GROUP = "ntksap.models"
TIMM = "timm:"




def register_model(name: str, factory: Callable[..., nn.Module], *,
                   input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                   description: str = "") -> ModelSpec:
    """Make ``factory`` usable by ``name`` everywhere a model is named (``ntksap run --model``,
    sweeps, ``ntksap prune``, the NTK tools). ``factory`` returns an ``nn.Module`` and is
    given ``num_classes`` when it takes that argument. ``input_shape`` (channels, height,
    width) is the shape of one input where no data says it (``ntksap prune``);
    ``num_classes`` the default number of classes. Registering the same factory again
    replaces its entry (as re-running a notebook cell expects); another factory under a taken
    name is an error."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"register_model: the name must be a non-empty string without ':' "
                          f"(that marks a reference); got {name!r}")
    if not callable(factory):
        raise ConfigError(f"register_model({name!r}): the factory must be callable; got "
                          f"{type(factory).__name__}")
    spec = ModelSpec(lambda k: call_with_classes(factory, k),
                     tuple(input_shape) if input_shape else None,
                     description or _summary(factory) or name, num_classes, origin=factory)
    MODELS.put_own(name, spec, "register_model")  # type: ignore[attr-defined]
    return spec


def _register_entry(name: str, loaded: Any) -> None:
    """An entry point of :data:`ENTRY_POINT_GROUP`: a :class:`ModelSpec` or a factory."""
    if isinstance(loaded, ModelSpec):
        MODELS.put(name, loaded)  # type: ignore[attr-defined]
    else:
        register_model(name, loaded)


def _builtin_models() -> dict[str, ModelSpec]:
    """The ``SPECS`` of every model module of this package (adding a model is its module)."""
    found: dict[str, ModelSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        found.update(getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPECS", {}))
    return found


MODELS: dict[str, ModelSpec] = PluginRegistry(ENTRY_POINT_GROUP, "model", _register_entry,
                                              _builtin_models())


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered name, ``timm:NAME``, ``MODULE:FACTORY`` or
    ``path/to/file.py:FACTORY`` (errors of one line naming the fix)."""
    if name.startswith(TIMM):
        return _timm_spec(name[len(TIMM):])
    if is_reference(name):
        factory = load_factory(name, "model factory")
        return ModelSpec(lambda k: call_with_classes(factory.function, k), None,
                         _summary(factory.function) or name, digest=factory.digest,
                         origin=factory.function)
    if name not in MODELS:
        raise UnknownNameError("model", name, [*MODELS, "timm:NAME", "MODULE:FACTORY",
                                               "path/to/file.py:FACTORY"])
    return MODELS[name]


def _timm_spec(name: str) -> ModelSpec:
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError as err:
        raise ConfigError(f"model timm:{name} needs timm, which is not installed; install it "
                          "(pip install 'ntksap[timm]') or name another model") from err
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:4]}*")[:8]
        raise ConfigError(f"timm has no model {name!r}" + (
            f" (similar: {', '.join(close)})" if close else "") + "; see timm.list_models()")
    cfg = get_pretrained_cfg(name)
    shape = tuple(cfg.input_size) if cfg is not None and cfg.input_size else None
    return ModelSpec(lambda k: timm.create_model(name, pretrained=False, num_classes=k), shape,
                     f"timm {name}", digest=f"timm-{metadata.version('timm')}")


def input_shape(name: str, given: Any = None) -> tuple[int, ...]:
    """``given`` (e.g. ``--input-shape``), else the shape model ``name`` is made for; a model
    that declares none (a user's factory) needs it given (:class:`ConfigError`)."""
    if given:
        return tuple(int(d) for d in given)
    shape = model_spec(name).input_shape
    if shape is None:
        raise ConfigError(f"model {name!r} declares no input shape; give one, e.g. "
                          "--input-shape 3 32 32 (channels height width)")
    return tuple(shape)


def _summary(function: Any) -> str:
    """The first line of a factory's docstring."""
    doc = (getattr(function, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def build_model(name: str, num_classes: int = 10, seed: int | None = None,
                init: str = KAIMING) -> nn.Module:
    """Build the model ``name`` (see :func:`model_spec`), initialized by the scheme ``init``
    (default Kaiming-normal, reference section 3, step 1; see :mod:`ntksap.init`).

    With ``seed`` the initialization is reproducible; without it the global RNG is used.
    A factory that returns no ``nn.Module`` is a :class:`ConfigError`."""
    model = model_spec(name).factory(num_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r}: its factory returned a {type(model).__name__}, "
                          "not a torch.nn.Module; return the network itself")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return initialize_(model, init, generator)


__all__ = ["ENTRY_POINT_GROUP", "MODELS", "ModelSpec", "build_model", "input_shape",
           "kaiming_init_", "model_spec", "register_model"]
