"""What a model of the registry is (:class:`ModelSpec`); each model module of
:mod:`ntksap.models` lists its networks in a ``SPECS`` dict of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: ``factory(num_classes)``; ``input_shape`` (channels, height,
    width) it is made for, or None when any shape that the data has will do; ``digest``: the
    sha256 of the user's source file (``timm-VERSION`` for timm; "" for this package's)."""

    factory: Callable[[int], nn.Module]
    input_shape: tuple[int, ...] | None
    description: str
    num_classes: int | None = None
    digest: str = ""
    origin: Any = field(default=None, compare=False, repr=False)  # the user's factory
