"""Eigenvalues of a kernel, their summary, and distances between spectra (reference section 7:
under gradient flow each eigen-direction of K decays at the rate of its eigenvalue, so the
sorted spectrum describes the training dynamics; NTK-SAP tries to keep it close to the dense
network's)."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def eigenvalues(kernel: torch.Tensor, float64: bool = True) -> torch.Tensor:
    """The eigenvalues of a symmetric kernel, largest first (``torch.linalg.eigvalsh``, in
    float64 by default). Rounding can leave tiny negative values on a PSD kernel."""
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ConfigError(f"a kernel must be a square matrix, got shape {tuple(kernel.shape)}")
    k = kernel.double() if float64 else kernel
    return torch.linalg.eigvalsh(k).flip(0)


def condition_number(eigs: torch.Tensor) -> float:
    """lambda_max / lambda_min (infinite when the smallest eigenvalue is not positive)."""
    top, bottom = float(eigs.max()), float(eigs.min())
    return top / bottom if bottom > 0 else math.inf


def spectrum_summary(eigs: torch.Tensor) -> dict[str, float]:
    """Trace (the eigenvalues' sum), largest and smallest eigenvalues, condition number."""
    return {"trace": float(eigs.double().sum()), "lambda_max": float(eigs.max()),
            "lambda_min": float(eigs.min()), "condition": condition_number(eigs)}


def spectrum_distance(eigs: torch.Tensor, reference: torch.Tensor, kind: str = "log",
                      floor: float = 1e-7) -> float:
    """A distance between two sorted spectra of the same size.

    ``"log"``: root-mean-square of log(lambda_i / mu_i) over the sorted eigenvalues, both
    clipped below at ``floor`` x the reference's largest eigenvalue (float32 resolution), so
    every part of the spectrum counts on the scale of the log-plot. ``"relative"``:
    ||lambda - mu||_2 / ||mu||_2, dominated by the largest eigenvalues.
    """
    if eigs.shape != reference.shape:
        raise ConfigError(f"spectra of different sizes: {tuple(eigs.shape)} and "
                          f"{tuple(reference.shape)}")
    a = eigs.double().sort(descending=True).values
    b = reference.double().sort(descending=True).values
    if kind == "relative":
        return float((a - b).norm() / b.norm())
    if kind == "log":
        low = floor * float(b.max())
        return float((a.clamp_min(low).log() - b.clamp_min(low).log()).pow(2).mean().sqrt())
    raise ConfigError(f"kind must be 'log' or 'relative', not {kind!r}")
