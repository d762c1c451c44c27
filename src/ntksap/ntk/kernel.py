"""The empirical neural tangent kernel K = J J^T (reference section 7).

For n inputs and k logits, K is the kn x kn Gram matrix of the Jacobian rows: entry
((i, c), (j, d)), at index (i * k + c, j * k + d), is the inner product of the parameter
gradients of logit c at x_i and logit d at x_j. It is symmetric positive semi-definite and its
trace is the sum of squared per-example gradient norms (:func:`.trace.ntk_trace`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .jacobian import JacobianRows, jacobian_rows
from .memory import DEFAULT_BUDGET, parse_bytes, plan_kernel


def empirical_ntk(model: nn.Module, inputs: torch.Tensor, *, params: str = "all",
                  logits: Sequence[int] | None = None,
                  memory_budget: str | int | float = DEFAULT_BUDGET, backend: str = "auto",
                  statistics_inputs: torch.Tensor | None = None,
                  progress: bool = False) -> torch.Tensor:
    """The empirical NTK of ``model`` on ``inputs`` (n, ...), a (nk, nk) tensor.

    ``params``: ``"all"`` parameters (default) or the ``"prunable"`` weights; for a masked
    model the kernel counts the kept weights only (see :mod:`.params`). ``logits``: a subset of
    the outputs (default all k). BatchNorm uses the batch statistics of ``statistics_inputs``
    (default ``inputs``) in eval form, as NTK-SAP scores. The computation is chunked over inputs
    and logits so that K, the Jacobian rows and the working memory stay under
    ``memory_budget`` (e.g. ``"2GiB"``); :class:`MemoryBudgetError` says how much is needed
    when even one row pair cannot fit. K has the dtype of the model's parameters.
    """
    budget = parse_bytes(memory_budget)
    with jacobian_rows(model, inputs, params=params, logits=logits, backend=backend,
                       statistics_inputs=statistics_inputs) as jac:
        return _assemble(jac, budget, progress)


def _assemble(jac: JacobianRows, budget: int, progress: bool) -> torch.Tensor:
    n, k, p = jac.n, jac.k, jac.num_params
    plan = plan_kernel(n, k, p, jac.itemsize, jac.work_bytes, budget)
    device = jac.inputs.device
    rows = n * k
    blocks = list(jac.blocks(plan.inputs_per_chunk, plan.logits_per_chunk))
    if plan.mode == "stored":  # J's rows in block order, then K in that order, permuted
        J = jac.empty(rows)
        start = 0
        for idx, inputs, positions in tqdm(blocks, desc="NTK: Jacobian", disable=not progress,
                                           leave=False):
            stop = start + len(idx)
            jac.block(inputs, positions, out=[part[start:stop] for part in J])
            start = stop
        stored = symmetric_gram(J, progress=progress)
        del J
        order = torch.cat([idx for idx, _, _ in blocks])
        if torch.equal(order, torch.arange(rows, device=device)):
            return stored
        kernel = torch.empty_like(stored)
        kernel[order[:, None], order[None, :]] = stored
        return kernel
    kernel = torch.empty((rows, rows), dtype=jac.dtype, device=device)
    bar = tqdm(total=len(blocks) * (len(blocks) + 1) // 2, desc="NTK: blocks",
               disable=not progress, leave=False)
    for a, (idx_a, inputs_a, logits_a) in enumerate(blocks):
        Ja = jac.block(inputs_a, logits_a)
        square = _product(Ja, Ja)
        kernel[idx_a[:, None], idx_a[None, :]] = 0.5 * (square + square.T)
        bar.update()
        for idx_b, inputs_b, logits_b in blocks[a + 1:]:
            cross = _product(Ja, jac.block(inputs_b, logits_b))
            kernel[idx_a[:, None], idx_b[None, :]] = cross
            kernel[idx_b[:, None], idx_a[None, :]] = cross.T
            bar.update()
    bar.close()
    return kernel


def _product(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """sum over column groups of a_g b_g^T."""
    out = a[0] @ b[0].T
    for x, y in zip(a[1:], b[1:], strict=True):
        out.addmm_(x, y.T)
    return out


def symmetric_gram(J: torch.Tensor | list[torch.Tensor], out: torch.Tensor | None = None,
                   block: int | None = None, progress: bool = False) -> torch.Tensor:
    """J J^T (J given whole or as column groups), the lower triangle a band of ``block`` rows
    at a time (each band against all rows above it and itself), mirrored: 5/8 of the products
    of J @ J.T with four bands, in products large enough to run at full speed, and the result
    is exactly symmetric."""
    parts = [J] if isinstance(J, torch.Tensor) else list(J)
    rows = len(parts[0])
    if out is None:
        out = torch.empty((rows, rows), dtype=parts[0].dtype, device=parts[0].device)
    block = block or max(64, -(-rows // 4))
    bar = tqdm(total=rows, desc="NTK: J J^T", disable=not progress, leave=False)
    for lo in range(0, rows, block):
        hi = min(lo + block, rows)
        band = _product([part[lo:hi] for part in parts], [part[:hi] for part in parts])
        diagonal = band[:, lo:hi]
        out[lo:hi, lo:hi] = 0.5 * (diagonal + diagonal.T)
        out[lo:hi, :lo] = band[:, :lo]
        out[:lo, lo:hi] = band[:, :lo].T
        bar.update(hi - lo)
    bar.close()
    return out
