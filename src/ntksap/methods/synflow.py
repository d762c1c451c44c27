"""SynFlow (Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by
iteratively conserving synaptic flow", NeurIPS 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from .base import Method, ScoreContext, ScoringNet


@dataclass
class SynFlow(Method):
    """Score: |theta * dR/dtheta| with R = sum of the outputs of the network whose parameters
    and BatchNorm buffers are all replaced by their absolute values, on one all-ones input.
    Data-free; T = 100 rounds by default; BatchNorm in eval mode. Higher score = kept.

    Precision: scored in float32 (or the model's dtype if wider); when that overflows, gives
    R = 0, or leaves subnormal scores (float32 underflow), the round is recomputed in float64
    and float64 is kept for the remaining rounds.
    """

    name = "synflow"
    default_rounds = 100
    train_mode = False
    _dtype: torch.dtype = field(default=torch.float32, init=False, repr=False)

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        dtype = torch.promote_types(self._dtype, next(iter(net.weights().values())).dtype)
        scores = self._synaptic_flow(net, ctx, dtype)
        if dtype == torch.float32 and _lost_precision(scores, net):
            self._dtype = torch.float64
            scores = self._synaptic_flow(net, ctx, self._dtype)
        return scores

    @staticmethod
    def _synaptic_flow(net: ScoringNet, ctx: ScoreContext, dtype: torch.dtype
                       ) -> dict[str, torch.Tensor]:
        state = {k: v.detach().abs().to(dtype)
                 for k, v in [*net.model.named_parameters(), *net.model.named_buffers()]
                 if v.is_floating_point()}
        masks = {n: m.to(dtype).requires_grad_(True) for n, m in net.masks.items()}
        for n in masks:
            state[f"{n}.weight"] = state[f"{n}.weight"] * masks[n]
        device = next(iter(masks.values())).device
        x = torch.ones((1, *ctx.input_shape), dtype=dtype, device=device)
        flow = functional_call(net.model, state, (x,)).sum()
        grads = torch.autograd.grad(flow, list(masks.values()))
        return dict(zip(masks, grads, strict=True))


def _lost_precision(scores: dict[str, torch.Tensor], net: ScoringNet) -> bool:
    tiny = torch.finfo(torch.float32).tiny
    for n, s in scores.items():
        alive = s[net.masks[n].bool()]
        if not torch.isfinite(alive).all():
            return True
        if ((alive > 0) & (alive < tiny)).any():
            return True
    return all(float(s.abs().max()) == 0.0 for s in scores.values())
