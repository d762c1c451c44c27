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


def dense_weights(model: nn.Module) -> dict[str, list[int]]:
    """The weights no method prunes, by parameter name, with their shapes: every parameter of
    two or more dimensions that is not the weight of a Conv1d/2d/3d or Linear layer (e.g.
    ``nn.MultiheadAttention``'s packed ``in_proj_weight``, ``nn.LSTM``/``nn.GRU`` weights,
    embeddings, a ViT's position embedding). Biases and normalization scales (1-D) are never
    pruned by design and are not listed."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue  # the stored original of a parametrized (masked) weight
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() < 2 or (isinstance(module, PRUNABLE_TYPES) and name == "weight"):
                continue
            out[f"{prefix}.{name}" if prefix else name] = list(parameter.shape)
    return out


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The stored weight parameter (``original`` under a parametrization)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return module.weight
