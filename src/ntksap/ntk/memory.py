"""Memory budgets: parse sizes, and pick chunk sizes over inputs and logits that fit.

The kernel K (kn x kn), the Jacobian rows J (one row of p entries per (input, logit)) and the
working memory of one chunk (activations, output gradients) are counted against the budget.
When the whole J fits, it is stored and K = J J^T is formed blockwise; otherwise K is built
from row blocks, recomputing J's blocks (two blocks in memory at a time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError, MemoryBudgetError

DEFAULT_BUDGET = "2GiB"
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}

Work = Callable[[int, int], int]  # (inputs per chunk, logits per chunk) -> bytes


def parse_bytes(size: str | int | float) -> int:
    """``"2GiB"``, ``"512MB"``, ``"1.5g"`` or a number of bytes."""
    if isinstance(size, int | float):
        value = float(size)
    else:
        match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9+-]+)?)\s*([a-zA-Z]*)\s*", str(size))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise ConfigError(f"cannot read {size!r} as a memory size; write e.g. 2GiB, "
                              "512MiB or a number of bytes")
        value = float(match.group(1)) * _UNITS[unit]
    if not value > 0:
        raise ConfigError(f"a memory budget must be positive, not {size!r}")
    return int(value)


def format_bytes(size: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} B"


@dataclass(frozen=True)
class Plan:
    """How to cut the (input, logit) rows: ``stored`` keeps all of J, ``recompute`` does not."""

    mode: str
    inputs_per_chunk: int
    logits_per_chunk: int


def _largest(fits: Callable[[int], bool], upper: int) -> int:
    """The largest c in [1, upper] with fits(c) (fits is monotone), or 0."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_kernel_fits(n: int, k: int, itemsize: int, budget: int, what: str = "the NTK",
                      need_more: int = 0) -> None:
    """Refuse, before anything is drawn or computed, a kernel K of n inputs x k logits that
    alone does not fit in ``budget`` (``need_more``: the least working memory besides K,
    when known)."""
    rows = n * k
    kernel = rows * rows * itemsize
    if kernel < budget:
        return
    most = max(0, math.isqrt(budget // itemsize) // k - 1)
    raise MemoryBudgetError(
        f"{what} of {n} inputs x {k} logits is a {rows} x {rows} matrix: "
        f"{format_bytes(kernel)} alone, over the memory budget of {format_bytes(budget)}. "
        f"Raise the budget (memory_budget=, --memory-budget) above "
        f"{format_bytes(kernel + need_more)}, use at most {most} inputs (--inputs), "
        f"or a subset of the logits (logits=[...]); the Jacobian itself is chunked over "
        f"inputs and logits automatically. For the trace alone, ntk_trace and "
        f"hutchinson_trace never form K")


def plan_kernel(n: int, k: int, p: int, itemsize: int, work: Work, budget: int,
                what: str = "the NTK") -> Plan:
    """Chunk sizes for K = J J^T of n inputs x k logits with p parameters."""
    rows = n * k
    kernel = rows * rows * itemsize
    row = p * itemsize
    check_kernel_fits(n, k, itemsize, budget, what, 2 * row + work(1, 1))
    avail = budget - kernel
    stored = rows * row
    c = _largest(lambda c: stored + work(c, k) <= avail, n)
    if c:
        return Plan("stored", c, k)
    c = _largest(lambda c: 2 * c * k * row + work(c, k) <= avail, n)
    if c:
        return Plan("recompute", c, k)
    c = _largest(lambda c: 2 * c * row + work(1, c) <= avail, k)
    if c:
        return Plan("recompute", 1, c)
    need = kernel + 2 * row + work(1, 1)
    raise MemoryBudgetError(
        f"{what} needs at least {format_bytes(need)} ({format_bytes(kernel)} for K, "
        f"{format_bytes(2 * row)} for two Jacobian rows of {p} parameters, "
        f"{format_bytes(work(1, 1))} working memory for one input and one logit), over the "
        f"memory budget of {format_bytes(budget)}. Raise the budget (memory_budget=, "
        f"--memory-budget) to at least that: chunks cannot get smaller than one input and one "
        f"logit (params='prunable' needs a little less)")


def plan_rows(n: int, k: int, p: int, itemsize: int, work: Work, budget: int,
              what: str = "the Jacobian rows") -> Plan:
    """Chunk sizes to stream J's rows once (traces): one block at a time."""
    row = p * itemsize
    c = _largest(lambda c: c * k * row + work(c, k) <= budget, n)
    if c:
        return Plan("recompute", c, k)
    c = _largest(lambda c: c * row + work(1, c) <= budget, k)
    if c:
        return Plan("recompute", 1, c)
    raise MemoryBudgetError(
        f"{what} need at least {format_bytes(row + work(1, 1))} for one input and one logit "
        f"({p} parameters), over the memory budget of {format_bytes(budget)}; raise the "
        "budget (memory_budget=, --memory-budget)")
