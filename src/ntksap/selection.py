"""Exact-k selection: which weights to keep, given scores, for a global, layerwise or ERK
distribution of the density.

Exactly ``keep`` weights are kept (so exactly round(sparsity * N) are removed). Scores tied at
the threshold are broken by a seeded random permutation: deterministic for a seed, and no layer
is favoured by its position in the model. Never "remove every tied weight".
"""

from __future__ import annotations

import math

import torch

SCOPES = ("global", "layerwise", "erk")


def top_k_mask(scores: torch.Tensor, keep: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask of the ``keep`` highest entries of a 1-D tensor, ties broken at random."""
    n = scores.numel()
    if keep >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    if keep <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    threshold = torch.kthvalue(scores, n - keep + 1).values
    mask = scores > threshold
    need = keep - int(mask.sum())
    if need > 0:
        tied = torch.nonzero(scores == threshold).flatten()
        pick = torch.randperm(tied.numel(), generator=generator)[:need].to(tied.device)  # CPU gen
        mask[tied[pick]] = True
    return mask


def apportion(quotas: list[float], total: int, caps: list[int]) -> list[int]:
    """Integers near ``quotas`` summing to ``total`` (largest remainder), each within its cap."""
    counts = [min(cap, math.floor(q)) for q, cap in zip(quotas, caps, strict=True)]
    order = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    missing = total - sum(counts)
    while missing > 0:
        progressed = False
        for i in order:
            if missing and counts[i] < caps[i]:
                counts[i] += 1
                missing -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"cannot keep {total} weights within the layer caps {caps}")
    return counts


def erk_densities(shapes: list[torch.Size], density: float) -> list[float]:
    """Erdos-Renyi-Kernel densities (Evci et al. 2020): density_l proportional to
    sum(shape_l) / prod(shape_l), scaled so the total density is ``density``; layers that
    would exceed 1 are kept dense and the rest rescaled."""
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    dense: set[int] = set()
    while True:
        budget = density * sum(sizes) - sum(sizes[i] for i in dense)
        weight = sum(raw[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        scale = budget / weight if weight > 0 else 0.0
        over = {i for i in range(len(sizes)) if i not in dense and raw[i] * scale > 1}
        if not over:
            return [1.0 if i in dense else raw[i] * scale for i in range(len(sizes))]
        dense |= over


def select(scores: dict[str, torch.Tensor], keep: int, scope: str,
           generator: torch.Generator, caps: dict[str, int] | None = None
           ) -> dict[str, torch.Tensor]:
    """Keep exactly ``keep`` weights in all: the highest scores overall (global) or per layer
    with per-layer counts from the same density (layerwise) or ERK densities (erk). ``caps``
    limits each layer's count (its surviving weights, for monotone masks)."""
    names = list(scores)
    if scope == "global":
        flat = torch.cat([scores[n].flatten() for n in names])
        mask = top_k_mask(flat, keep, generator)
        out, start = {}, 0
        for n in names:
            size = scores[n].numel()
            out[n] = mask[start:start + size].view_as(scores[n])
            start += size
        return out
    sizes = [scores[n].numel() for n in names]
    total = sum(sizes)
    if scope == "layerwise":
        quotas = [keep * s / total for s in sizes]
    elif scope == "erk":
        densities = erk_densities([scores[n].shape for n in names], keep / total)
        quotas = [d * s for d, s in zip(densities, sizes, strict=True)]
    else:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    limits = [min(s, (caps or {}).get(n, s)) for n, s in zip(names, sizes, strict=True)]
    counts = apportion(quotas, keep, limits)
    return {n: top_k_mask(scores[n].flatten(), k, generator).view_as(scores[n])
            for n, k in zip(names, counts, strict=True)}
