"""Figures (matplotlib, Agg canvas: no display needed, no global pyplot state) and tables."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_text, save_figure_atomic, write_text_atomic
from ..markdown import escape


def new_figure(columns: int = 1, rows: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """A figure with a ``rows`` x ``columns`` grid of axes, drawn on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * columns, size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure_atomic(fig, path, dpi=130)
    return path


def plot_spectra(spectra: Mapping[str, torch.Tensor], path: str | os.PathLike,
                 title: str | None = None, floor: float = 1e-7) -> Path:
    """Sorted eigenvalue curves (largest first) on a log scale, one per network, in one plot.
    Eigenvalues below ``floor`` x the largest one (float32 rounding) are not drawn."""
    fig, (ax,) = new_figure(size=(7.0, 4.5))
    top = max(float(e.max()) for e in spectra.values())
    for i, (label, eigs) in enumerate(spectra.items()):
        values = eigs.double().sort(descending=True).values
        index = torch.arange(1, len(values) + 1)
        keep = values > floor * top
        style = {"color": "black", "linewidth": 2.2} if i == 0 else {"linewidth": 1.4}
        ax.plot(index[keep].numpy(), values[keep].numpy(), label=label, **style)
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index (sorted, largest first)")
    ax.set_ylabel("eigenvalue of the empirical NTK")
    ax.set_title(title or "NTK spectrum")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.6g}"
    return escape(value)


def write_table(rows: Sequence[Mapping[str, Any]], path_stem: str | os.PathLike
                ) -> tuple[Path, Path]:
    """Write ``rows`` (same keys) as ``<stem>.csv`` and a Markdown table ``<stem>.md``."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0]) if rows else []
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with atomic_text(csv_path) as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: _cell(r[k]) for k in keys} for r in rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows]
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def write_columns(columns: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write equal-length 1-D tensors as the columns of a CSV file (e.g. the eigenvalues)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    values = [columns[n].double().tolist() for n in names]
    with atomic_text(path) as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(zip(*values, strict=True))
    return path
