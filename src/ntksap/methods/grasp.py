"""GraSP (Wang, Zhang, Grosse, "Picking winning tickets before training by preserving
gradient flow", ICLR 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import Method, ScoreContext, ScoringNet, check_options, is_positive


@dataclass
class GraSP(Method):
    """Score: theta * (H g), signed, no absolute value. g = grad_w L summed over the pruning
    set's batches, L = cross-entropy of logits / ``temperature`` (200), H g by double backprop
    on the same batches, at the masked weights w = theta * m.

    Sign convention: the paper writes S = -theta * (H g) and removes the highest S; this
    returns theta * (H g), and the engine keeps the highest, i.e. removes the lowest
    theta * (H g): the same choice. One-shot. BatchNorm in train mode on the scoring copy.
    Attention runs PyTorch's math kernel: the fused ones have no double backward.
    """

    name = "grasp"
    needs_data = True
    temperature: float = 200.0

    def __post_init__(self) -> None:
        check_options(self, temperature=(is_positive(self.temperature),
                                         "a number > 0 (logits are divided by it)"))

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        with sdpa_kernel(SDPBackend.MATH):
            return self._hessian_gradient_scores(net, ctx)

    def _hessian_gradient_scores(self, net: ScoringNet, ctx: ScoreContext
                                 ) -> dict[str, torch.Tensor]:
        theta = {n: w.detach() for n, w in net.weights().items()}
        leaves = {n: (theta[n] * net.masks[n]).requires_grad_(True) for n in theta}
        params = list(leaves.values())

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(net.forward(x, leaves) / self.temperature, y)

        g = [torch.zeros_like(p) for p in params]
        for x, y in ctx.data or []:
            for acc, gi in zip(g, torch.autograd.grad(loss(x, y), params), strict=True):
                acc += gi
        hg = [torch.zeros_like(p) for p in params]
        for x, y in ctx.data or []:
            grads = torch.autograd.grad(loss(x, y), params, create_graph=True)
            z = sum((gi * gf).sum() for gi, gf in zip(g, grads, strict=True))
            for acc, h in zip(hg, torch.autograd.grad(z, params), strict=True):
                acc += h
        return {n: theta[n] * h for n, h in zip(leaves, hg, strict=True)}
