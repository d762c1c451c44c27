"""SNIP (Lee, Ajanthan, Torr, "SNIP: Single-shot network pruning based on connection
sensitivity", ICLR 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .base import Method, ScoreContext, ScoringNet, mask_gradients


def connection_sensitivity(net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
    """|sum over batches of dL/dm| = |sum of grad_theta L * theta| at the current mask, with
    L the mean cross-entropy of each batch of the pruning set."""
    total = {n: torch.zeros_like(m) for n, m in net.masks.items()}
    for x, y in ctx.data or []:
        grads = mask_gradients(net, lambda forward, x=x, y=y: F.cross_entropy(forward(x), y))
        for n, g in grads.items():
            total[n] += g
    return {n: g.abs() for n, g in total.items()}


@dataclass
class SNIP(Method):
    """Score: |dL/dm| = |grad_theta L * theta|, L = cross-entropy on the pruning set (real
    data, labels used), gradients summed over its batches before the absolute value.
    One-shot. BatchNorm in train mode on the scoring copy. Higher score = kept."""

    name = "snip"
    needs_data = True

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return connection_sensitivity(net, ctx)
