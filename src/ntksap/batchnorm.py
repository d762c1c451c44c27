"""Evaluate networks with BatchNorm in eval mode holding a batch's own statistics.

NTK-SAP (reference section 3, step 4) resets the running statistics, runs the unperturbed
network once, without gradient, in train mode with momentum 1 (so the running mean becomes the
batch mean and the running variance the batch's unbiased variance), then evaluates both the
unperturbed and the perturbed network in eval mode with those statistics: no gradient flows
through them.

:func:`batch_statistics` patches the BatchNorm layers of a (private, scoring) copy so that this
runs without touching any buffer, and also inside ``torch.func.vmap`` (several draws at once):

- ``"record_train"``: normalize with the batch mean and biased variance (train mode) and
  record the mean and unbiased variance: PyTorch's own train-mode kernel updating fresh
  running statistics with momentum 1;
- ``"record_eval"``: normalize with the batch mean and unbiased variance (eval form) and
  record them: the statistics pass fused with the unperturbed forward. Later layers then see
  eval-mode activations, so their statistics differ from the train pass's by O(1/n)
  (n = batch x spatial size);
- ``"replay"``: each BatchNorm, in call order, normalizes with the statistics recorded for it.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

MODES = ("record_train", "record_eval", "replay")


class BatchStatistics:
    def __init__(self, mode: str) -> None:
        self._stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        """Switch mode; replaying always starts again from the first BatchNorm."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.mode, self._cursor = mode, 0

    def _next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cursor >= len(self._stats):
            raise RuntimeError("the replayed network calls more BatchNorm layers than the "
                               "recorded one: both passes must run the same network")
        self._cursor += 1
        return self._stats[self._cursor - 1]

    def last_replayed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (mean, unbiased variance) the latest replayed BatchNorm call normalized with
        (before any replayed call: the last recorded ones)."""
        return self._stats[self._cursor - 1]

    def normalize(self, module: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        batched = _is_batched(x)
        if self.mode == "record_train" and not batched:  # PyTorch's own train-mode kernel
            mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
            var = torch.ones_like(mean)
            self._stats.append((mean, var))
            return F.batch_norm(x, mean, var, module.weight, module.bias, True, 1.0, module.eps)
        if self.mode == "replay" and not batched:
            mean, var = self._next()
            return F.batch_norm(x, mean, var, module.weight, module.bias, False, 0.0,
                                module.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.mode == "replay":
            mean, var = self._next()
            used = var
        else:
            dims = [0, *range(2, x.dim())]
            biased, mean = torch.var_mean(x.detach(), dim=dims, correction=0)
            n = x.numel() // x.shape[1]
            var = biased * (n / max(n - 1, 1))
            self._stats.append((mean, var))
            used = biased if self.mode == "record_train" else var
        scale = torch.rsqrt(used + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -mean * scale
        if module.bias is not None:
            shift = shift + module.bias
        return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))


def _is_batched(x: torch.Tensor) -> bool:
    """Whether ``x`` is, at its outermost level, a ``torch.func.vmap`` batched tensor: only
    unwrapping a batched tensor adds a dimension (a gradient-tracking wrapper keeps its shape)."""
    return torch.func.debug_unwrap(x, recurse=False).dim() > x.dim()


@contextmanager
def batch_statistics(model: nn.Module, mode: str = "record_train") -> Iterator[BatchStatistics]:
    """Patch every BatchNorm of ``model`` to record, then replay, batch statistics."""
    stats = BatchStatistics(mode)
    patched = [m for m in model.modules() if isinstance(m, _BatchNorm)]

    def forward(module: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        return stats.normalize(module, x)

    for m in patched:
        m.forward = types.MethodType(forward, m)
    try:
        yield stats
    finally:
        for m in patched:
            del m.forward
