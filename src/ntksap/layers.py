"""What a prunable layer is: every Conv1d/2d/3d and Linear weight (reference section 1), found
by name, with its stored weight. The masks, the engine and effective sparsity build on it."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import NoPrunableLayersError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
LayerFilter = Callable[[str, nn.Module], bool]


def exclude_layers(*patterns: str) -> LayerFilter:
    """A layer filter that leaves out layers whose name matches any glob pattern."""
    return lambda name, module: not any(fnmatch.fnmatchcase(name, p) for p in patterns)


def prunable_layers(model: nn.Module, layer_filter: LayerFilter | None = None
                    ) -> dict[str, nn.Module]:
    """The prunable layers of ``model`` in module order: every Conv1d/2d/3d and Linear weight
    (reference section 1), minus those ``layer_filter`` rejects."""
    layers = {
        name: module for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
        and (layer_filter is None or layer_filter(name, module))
    }
    if not layers:
        raise NoPrunableLayersError(
            f"{type(model).__name__} has no prunable layers (Conv1d/2d/3d or Linear weights"
            + (" passing the layer filter" if layer_filter else "")
            + "); prune a model that has some, or loosen the layer filter"
        )
    return layers


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The stored weight parameter (``original`` under a parametrization)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return module.weight
