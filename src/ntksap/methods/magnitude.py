"""Magnitude pruning at initialization (Han et al. 2015, applied before training)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, ScoreContext, ScoringNet


@dataclass
class Magnitude(Method):
    """Score: |theta| of the initial weights. Data-free; no forward pass, so no BatchNorm
    mode; higher score = kept."""

    name = "magnitude"
    needs_inputs = False

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return {n: w.detach().abs() for n, w in net.weights().items()}
