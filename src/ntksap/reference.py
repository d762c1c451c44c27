"""A plain re-statement of the public NTK-SAP code's procedure, as a test oracle and as the
baseline of ``benchmarks/prune_speed.py``. Not registered as a method: use ``ntksap``.

Per draw it does what the public code does: re-initialize the network, reset the BatchNorm
running statistics and run a separate no-grad forward in train mode with momentum 1, deep-copy
the network as the perturbed twin and add the noise to its weights, then evaluate both
networks in eval mode and backpropagate the squared difference of their logits to the masks.
It draws its random numbers in the same order as :class:`ntksap.methods.ntksap.NTKSAP`, so for
the same seed both give the same scores up to floating-point rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from .methods.base import ScoreContext, ScoringNet
from .methods.ntksap import NTKSAP
from .models.init import kaiming_init_


@dataclass
class NTKSAPReference(NTKSAP):
    """NTK-SAP scores computed the way the public reference code computes them."""

    name = "ntksap_reference"

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        g = ctx.generator
        model = net.model.to(memory_format=torch.contiguous_format)
        masks = net.mask_leaves()
        for _ in range(self.repeats):
            for size in self.batch_sizes(ctx):
                kaiming_init_(model, g)
                z = torch.randn((size, *ctx.input_shape), generator=g, device=g.device)
                delta = {n: torch.randn(w.shape, generator=g, device=w.device) * self.eps
                         for n, w in net.weights().items()}
                _batch_statistics_pass(model, z, net)
                model.eval()
                twin = copy.deepcopy(model)
                twin_layers = dict(twin.named_modules())
                with torch.no_grad():
                    for n, d in delta.items():
                        twin_layers[n].weight.add_(d)
                out = _masked_forward(model, net, masks, z)
                out_twin = _masked_forward(twin, net, masks, z)
                (out - out_twin).pow(2).sum().backward()
        model.train()
        return {n: m.grad.abs() for n, m in masks.items()}


def _masked_forward(model: torch.nn.Module, net: ScoringNet, masks: dict[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
    layers = dict(model.named_modules())
    weights = {f"{n}.weight": layers[n].weight * m for n, m in masks.items()}
    return functional_call(model, weights, (x,))


def _batch_statistics_pass(model: torch.nn.Module, z: torch.Tensor, net: ScoringNet) -> None:
    """Reset running statistics, one no-grad train-mode forward with momentum 1, restore the
    momentum: the running statistics become this batch's (mean, unbiased variance)."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        _masked_forward(model, net, net.masks, z)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
