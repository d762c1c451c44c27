"""The trace of the NTK without forming it (reference section 7).

tr K = ||J||_F^2 = sum over inputs i and logits c of ||d f_c(x_i) / d theta||^2:

- :func:`ntk_trace` computes it exactly from per-example gradient norms (J's rows, streamed);
- :func:`hutchinson_trace` estimates it as E_v ||J v||^2 with v ~ N(0, I) (or Rademacher)
  over the parameters, J v a forward-mode Jacobian-vector product: unbiased;
- :func:`finite_difference_trace` is NTK-SAP's estimate, E_delta ||f(theta + delta) -
  f(theta)||^2 / eps^2 with delta ~ N(0, eps^2 I): biased by the curvature, O(eps) relative.

All three take the same ``params`` selection (``"all"`` or ``"prunable"``) and evaluate
BatchNorm with the batch's statistics, as the kernel does. The default is ``"all"`` for the
exact trace and Hutchinson's, and ``"prunable"`` for the finite-difference estimate, which
perturbs the Conv/Linear weights only, as NTK-SAP does; pass ``params`` to compare them on the
same parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jvp, vmap
from tqdm.auto import tqdm

from ..errors import ConfigError, MemoryBudgetError
from .jacobian import JacobianRows, jacobian_rows
from .memory import DEFAULT_BUDGET, format_bytes, parse_bytes, plan_rows


def jacobian_sq_norms(model: nn.Module, inputs: torch.Tensor, *, params: str = "all",
                      logits: Sequence[int] | None = None,
                      memory_budget: str | int | float = DEFAULT_BUDGET, backend: str = "auto",
                      progress: bool = False) -> torch.Tensor:
    """Squared per-example gradient norms ||d f_c(x_i) / d theta||^2, shaped (n, k): the
    diagonal of K, computed one block of Jacobian rows at a time."""
    budget = parse_bytes(memory_budget)
    with jacobian_rows(model, inputs, params=params, logits=logits, backend=backend) as jac:
        plan = plan_rows(jac.n, jac.k, jac.num_params, jac.itemsize, jac.work_bytes, budget)
        norms = torch.empty((jac.n, jac.k), dtype=torch.float64, device=inputs.device)
        blocks = list(jac.blocks(plan.inputs_per_chunk, plan.logits_per_chunk))
        flat = norms.view(-1)
        for idx, rows_in, positions in tqdm(blocks, desc="NTK trace", disable=not progress,
                                            leave=False):
            parts = jac.block(rows_in, positions)
            flat[idx] = sum(part.double().pow(2).sum(1) for part in parts)
        return norms


def ntk_trace(model: nn.Module, inputs: torch.Tensor, **options) -> float:
    """tr K exactly, without forming K: the sum of :func:`jacobian_sq_norms`."""
    return float(jacobian_sq_norms(model, inputs, **options).sum())


@dataclass
class TraceEstimate:
    """A Monte-Carlo trace estimate: the mean over probes and its standard error."""

    value: float
    stderr: float
    samples: torch.Tensor  # one estimate per probe, float64

    def running_mean(self) -> torch.Tensor:
        """The estimate after 1, 2, ... probes (to see it converge)."""
        return self.samples.cumsum(0) / torch.arange(1, len(self.samples) + 1,
                                                      dtype=torch.float64)


def _estimate(samples: list[float]) -> TraceEstimate:
    values = torch.tensor(samples, dtype=torch.float64)
    stderr = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.inf
    return TraceEstimate(float(values.mean()), stderr, values)


def _probes(chosen: dict[str, torch.Tensor], count: int, distribution: str,
            generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``count`` probe vectors over the parameters, drawn one after the other (so the draws do
    not depend on how many run per pass), stacked on a leading dimension."""
    draws: dict[str, list[torch.Tensor]] = {n: [] for n in chosen}
    for _ in range(count):
        for n, p in chosen.items():
            v = torch.randn(p.shape, generator=generator, dtype=p.dtype,
                            device=generator.device)
            draws[n].append(torch.sign(v) if distribution == "rademacher" else v)
    return {n: torch.stack(v).to(chosen[n].device) for n, v in draws.items()}


def _chunks(jac: JacobianRows, budget: int, probes: int) -> list[slice]:
    """Input chunks for forward passes of ``probes`` probes at once."""
    saved = jac.activation_bytes()[0] * probes
    fixed = 3 * probes * sum(c.param.numel() for c in jac.columns) * jac.itemsize
    if fixed + 3 * saved > budget:
        raise MemoryBudgetError(
            f"{probes} probe(s) at a time need at least {format_bytes(fixed + 3 * saved)} "
            f"(tangents, perturbed parameters, activations of one input), over the memory "
            f"budget of {format_bytes(budget)}; raise the budget (memory_budget=, "
            "--memory-budget) or lower probes_per_pass")
    size = max(1, min(jac.n, (budget - fixed) // max(3 * saved, 1)))
    return [slice(s, min(s + size, jac.n)) for s in range(0, jac.n, size)]


Probe = Callable[[JacobianRows, dict[str, torch.Tensor], dict[str, torch.Tensor],
                  torch.Tensor], torch.Tensor]


def _run_estimator(model: nn.Module, inputs: torch.Tensor, samples: int, per_pass: int,
                   params: str, logits: Sequence[int] | None, distribution: str,
                   memory_budget: str | int | float, seed: int, progress: bool, desc: str,
                   one: Probe) -> TraceEstimate:
    """Average ``one(jac, params, probes, x_chunk)`` (a value per probe, summed over input
    chunks) over ``samples`` probes, ``per_pass`` at a time through ``torch.func.vmap``."""
    if samples < 1 or per_pass < 1:
        raise ConfigError(f"samples and probes_per_pass must be at least 1, got {samples} "
                          f"and {per_pass}")
    budget = parse_bytes(memory_budget)
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    with jacobian_rows(model, inputs, params=params, logits=logits, backend="func") as jac:
        chosen = {c.name: c.param.detach() for c in jac.columns}
        per_pass = min(per_pass, samples)
        chunks = _chunks(jac, budget, per_pass)
        values: list[float] = []
        bar = tqdm(total=samples, desc=desc, disable=not progress, leave=False)
        while len(values) < samples:
            count = min(per_pass, samples - len(values))
            probes = _probes(chosen, count, distribution, generator)
            total = torch.zeros(count, dtype=torch.float64, device=inputs.device)
            with torch.no_grad(), warnings.catch_warnings():
                # torch loads its forward-mode decompositions through torch.jit.script once
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
                for chunk in chunks:
                    total += vmap(lambda v, x=inputs[chunk]: one(jac, chosen, v, x))(probes)
            values.extend(total.tolist())
            bar.update(count)
        bar.close()
        return _estimate(values)


def _logits(jac: JacobianRows, params: dict[str, torch.Tensor], x: torch.Tensor
            ) -> torch.Tensor:
    jac.stats.set_mode("replay")
    return functional_call(jac.model, params, (x,))[:, jac.logits]


def hutchinson_trace(model: nn.Module, inputs: torch.Tensor, *, samples: int = 64,
                     params: str = "all", logits: Sequence[int] | None = None,
                     distribution: str = "gaussian", seed: int = 0, probes_per_pass: int = 16,
                     memory_budget: str | int | float = DEFAULT_BUDGET,
                     progress: bool = False) -> TraceEstimate:
    """Hutchinson's estimate of tr K = E_v ||J v||^2, v ~ N(0, I) (``"gaussian"``) or random
    signs (``"rademacher"``), J v by forward-mode differentiation (``torch.func.jvp``):
    unbiased. ``probes_per_pass`` probes run together through ``torch.func.vmap``."""
    if distribution not in ("gaussian", "rademacher"):
        raise ConfigError(f"distribution must be 'gaussian' or 'rademacher', not "
                          f"{distribution!r}")

    def one(jac: JacobianRows, chosen: dict[str, torch.Tensor], v: dict[str, torch.Tensor],
            x: torch.Tensor) -> torch.Tensor:
        _, jv = jvp(lambda p: _logits(jac, p, x), (chosen,), (v,))
        return jv.double().pow(2).sum()

    return _run_estimator(model, inputs, samples, probes_per_pass, params, logits,
                          distribution, memory_budget, seed, progress, "Hutchinson", one)


def finite_difference_trace(model: nn.Module, inputs: torch.Tensor, *, samples: int = 64,
                            eps: float = 0.01, params: str = "prunable",
                            logits: Sequence[int] | None = None, seed: int = 0,
                            probes_per_pass: int = 16,
                            memory_budget: str | int | float = DEFAULT_BUDGET,
                            progress: bool = False) -> TraceEstimate:
    """NTK-SAP's finite-difference estimate (reference section 3): ||f(x; theta + delta) -
    f(x; theta)||^2 / eps^2 with delta ~ N(0, eps^2 I) on the selected parameters, by default
    the prunable (Conv/Linear) weights only, as NTK-SAP perturbs them (``params="all"``
    perturbs every parameter, estimating the trace of the full NTK); both networks with the
    unperturbed batch's BatchNorm statistics. It tends to the Hutchinson estimate on the same
    parameters as eps -> 0; for finite eps the curvature adds a bias."""
    if not eps > 0:
        raise ConfigError(f"eps must be positive, got {eps}")

    def one(jac: JacobianRows, chosen: dict[str, torch.Tensor], v: dict[str, torch.Tensor],
            x: torch.Tensor) -> torch.Tensor:
        clean = _logits(jac, chosen, x)
        moved = _logits(jac, {n: p + eps * v[n] for n, p in chosen.items()}, x)
        return (moved.double() - clean.double()).pow(2).sum() / eps**2

    return _run_estimator(model, inputs, samples, probes_per_pass, params, logits, "gaussian",
                          memory_budget, seed, progress, "finite differences", one)
