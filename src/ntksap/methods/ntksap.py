"""NTK-SAP (Wang, Li, Sun, "NTK-SAP: Improving neural network pruning by aligning training
dynamics", ICLR 2023), exactly as in the reference section 3."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import groupby

import torch
from torch.func import functional_call, vmap

from ..batchnorm import batch_statistics
from ..init import kaiming_init_
from .base import Method, ScoreContext, ScoringNet, check_options, is_count, is_positive


@dataclass
class NTKSAP(Method):
    """Score of mask entry j:
    S_j = | sum over draws of d/dm_j || f(z; theta * m) - f(z; (theta + delta) * m) ||^2 |,
    f the raw logits, the squared norm summed over the batch; the absolute value is taken after
    summing the round's draws. Higher score = kept (prune the connections that least change
    the finite-difference estimate of the NTK trace).

    Each draw: fresh theta from the init distribution (Kaiming-normal fan_in for Conv/Linear,
    BatchNorm gamma = 1, beta = 0), z ~ N(0, I) shaped like a batch of inputs (labels never
    used), delta ~ N(0, eps^2) on the prunable weights. BatchNorm: a no-grad train-mode pass of
    the unperturbed network gives the batch's statistics (mean, unbiased variance); both
    networks are then evaluated in eval mode with them, no gradient through them.
    ``fused_statistics=True`` takes the statistics from the unperturbed eval-mode forward
    itself (one pass fewer; statistics differ by O(1/(batch x spatial size)), which moves
    scores by up to about 2 % on ResNet-20).

    Draws per round: ``repeats`` x the number of pruning-set batches, as in the public code
    (one draw per batch of its pruning loader per repeat). Data-free: with a pruning set, its
    batches only set the shapes; without one, ``samples`` Gaussian inputs (default 10 x the
    number of logits, the pruning set's size) in batches of the engine's ``batch_size`` (256,
    reference section 3). Defaults are CIFAR-10's: T = 20 (engine rounds), R = 5, eps = 0.01
    (variance 1e-4), one batch of 100 per draw. Inputs and noise are drawn in the model's
    dtype.

    Speed, not semantics: with ``pair_vmap`` the unperturbed and perturbed networks run as one
    ``torch.func.vmap`` pass (grouped convolutions; default: on GPU only); up to
    ``draws_per_pass`` draws of equal batch size run together the same way (default: 1 on CPU;
    on GPU as many as hold about 1024 CIFAR-sized images). Random numbers are
    drawn in the same order either way, so the scores do not depend on these options.

    Random-number order (one generator seeded with ``seed``, on the scoring device; draws
    repeat-major, then batch): theta (``kaiming_init_``: each Conv/Linear weight in module
    order, one standard normal tensor of its shape scaled by sqrt(2 / fan_in)), then z, then
    one standard normal tensor per prunable layer in order, scaled by ``eps``, all in the
    model's dtype. tests/oracles.py re-draws them from this description.
    """

    name = "ntksap"
    default_rounds = 20
    repeats: int = 5
    eps: float = 0.01
    samples: int | None = None
    fused_statistics: bool = False
    draws_per_pass: int | None = None
    pair_vmap: bool | None = None

    def __post_init__(self) -> None:
        check_options(
            self, repeats=(is_count(self.repeats), "a whole number >= 1 (R, draws per round)"),
            eps=(is_positive(self.eps), "a number > 0 (the perturbation's std)"),
            samples=(is_count(self.samples, none_ok=True),
                     "a whole number >= 1 (Gaussian inputs per repeat) or None"),
            draws_per_pass=(is_count(self.draws_per_pass, none_ok=True),
                            "a whole number >= 1 or None"))

    def batch_sizes(self, ctx: ScoreContext) -> list[int]:
        if ctx.data:
            return [len(x) for x, _ in ctx.data]
        samples = self.samples or 10 * ctx.num_outputs
        full, rest = divmod(samples, ctx.batch_size)
        return [ctx.batch_size] * full + ([rest] if rest else [])

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        masks = net.mask_leaves()
        total = {n: torch.zeros_like(m) for n, m in masks.items()}
        draws = [size for _ in range(self.repeats) for size in self.batch_sizes(ctx)]
        for size, group in groupby(draws):
            count = len(list(group))
            while count:
                chunk = min(count, self._draws_per_pass(ctx, size))
                count -= chunk
                loss = self._chunk_loss(net, ctx, masks, size, chunk)
                for n, grad in zip(masks, torch.autograd.grad(loss, list(masks.values())),
                                   strict=True):
                    total[n] += grad
        return {n: s.abs() for n, s in total.items()}

    def _draws_per_pass(self, ctx: ScoreContext, size: int) -> int:
        """Default: 1 on CPU; on GPU as many draws as hold about 1024 CIFAR-sized images."""
        if self.draws_per_pass is not None:
            return max(1, self.draws_per_pass)
        if ctx.generator.device.type == "cpu":
            return 1
        return max(1, (1024 * 3 * 32 * 32) // (size * math.prod(ctx.input_shape)))

    def _chunk_loss(self, net: ScoringNet, ctx: ScoreContext, masks: dict[str, torch.Tensor],
                    size: int, draws: int) -> torch.Tensor:
        """Sum of the squared logit differences of ``draws`` draws of one batch size."""
        g = ctx.generator
        thetas, zs, deltas = [], [], []
        for _ in range(draws):
            kaiming_init_(net.model, g)
            thetas.append({k: p.detach().clone() for k, p in net.model.named_parameters()})
            zs.append(torch.randn((size, *ctx.input_shape), generator=g, dtype=net.dtype,
                                  device=g.device))
            deltas.append({n: torch.randn(w.shape, generator=g, dtype=w.dtype,
                                          device=w.device) * self.eps
                           for n, w in net.weights().items()})
        if draws == 1:
            return self._draw_loss(net, masks, thetas[0], deltas[0], net.prepare_input(zs[0]))
        theta = {k: torch.stack([t[k] for t in thetas]) for k in thetas[0]}
        delta = {k: torch.stack([d[k] for d in deltas]) for k in deltas[0]}
        losses = vmap(lambda t, d, z: self._draw_loss(net, masks, t, d, z))(
            theta, delta, torch.stack(zs))
        return losses.sum()

    def _draw_loss(self, net: ScoringNet, masks: dict[str, torch.Tensor],
                   theta: dict[str, torch.Tensor], delta: dict[str, torch.Tensor],
                   z: torch.Tensor) -> torch.Tensor:
        def forward(weights: dict[str, torch.Tensor]) -> torch.Tensor:
            params = {**theta, **{f"{n}.weight": w for n, w in weights.items()}}
            return functional_call(net.model, params, (z,))

        clean_weights = {n: theta[f"{n}.weight"] * m for n, m in masks.items()}
        noisy_weights = {n: (theta[f"{n}.weight"] + delta[n]) * m for n, m in masks.items()}
        if self.fused_statistics:
            with batch_statistics(net.model, "record_eval") as stats:
                clean = forward(clean_weights)
                stats.set_mode("replay")
                noisy = forward(noisy_weights)
            return (clean - noisy).pow(2).sum()
        with batch_statistics(net.model, "record_train") as stats:
            with torch.no_grad():
                forward(clean_weights)
            stats.set_mode("replay")
            if not (self.pair_vmap if self.pair_vmap is not None
                    else z.device.type != "cpu"):
                clean = forward(clean_weights)
                stats.set_mode("replay")
                noisy = forward(noisy_weights)
            else:
                pair = {n: torch.stack([clean_weights[n], noisy_weights[n]]) for n in masks}

                def replayed(weights):
                    stats.set_mode("replay")
                    return forward(weights)

                with warnings.catch_warnings():  # vmap's fallback note for some pooling ops
                    warnings.filterwarnings("ignore", message="There is a performance drop")
                    clean, noisy = vmap(replayed)(pair)
        return (clean - noisy).pow(2).sum()
