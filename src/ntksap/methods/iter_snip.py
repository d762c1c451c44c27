"""Iterative SNIP (de Jorge et al., "Progressive skeletonization: trimming more fat from a
network at initialization", ICLR 2021): SNIP's score recomputed every round."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, ScoreContext, ScoringNet
from .snip import connection_sensitivity


@dataclass
class IterSNIP(Method):
    """Score: |dL/dm| at the current (partly pruned) mask, L = cross-entropy on the pruning
    set; T = 20 rounds by default, pruned weights stay pruned. BatchNorm in train mode on the
    scoring copy. Higher score = kept."""

    name = "iter_snip"
    needs_data = True
    default_rounds = 20

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return connection_sensitivity(net, ctx)
