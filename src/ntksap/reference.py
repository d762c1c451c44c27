"""A plain re-statement of the public NTK-SAP code's scoring procedure (class ``NTKSAP`` in
``Pruners/pruners.py`` of github.com/YiteWang/NTK-SAP), the baseline of
``benchmarks/prune_speed.py``. Not registered as a method: use ``ntksap``.

It shares nothing with :class:`ntksap.methods.ntksap.NTKSAP` but the engine around it (rounds,
exact-k selection, the scoring copy) and the network's init function. What one round does, as
the public code does it:

- once per round: deep-copy the network as the perturbed twin, in eval mode;
- for each repeat, for each batch of the pruning set (or of ``samples`` Gaussian inputs in
  batches of the engine's ``batch_size`` when no data is given): re-initialize the network's
  weights; draw z ~ N(0, I) shaped like the batch; reset the BatchNorm running statistics and
  run one no-grad forward in train mode with momentum 1; switch to eval mode and forward; set
  the twin's prunable weights to the network's plus N(0, eps^2) noise, the twin sharing the
  network's BatchNorm running statistics (the public code copies only the prunable weights,
  its init leaving every other parameter constant: biases 0, BatchNorm 1 and 0; here the
  other parameters are copied too, so that a model scored from its own non-constant biases
  gets a twin differing in the prunable weights only); forward the twin; backpropagate the
  squared norm of the difference of the two networks' logits into the masks' gradients; back
  to train mode;
- score = |mask gradient| (times m != 0) after all the round's draws.

Random numbers are drawn from the engine's seeded generator in the public code's order
(weights, z, then each layer's noise). The network runs in the memory layout the engine chose
(``channels_last``), so the benchmark can compare procedures in the same layout.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from .init import kaiming_init_
from .methods.base import Method, ScoreContext, ScoringNet


@dataclass
class NTKSAPReference(Method):
    """NTK-SAP scores computed the way the public reference code computes them: R = ``repeats``
    draws per pruning-set batch per round, noise std ``eps``, ``samples`` Gaussian inputs per
    repeat without data (default 10 x the number of logits)."""

    name = "ntksap_reference"
    default_rounds = 20
    repeats: int = 5
    eps: float = 0.01
    samples: int | None = None

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        model, g = net.model, ctx.generator
        layers = dict(model.named_modules())
        names = list(net.masks)
        masks = {n: m.detach().clone().requires_grad_(True) for n, m in net.masks.items()}
        twin = copy.deepcopy(model).eval()  # once per round, as the public code
        twin_layers = dict(twin.named_modules())
        prunable = {f"{n}.weight" for n in names}
        others = [p for k, p in model.named_parameters() if k not in prunable]
        twin_others = [p for k, p in twin.named_parameters() if k not in prunable]
        norms = {n: m for n, m in layers.items() if isinstance(m, _BatchNorm)}
        momenta = {n: m.momentum for n, m in norms.items()}
        for m in norms.values():
            m.momentum = 1.0
        dtype = layers[names[0]].weight.dtype
        for _ in range(self.repeats):
            for size in self._batch_sizes(ctx):
                kaiming_init_(model, g)
                z = torch.randn((size, *ctx.input_shape), generator=g, dtype=dtype,
                                device=g.device)
                if net.channels_last and z.dim() == 4:
                    z = z.contiguous(memory_format=torch.channels_last)
                for m in norms.values():
                    m.reset_running_stats()
                with torch.no_grad():
                    _masked_forward(model, layers, masks, z)
                model.eval()
                out = _masked_forward(model, layers, masks, z)
                with torch.no_grad():
                    for n in names:
                        weight = layers[n].weight
                        noise = torch.randn(weight.shape, generator=g, dtype=weight.dtype,
                                            device=weight.device)
                        twin_layers[n].weight.copy_(weight + self.eps * noise)
                    for p, p_twin in zip(others, twin_others, strict=True):
                        p_twin.copy_(p)
                for n, m in norms.items():
                    twin_layers[n].running_mean = m.running_mean
                    twin_layers[n].running_var = m.running_var
                out_twin = _masked_forward(twin, twin_layers, masks, z)
                (torch.norm(out - out_twin, dim=-1) ** 2).sum().backward()
                model.train()
        for n, m in norms.items():
            m.momentum = momenta[n]
        return {n: (m.grad * (m != 0)).abs() if m.grad is not None else torch.zeros_like(m)
                for n, m in masks.items()}

    def _batch_sizes(self, ctx: ScoreContext) -> list[int]:
        """The public code draws one z per batch of its pruning loader (batch 256)."""
        if ctx.data:
            return [len(x) for x, _ in ctx.data]
        samples = self.samples or 10 * ctx.num_outputs
        return [len(chunk) for chunk in torch.arange(samples).split(ctx.batch_size)]


def _masked_forward(model: nn.Module, layers: dict[str, nn.Module],
                    masks: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The network with each prunable weight multiplied by its mask (the public code's masked
    layers)."""
    weights = {f"{n}.weight": layers[n].weight * m for n, m in masks.items()}
    return functional_call(model, weights, (x,))
