"""Weight initialization of any model: the model zoo's and NTK-SAP's fresh weight draws."""

from __future__ import annotations

import math

import torch
from torch import nn

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def kaiming_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialize ``model`` in place with the reference's init distribution.

    Conv/Linear weights: Kaiming-normal, fan_in, gain sqrt(2) (std = sqrt(2 / fan_in));
    their biases: zero. Normalization layers: weight (gamma) = 1, bias (beta) = 0. Any other
    module with its own ``reset_parameters`` is reset by it (drawing from the global RNG,
    forked and seeded from ``generator`` so the result stays reproducible).

    ``generator`` must live on the model's device (or be None for the global RNG).
    Works on masked models too: a parametrized weight is re-drawn through its ``original``.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _CONV_LINEAR):
                weight = _raw_weight(module)
                fan_in = weight[0].numel()
                std = math.sqrt(2.0 / fan_in)
                weight.copy_(
                    torch.randn(
                        weight.shape, generator=generator, dtype=weight.dtype, device=weight.device
                    )
                    * std
                )
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, _NORMS):
                if getattr(module, "weight", None) is not None:
                    module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif _owns_parameters(module) and hasattr(module, "reset_parameters"):
                device = generator.device if generator is not None else None
                seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    module.reset_parameters()
    return model


def _raw_weight(module: nn.Module) -> torch.Tensor:
    """The stored weight tensor, under a parametrization if there is one."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    return module.weight


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))
