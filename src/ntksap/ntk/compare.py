"""Dense against pruned: the spectra of the NTK of one network and of its masked versions, in
one figure and one table (the paper's spectrum figure, reference section 7)."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputShapeError
from ..masks import Masks
from .kernel import empirical_ntk
from .memory import DEFAULT_BUDGET
from .plots import plot_spectra, write_columns, write_table
from .spectrum import eigenvalues, spectrum_distance, spectrum_summary

DENSE_NETWORK = "dense"  # the unpruned network's label among the compared networks


@dataclass
class SpectrumComparison:
    """Eigenvalues by label (the dense network first) and one table row per network."""

    eigenvalues: dict[str, torch.Tensor]
    rows: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)


def mask_label(masks: Masks, fallback: str) -> str:
    """``"ntksap 98.2%"`` from a mask file's metadata, else ``fallback``."""
    method = masks.meta.get("method")
    if not method:
        return fallback
    extra = masks.meta.get("transform")
    return f"{method}{'+' + extra if extra else ''} {100 * masks.sparsity:.1f}%"


def finite(row: dict[str, Any]) -> dict[str, Any]:
    """A table row for JSON: infinite or NaN numbers (a singular kernel's condition number)
    become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in row.items()}


def check_inputs(model: nn.Module, count: int, shape: tuple[int, ...],
                 device: str | torch.device = "cpu",
                 expected: tuple[int, ...] | None = None) -> None:
    """Refuse ``count`` inputs of shape ``shape`` (one example) that ``model`` cannot take:
    :class:`ConfigError` for a count or a size below 1, :class:`InputShapeError` (with the
    model's own complaint, and the ``expected`` shape if known) for a shape its forward pass
    rejects."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"the number of inputs (--inputs) must be >= 1; got {count!r}")
    if not shape or any(size < 1 for size in shape):
        raise ConfigError(f"an input shape (--input-shape) needs sizes >= 1; got {shape}")
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device))
    except (RuntimeError, ValueError, IndexError) as err:
        hint = f" {tuple(expected)}" if expected else ""
        raise InputShapeError(f"the model cannot take inputs of shape {tuple(shape)} (one "
                              f"example): {str(err).splitlines()[0]}; give the shape it "
                              f"expects{hint}, or leave --input-shape out") from err
    finally:
        model.train(mode)


def compare_spectra(model: nn.Module, masks: Mapping[str, Masks], inputs: torch.Tensor, *,
                    params: str = "all", float64: bool = True,
                    memory_budget: str | int | float = DEFAULT_BUDGET,
                    progress: bool = False) -> SpectrumComparison:
    """The NTK spectrum of ``model`` (dense, as given) and of a copy of it under each of
    ``masks`` (by label), all on the same ``inputs``: summary rows with the distance of each
    spectrum to the dense one (:func:`.spectrum.spectrum_distance`, both kinds)."""
    networks: dict[str, nn.Module] = {DENSE_NETWORK: model}
    for label, m in masks.items():
        m.check(model)
        networks[label] = m.apply(copy.deepcopy(model))
    spectra: dict[str, torch.Tensor] = {}
    rows = []
    for label, net in networks.items():
        kernel = empirical_ntk(net, inputs, params=params, memory_budget=memory_budget,
                               progress=progress)
        eigs = eigenvalues(kernel, float64=float64).cpu()
        del kernel
        spectra[label] = eigs
        density = masks[label].density if label in masks else 1.0
        rows.append({"network": label, "sparsity": 1.0 - density, **spectrum_summary(eigs)})
    for row in rows:
        eigs, dense = spectra[row["network"]], spectra[DENSE_NETWORK]
        row["log_distance_to_dense"] = spectrum_distance(eigs, dense, "log")
        row["relative_distance_to_dense"] = spectrum_distance(eigs, dense, "relative")
    return SpectrumComparison(spectra, rows)


def write_comparison(comparison: SpectrumComparison, out_dir: str | os.PathLike,
                     title: str | None = None) -> dict[str, str]:
    """``spectrum.png`` (the figure), ``spectrum.csv`` / ``spectrum.md`` (the table) and
    ``eigenvalues.csv`` (one column per network) in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    figure = plot_spectra(comparison.eigenvalues, out / "spectrum.png", title)
    table_csv, table_md = write_table(comparison.rows, out / "spectrum")
    eig_csv = write_columns(comparison.eigenvalues, out / "eigenvalues.csv")
    comparison.files = {"figure": str(figure), "table_csv": str(table_csv),
                        "table_md": str(table_md), "eigenvalues": str(eig_csv)}
    return comparison.files
