"""Weight initialization of any model: the model zoo's and NTK-SAP's fresh weight draws.

Three schemes, by name (:data:`INITS`, a run's ``init`` field):

- ``kaiming`` (the default; the NTK-SAP reference's): Kaiming-normal, std sqrt(2 / fan_in).
- ``variance-scaling``: the SNIP public code's ``tf.variance_scaling_initializer()`` with its
  defaults (scale 1, fan_in, truncated normal): a normal cut at two standard deviations,
  scaled so that the variance is 1 / fan_in (LeCun-normal), half Kaiming's variance.

- ``pytorch``: PyTorch's own layer defaults (``reset_parameters`` of ``nn.Linear`` and
  ``nn.ConvNd``: ``kaiming_uniform_`` with a = sqrt(5), i.e. weights uniform in
  +-1 / sqrt(fan_in), and biases uniform in the same range), drawn from the run's seed.

The first two leave biases at zero; all three leave normalization shifts at zero and
normalization scales at one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .errors import UnknownNameError

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


KAIMING = "kaiming"
VARIANCE_SCALING = "variance-scaling"
PYTORCH = "pytorch"
# std of a standard normal truncated to [-2, 2]: dividing by it restores unit variance
_TRUNCATED_STD = 0.87962566103423978


def initialize_(model: nn.Module, init: str = KAIMING,
                generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialize ``model`` in place with the scheme named ``init`` (see :data:`INITS`)."""
    check_init(init)
    return INITS[init](model, generator)


def check_init(init: str) -> None:
    """An :class:`UnknownNameError` listing the schemes unless ``init`` is one of them."""
    if init not in INITS:
        raise UnknownNameError("init", init, INITS)


def variance_scaling_init_(model: nn.Module, generator: torch.Generator | None = None
                           ) -> nn.Module:
    """Re-initialize ``model`` in place as the SNIP code initializes its networks.

    Conv/Linear weights: ``tf.variance_scaling_initializer()`` at its defaults (TensorFlow
    >= 1.12): a normal truncated at +-2 standard deviations whose variance is 1 / fan_in
    (its std before the cut: sqrt(1 / fan_in) / 0.8796); their biases zero (the SNIP code's
    ``initializer_b_ap``). Everything else as :func:`kaiming_init_`.
    """
    def draw(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
        std = math.sqrt(1.0 / fan_in) / _TRUNCATED_STD
        out = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        return nn.init.trunc_normal_(out, 0.0, std, -2 * std, 2 * std, generator=generator)
    return _initialize(model, draw, generator)


def kaiming_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialize ``model`` in place with the reference's init distribution.

    Conv/Linear weights: Kaiming-normal, fan_in, gain sqrt(2) (std = sqrt(2 / fan_in));
    their biases: zero. Normalization layers: weight (gamma) = 1, bias (beta) = 0. Any other
    module with its own ``reset_parameters`` is reset by it (drawing from the global RNG,
    forked and seeded from ``generator`` so the result stays reproducible).

    ``generator`` must live on the model's device (or be None for the global RNG).
    Works on masked models too: a parametrized weight is re-drawn through its ``original``.
    """
    def draw(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
        return torch.randn(weight.shape, generator=generator, dtype=weight.dtype,
                           device=weight.device) * math.sqrt(2.0 / fan_in)
    return _initialize(model, draw, generator)


def pytorch_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialize ``model`` in place as PyTorch's own layers initialize themselves.

    Conv/Linear: ``reset_parameters``' law, weights and biases uniform in +-1 / sqrt(fan_in)
    (``kaiming_uniform_(a=sqrt(5))`` has exactly that bound), drawn from ``generator`` (so
    masked layers are re-drawn through their ``original`` too). Everything else as
    :func:`kaiming_init_`.
    """
    def draw(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        out = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
        return out.uniform_(-bound, bound, generator=generator)
    return _initialize(model, draw, generator, bias=draw)


def _initialize(model: nn.Module, draw: Callable[[torch.Tensor, int], torch.Tensor],
                generator: torch.Generator | None,
                bias: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> nn.Module:
    """Conv/Linear weights from ``draw(weight, fan_in)``, biases from ``bias`` (default
    zero); norms 1 and 0; other modules with parameters by their own ``reset_parameters``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _CONV_LINEAR):
                weight = _raw_weight(module)
                fan_in = weight[0].numel()
                weight.copy_(draw(weight, fan_in))
                if module.bias is not None:
                    module.bias.copy_(bias(module.bias, fan_in) if bias else 0.0)
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


INITS: dict[str, Callable[..., nn.Module]] = {KAIMING: kaiming_init_,
                                             VARIANCE_SCALING: variance_scaling_init_,
                                             PYTORCH: pytorch_init_}
