"""Networks of the theory lab, in NTK parameterization (every weight and bias ~ N(0, 1), the
layer scale written in the forward pass), and the zero-output tricks of reference section 7.

All are plain ``nn.Linear`` stacks, so :func:`ntksap.ntk.empirical_ntk` takes its fast
structured path on them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, not {name!r}")
    return ACTIVATIONS[name]


def _normal_(module: nn.Linear, weight_std: float, bias_std: float,
             generator: torch.Generator | None) -> None:
    with torch.no_grad():
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * weight_std)
        if module.bias is not None:
            module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * bias_std)


class TwoLayer(nn.Module):
    """f(x) = (1/sqrt(m)) sum_j a_j sigma(w_j . x / sqrt(d) + b_j), with a_j, w_j, b_j ~ N(0, 1):
    the two-layer network whose NTK stays fixed during training as m grows (Jacot et al.)."""

    def __init__(self, width: int, in_dim: int = 1, activation: str = "relu",
                 seed: int | None = 0) -> None:
        super().__init__()
        self.width, self.in_dim, self.activation = width, in_dim, activation
        self.act = _activation(activation)
        self.hidden = nn.Linear(in_dim, width)
        self.out = nn.Linear(width, 1, bias=False)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        _normal_(self.hidden, 1.0, 1.0, generator)
        _normal_(self.out, 1.0, 0.0, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.hidden(x / math.sqrt(self.in_dim)))
        return self.out(h) / math.sqrt(self.width)


class DeepNTK(nn.Module):
    """A fully connected network in NTK parameterization: layer l computes
    z = W_l (sigma_w / sqrt(n_l)) a + b_l with W_l ~ N(0, 1) and b_l ~ N(0, sigma_b^2), where
    n_l is the layer's fan-in and sigma_w the initialization std (``std``); the last layer
    has no activation. ``widths`` run from the input to the output, e.g. (1, 5000, 5000, 1)."""

    def __init__(self, widths: Sequence[int], std: float = 1.0, bias_std: float | None = None,
                 activation: str = "tanh", seed: int | None = 0) -> None:
        super().__init__()
        if len(widths) < 2 or min(widths) < 1:
            raise ConfigError(f"widths must list at least an input and an output size, all "
                              f"positive, got {tuple(widths)}")
        self.widths, self.std = tuple(widths), std
        self.bias_std = std if bias_std is None else bias_std
        self.activation = activation
        self.act = _activation(activation)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:],
                                                                    strict=False))
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for layer in self.layers:
            _normal_(layer, 1.0, self.bias_std, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x
        for i, layer in enumerate(self.layers):
            a = layer(a * (self.std / math.sqrt(layer.in_features)))
            if i < len(self.layers) - 1:
                a = self.act(a)
        return a


class ASI(nn.Module):
    """Antisymmetrical initialization (reference section 7):
    h(x) = (sqrt(2)/2) f(x; theta) - (sqrt(2)/2) f(x; theta'), theta'(0) = theta(0).

    Both copies are trained. At initialization the output is exactly zero (the two terms are
    the same computation) and the kernel is unchanged: K_h = K_f / 2 + K_f / 2 = K_f."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.twin = copy.deepcopy(net)
        self.scale = math.sqrt(2.0) / 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(x) - self.scale * self.twin(x)


def doubled(net: DeepNTK) -> DeepNTK:
    """The doubling trick: the last hidden layer duplicated, the copies' output weights
    negated, so the output is exactly zero at initialization. Unlike ASI it changes the
    kernel: the gradients reaching the layers below cancel, so only the last two layers'
    contributions remain."""
    widths = list(net.widths)
    widths[-2] *= 2
    like = net.layers[0].weight
    out = DeepNTK(widths, net.std, net.bias_std, net.activation, seed=None).to(like)
    with torch.no_grad():
        for new, old in zip(out.layers[:-2], net.layers[:-2], strict=True):
            new.load_state_dict(old.state_dict())
        hidden, new_hidden = net.layers[-2], out.layers[-2]
        new_hidden.weight.copy_(torch.cat([hidden.weight, hidden.weight]))
        new_hidden.bias.copy_(torch.cat([hidden.bias, hidden.bias]))
        last, new_last = net.layers[-1], out.layers[-1]
        new_last.weight.copy_(torch.cat([last.weight, -last.weight], dim=1))
        new_last.bias.zero_()
    return out
