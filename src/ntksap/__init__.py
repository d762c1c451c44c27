"""ntksap: prune any PyTorch model at initialization with NTK-SAP or its baselines.

    masks = ntksap.prune(model, "ntksap", sparsity=0.9, input_shape=(3, 32, 32))
    masks.apply(model)          # weight = original * mask, via torch parametrizations
"""

from __future__ import annotations

from importlib import metadata

from .data.user import register_dataset
from .engine import density_schedule, prune, score
from .interop import from_torch_prune, load_pruned, to_torch_prune
from .masks import Masks, exclude_layers, measured_sparsity, prunable_layers
from .methods import METHODS, Method, register_method
from .models import MODELS, build_model, register_model

try:
    __version__ = metadata.version("ntksap")  # one source: pyproject.toml
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree not installed
    __version__ = "0+unknown"

__all__ = [
    "METHODS",
    "MODELS",
    "Masks",
    "Method",
    "build_model",
    "density_schedule",
    "exclude_layers",
    "from_torch_prune",
    "load_pruned",
    "measured_sparsity",
    "prunable_layers",
    "prune",
    "register_dataset",
    "register_method",
    "register_model",
    "score",
    "to_torch_prune",
]
