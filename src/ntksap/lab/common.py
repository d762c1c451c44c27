"""Shared pieces of the theory lab: results, kernel eigen-decompositions, plain GD."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError


@dataclass
class LabResult:
    """An experiment's numbers (``summary``: JSON-ready), arrays and figure path."""

    experiment: str
    summary: dict[str, Any]
    arrays: dict[str, Any] = field(default_factory=dict)
    figure: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment,
                "figure": str(self.figure) if self.figure else None, **self.summary}


def eigh_desc(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (largest first) and eigenvectors (columns) of a symmetric kernel, float64."""
    values, vectors = torch.linalg.eigh(kernel.double())
    return values.flip(0), vectors.flip(1)


def gradient_descent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
                     record: Callable[[int, nn.Module], None] | None = None,
                     progress: bool = False, desc: str = "gradient descent") -> torch.Tensor:
    """Full-batch gradient descent on L = 1/2 sum_i (f(x_i) - y_i)^2 (the loss whose gradient
    flow gives du/dt = -K u). Returns the training loss before each step and after the last
    one (steps + 1 values); ``record(step, model)`` runs before each step and at the end."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # gradient buffers allocated once (large layers: no page faults per step)
        p.grad = torch.zeros_like(p)
    losses = torch.empty(steps + 1, dtype=torch.float64)
    for step in tqdm(range(steps + 1), desc=desc, disable=not progress, leave=False):
        if record is not None:
            record(step, model)
        residual = model(x) - y
        loss = 0.5 * residual.pow(2).sum()
        losses[step] = float(loss.detach())
        if step == steps:
            break
        for p in params:
            p.grad.zero_()
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr)
    for p in params:
        p.grad = None
    return losses


def output_dir(out_dir: str | os.PathLike | None) -> Path | None:
    if out_dir is None:
        return None
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_options(out_dir: str | os.PathLike | None, counts: dict[str, Any],
                  scales: dict[str, Any] | None = None) -> None:
    """Refuse, before any work, an ``out_dir`` that is a file, a count (width, points,
    steps...) below 1 and a scale (std, lr_scale) that is not a positive finite number; the
    message names the option as its command-line flag."""
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError(f"--out {str(out_dir)!r} is a file; give a folder for the figure "
                          "(created if missing)")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{_flag(name)} must be an integer >= 1; got {value!r}")
    for name, value in (scales or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                value > 0 and math.isfinite(value)):
            raise ConfigError(f"{_flag(name)} must be a positive number; got {value!r}")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"
