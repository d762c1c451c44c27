"""FORCE (de Jorge et al., "Progressive skeletonization: trimming more fat from a network at
initialization", ICLR 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .base import Method, ScoreContext, ScoringNet


@dataclass
class FORCE(Method):
    """Score: |theta * dL/dw| with the gradient taken at the masked weights w = theta * m, for
    every weight, pruned ones included, so pruned weights may return (not monotone).
    L = cross-entropy on the pruning set, gradients summed over its batches. T = 10 rounds with
    the exponential schedule by default (the engine's). BatchNorm in train mode on the scoring
    copy. Higher score = kept."""

    name = "force"
    needs_data = True
    default_rounds = 10
    monotone = False

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        theta = {n: w.detach() for n, w in net.weights().items()}
        leaves = {n: (theta[n] * net.masks[n]).requires_grad_(True) for n in theta}
        total = {n: torch.zeros_like(t) for n, t in theta.items()}
        for x, y in ctx.data or []:
            loss = F.cross_entropy(net.forward(x, leaves), y)
            for n, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values())),
                            strict=True):
                total[n] += g
        return {n: (theta[n] * g).abs() for n, g in total.items()}
