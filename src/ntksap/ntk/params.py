"""Which parameters the tangent kernel differentiates: the columns of the Jacobian J.

``params="all"`` (the default, the usual NTK): every parameter of the model, including biases
and BatchNorm affine parameters, whether or not it requires grad. ``params="prunable"``: only the
Conv/Linear weights (reference section 1), the parameters NTK-SAP perturbs.

Masked models (``Masks.apply``): J is taken with respect to the stored ``original`` weights
through the ``weight = original * mask`` parametrization, so the column of a pruned entry is
identically zero and K = J J^T counts the kept weights only. Those zero columns are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError, NtksapError
from ..masks import WeightMask, prunable_layers

PARAMS = ("all", "prunable")


@dataclass
class Column:
    """One parameter tensor's block of columns of J."""

    name: str  # key for torch.func.functional_call ("fc.parametrizations.weight.original")
    param: torch.Tensor  # the stored parameter
    module: nn.Module  # the layer that uses it (never a ParametrizationList)
    attr: str  # "weight", "bias", ...
    kept: torch.Tensor | None  # flat indices of the kept entries of a masked weight
    other_parametrization: bool  # parametrized by something else than a mask

    @property
    def size(self) -> int:
        return self.param.numel() if self.kept is None else self.kept.numel()


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    if ".parametrizations." in f".{name}":
        path, rest = f".{name}".split(".parametrizations.", 1)
        return model.get_submodule(path.lstrip(".")), rest.split(".", 1)[0]
    path, _, attr = name.rpartition(".")
    return model.get_submodule(path), attr


def select_columns(model: nn.Module, params: str = "all") -> list[Column]:
    """The Jacobian's column blocks, in ``model.named_parameters()`` order."""
    if params not in PARAMS:
        raise ConfigError(f"params must be one of {PARAMS}, not {params!r}")
    wanted: set[int] | None = None
    if params == "prunable":
        wanted = {id(_raw(m)) for m in prunable_layers(model).values()}
    columns = []
    for name, p in model.named_parameters():
        if wanted is not None and id(p) not in wanted:
            continue
        module, attr = _owner(model, name)
        kept, other = None, False
        if parametrize.is_parametrized(module, attr):
            chain = list(module.parametrizations[attr])
            if all(isinstance(t, WeightMask) for t in chain):
                mask = torch.ones_like(p, dtype=torch.bool)
                for t in chain:
                    mask &= t.mask.bool()
                if not bool(mask.all()):
                    kept = mask.flatten().nonzero().squeeze(1)
            else:
                other = True
        columns.append(Column(name, p, module, attr, kept, other))
    if not columns:
        raise NtksapError(f"{type(model).__name__} has no parameters to differentiate "
                          f"(params={params!r}); the NTK needs some")
    return columns


def has_shared_parameters(model: nn.Module) -> bool:
    """Whether some parameter is registered under two names (tied weights)."""
    seen: set[int] = set()
    for _, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            return True
        seen.add(id(p))
    return False


def _raw(module: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return module.weight
