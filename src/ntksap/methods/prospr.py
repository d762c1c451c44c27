"""ProsPr (Alizadeh, Tailor, Zintgraf, van Amersfoort, Farquhar, Lane, Gal, "Prospect
pruning: finding trainable weights at initialization using meta-gradients", ICLR 2022)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import ConfigError, MemoryBudgetError
from ..ntk.memory import format_bytes, parse_bytes
from .base import Batch, Method, ScoreContext, ScoringNet
from .budget import budget_bytes, saved_bytes

Params = dict[str, torch.Tensor]


@dataclass
class ProsPr(Method):
    """Score of mask entry j: |d L(theta_K) / d m_j| at the current mask m (all ones at the
    start), where theta_0 = theta * m on the prunable weights and theta_K is reached from it
    by K = ``steps`` steps of SGD on the cross-entropy of the pruning set, differentiated
    through all K steps (the full meta-gradient, second-order terms included). Higher score
    = kept. BatchNorm in train mode on the scoring copy (batch statistics, as the paper's
    code, which calls ``net.train()``). With K = 0 the score is SNIP's.

    Defaults are the paper's public code's (``cli.py``): K = 3 steps, learning rate 0.1, no
    momentum, no weight decay, meta-batch of 128 examples, one-shot (``default_rounds`` 1:
    the paper prunes in a single shot), full meta-gradient. Every parameter takes the inner
    SGD steps (biases and BatchNorm affine parameters too), as in that code; only the masks
    are differentiated at the end. Batches: the pruning set's batches are joined and cut
    again into ProsPr's own: by default one batch, the first ``meta_batch_size`` examples
    (all of CIFAR-10's 100 when the set is smaller), serves every inner step and the
    meta-loss (the code's default, ``--new-data-in-inner`` off); ``new_batch_per_step=True``
    takes consecutive batches instead, step k on batch k and the meta-loss on batch K
    (wrapping around the pruning set), as the package's ``prune()`` default does. The paper's
    code takes its batch from the augmented training loader; here it comes from the pruning
    set (10 x classes un-augmented images, the project's convention for every data-needing
    method). Labels are used (cross-entropy, mean over the batch).

    ``momentum`` (inner SGD momentum, default 0) follows the authors' code
    (``prospr/prospr.py``, ``functional_sgd``), not PyTorch's SGD: the first step's momentum
    buffer is a *detached* copy of its gradient, and that buffer is the first step's update;
    later steps accumulate v = momentum * v + g (dampening 0, no Nesterov, no weight decay).
    So with momentum > 0 the first step's gradient is a constant of the meta-gradient (its
    second-order terms are dropped), while with momentum 0 every step's are kept. (Until
    2026-12 ntksap kept them with momentum too, as PyTorch's SGD would: scores differed from
    the authors' by 30-41 % at momentum 0.9.)

    ``first_order=True``: the inner gradients are treated as constants (no second-order
    terms), so the score is |grad L(theta_K) * theta| (the paper's first-order
    approximation). Memory: the full meta-gradient keeps the graph of all K steps; after the
    first step the graph's size is measured and the K steps are refused with
    :class:`MemoryBudgetError` (naming ``meta_batch_size``, ``steps``, ``first_order`` and
    ``memory_budget``) if they would not fit ``memory_budget`` (default: the device's free
    memory). A CUDA out-of-memory error is turned into the same error.
    """

    name = "prospr"
    needs_data = True
    steps: int = 3
    lr: float = 0.1
    momentum: float = 0.0
    meta_batch_size: int = 128
    new_batch_per_step: bool = False
    first_order: bool = False
    memory_budget: str | int | float | None = None

    def __post_init__(self) -> None:
        _check_int(self, "steps", 0)
        _check_int(self, "meta_batch_size", 1)
        if not _number(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"prospr: lr must be a positive number (the inner SGD learning "
                              f"rate, default 0.1); got {self.lr!r}")
        if not _number(self.momentum) or not 0 <= self.momentum < 1:
            raise ConfigError(f"prospr: momentum must be a number in [0, 1) (inner SGD "
                              f"momentum, default 0); got {self.momentum!r}")
        for flag in ("new_batch_per_step", "first_order"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"prospr: {flag} must be true or false; got "
                                  f"{getattr(self, flag)!r}")
        if self.memory_budget is not None:
            parse_bytes(self.memory_budget)

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        batches = inner_batches(ctx.data or [], self.steps, self.meta_batch_size,
                                self.new_batch_per_step)
        device = ctx.generator.device
        try:
            with sdpa_kernel(SDPBackend.MATH):  # fused attention has no double backward
                return self._meta_gradients(net, batches, device)
        except torch.OutOfMemoryError as err:
            raise MemoryBudgetError(
                f"prospr ran out of memory on {device} ({str(err).splitlines()[0]}); lower "
                f"meta_batch_size (now {self.meta_batch_size}) or steps (now {self.steps}), "
                "or use first_order=True") from err

    def _meta_gradients(self, net: ScoringNet, batches: list[Batch], device: torch.device
                        ) -> dict[str, torch.Tensor]:
        masks = net.mask_leaves()
        params = initial_params(net, masks)
        velocity: Params = {}
        for k in range(self.steps):
            x, y = batches[k]
            with saved_bytes() as saved:
                loss = F.cross_entropy(call(net, params, x), y)
                grads = torch.autograd.grad(loss, list(params.values()),
                                            create_graph=not self.first_order,
                                            allow_unused=True)
            if k == 0:
                self._check_memory(saved.total, params, len(x), device)
            params = self._sgd_step(params, grads, velocity)
        x, y = batches[-1]
        loss = F.cross_entropy(call(net, params, x), y)
        meta = torch.autograd.grad(loss, list(masks.values()), allow_unused=True)
        return {n: (g.abs() if g is not None else torch.zeros_like(m))
                for (n, m), g in zip(masks.items(), meta, strict=True)}

    def _sgd_step(self, params: Params, grads: Sequence[torch.Tensor | None],
                  velocity: Params) -> Params:
        """theta - lr * v: v = g without momentum; with momentum, v = g detached on the first
        step (the authors' ``functional_sgd``), then momentum * v + g."""
        out = {}
        for (name, p), g in zip(params.items(), grads, strict=True):
            if g is None:  # a parameter the loss does not reach
                out[name] = p
                continue
            if self.first_order:
                g = g.detach()
            if self.momentum:
                g = g.detach() if name not in velocity else self.momentum * velocity[name] + g
                velocity[name] = g
            out[name] = p - self.lr * g
        return out

    def _check_memory(self, step_bytes: int, params: Params, batch: int,
                      device: torch.device) -> None:
        """Refuse K steps whose graph would not fit: each full step keeps about what the first
        one saved, plus new parameters (and velocities); first-order steps keep only those."""
        budget = budget_bytes(self.memory_budget, device)
        if budget is None:
            return
        param_bytes = sum(p.numel() * p.element_size() for p in params.values())
        kept = (self.steps + 1) * step_bytes if not self.first_order else 2 * step_bytes
        need = kept + self.steps * param_bytes * (3 if self.momentum else 2)
        if need > budget:
            raise MemoryBudgetError(
                f"prospr: differentiating through {self.steps} SGD steps on batches of "
                f"{batch} needs about {format_bytes(need)} "
                f"({format_bytes(step_bytes)} of graph per step), over the memory budget of "
                f"{format_bytes(budget)}; lower meta_batch_size (now {self.meta_batch_size}) "
                f"or steps (now {self.steps}), use first_order=True, or raise memory_budget "
                "(default: the device's free memory)")


def inner_batches(data: Sequence[Batch], steps: int, batch_size: int,
                  new_batch_per_step: bool) -> list[Batch]:
    """The K + 1 batches of the inner steps and the meta-loss: one batch (the first
    ``batch_size`` examples) repeated, or consecutive batches wrapping around the set."""
    total = sum(len(x) for x, _ in data)
    size = min(batch_size, total)
    if not new_batch_per_step:
        first = examples(data, 0, size)
        return [first] * (steps + 1)
    return [examples(data, (k * size) % total, size) for k in range(steps + 1)]


def examples(data: Sequence[Batch], start: int, count: int) -> Batch:
    """Examples start .. start + count - 1 of the pruning set (wrapping around once), as one
    batch; ``count`` is at most the set's size."""
    total = sum(len(x) for x, _ in data)
    parts = (_window(data, start, min(start + count, total))
             + _window(data, 0, max(start + count - total, 0)))
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _window(data: Sequence[Batch], lo: int, hi: int) -> list[Batch]:
    """The pieces of the batches that hold examples lo .. hi - 1."""
    pieces, offset = [], 0
    for x, y in data:
        a, b = max(lo - offset, 0), min(hi - offset, len(x))
        if a < b:
            pieces.append((x[a:b], y[a:b]))
        offset += len(x)
    return pieces


def initial_params(net: ScoringNet, masks: Params) -> Params:
    """theta_0: the prunable weights times the mask leaves (so the graph reaches the masks);
    every other parameter a fresh leaf, so the inner steps train it too."""
    weights = {f"{n}.weight": n for n in masks}
    params = {}
    for name, p in net.model.named_parameters():
        if name in weights:
            params[name] = p.detach() * masks[weights[name]]
        else:
            params[name] = p.detach().clone().requires_grad_(True)
    return params


def call(net: ScoringNet, params: Params, x: torch.Tensor) -> torch.Tensor:
    """The scoring copy's logits with all its parameters replaced by ``params``."""
    if net.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return functional_call(net.model, params, (x,))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(method: Method, field: str, least: int) -> None:
    value = getattr(method, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{method.name}: {field} must be an integer >= {least}; got "
                          f"{value!r}")
