"""Random pruning: the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, ScoreContext, ScoringNet


@dataclass
class Random(Method):
    """Score: i.i.d. uniform(0, 1) per weight, from the seeded generator.

    With the global scope every layer gets the same expected density. Data-free; BatchNorm
    mode irrelevant; higher score = kept.
    """

    name = "random"
    needs_inputs = False

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return {n: torch.rand(w.shape, generator=ctx.generator, device=w.device)
                for n, w in net.weights().items()}
