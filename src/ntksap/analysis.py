"""Comparing masks: which weights two methods keep in common, where each puts its density,
and how far each pruned network's NTK spectrum lies from the dense one's.

    comparison = ntksap.analysis.compare_masks({"snip": a, "ntksap": b}, model=model,
                                               inputs=torch.randn(20, 3, 32, 32))
    comparison.pairs[0]["jaccard"]          # kept weights in common / kept by either
    ntksap.analysis.write_comparison(comparison, "out/")   # masks.png, masks.md, *.csv

Overlap of two masks A and B (the kept weights) is the Jaccard index |A and B| / |A or B|,
per layer and over all prunable weights: 1 for identical masks, 0 for disjoint ones (a layer
that both masks prune entirely counts as identical, 1). The layer-wise shape of a mask is its
density against the layer's depth (its position among the prunable layers, in module order).
The NTK distances are those of :func:`ntksap.ntk.compare_spectra` (dense first, each mask
applied to a copy of the same initialization, on the same inputs).
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_text, write_text_atomic
from .errors import MaskMismatchError, NtksapError
from .markdown import escape
from .masks import Masks
from .ntk.compare import SpectrumComparison, compare_spectra, finite
from .ntk.plots import new_figure, save_figure


@dataclass
class MaskComparison:
    """Masks by label; ``pairs``: one dict per pair (``a``, ``b``, ``jaccard``, ``layers``:
    rows of ``layer``, ``jaccard``, ``kept_a``, ``kept_b``, ``both``); ``layers``: one row
    per prunable layer (``layer``, ``depth``, ``weights``, ``density`` by label); ``spectra``
    when a model was given."""

    masks: dict[str, Masks]
    pairs: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    spectra: SpectrumComparison | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.masks)

    def matrix(self, key: str = "jaccard") -> np.ndarray:
        """The total Jaccard overlap of every pair of masks (``key="random_jaccard"``: the
        random-mask baseline of each pair), labels x labels (1 on the diagonal)."""
        index = {label: i for i, label in enumerate(self.labels)}
        out = np.eye(len(index))
        for pair in self.pairs:
            i, j = index[pair["a"]], index[pair["b"]]
            out[i, j] = out[j, i] = pair[key]
        return out

    def summary(self) -> list[dict[str, Any]]:
        """One row per mask: method, sparsity, density and the NTK distances to dense."""
        distances = {r["network"]: r for r in self.spectra.rows} if self.spectra else {}
        rows = []
        for label, m in self.masks.items():
            row = {"mask": label, "method": m.meta.get("method", ""), "sparsity": m.sparsity,
                   "kept": m.remaining, "weights": m.total}
            if label in distances:
                row["ntk_log_distance_to_dense"] = distances[label]["log_distance_to_dense"]
                row["ntk_relative_distance_to_dense"] = distances[label][
                    "relative_distance_to_dense"]
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object: ``masks`` (the summary), ``pairs`` and ``layers``."""
        return {"masks": [finite(r) for r in self.summary()], "pairs": self.pairs,
                "layers": self.layers, "files": self.files}


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a and b| / |a or b| of two boolean masks; 1.0 when both are empty."""
    return _ratio(int((a & b).sum()), int((a | b).sum()))


def overlap(a: Masks, b: Masks) -> dict[str, Any]:
    """The Jaccard overlap of two masks over all their weights and per layer, each beside
    ``random_jaccard``: the overlap two independent uniformly random masks with the same
    kept count per layer would have, E|a and b| / E|a or b| with E|a and b| = k_a k_b / n per
    layer (n weights). Overlaps are only comparable across sparsities against it: two
    random masks at density d overlap by about d / (2 - d)."""
    check_same_layers({"a": a, "b": b})
    layers = []
    both_total = either_total = chance_both = chance_either = 0.0
    for name in a:
        ma, mb = a[name], b[name]
        both, either = int((ma & mb).sum()), int((ma | mb).sum())
        kept_a, kept_b = int(ma.sum()), int(mb.sum())
        expected = kept_a * kept_b / ma.numel()
        both_total, either_total = both_total + both, either_total + either
        chance_both += expected
        chance_either += kept_a + kept_b - expected
        layers.append({"layer": name, "jaccard": both / either if either else 1.0,
                       "random_jaccard": _ratio(expected, kept_a + kept_b - expected),
                       "kept_a": kept_a, "kept_b": kept_b, "both": both})
    return {"jaccard": _ratio(both_total, either_total),
            "random_jaccard": _ratio(chance_both, chance_either), "layers": layers}


def _ratio(part: float, whole: float) -> float:
    """part / whole; 1.0 for two empty masks (which agree)."""
    return part / whole if whole else 1.0


def check_same_layers(masks: Mapping[str, Masks]) -> None:
    """Raise :class:`MaskMismatchError` unless every mask has the same layers and shapes."""
    labels = list(masks)
    first = masks[labels[0]]
    shapes = {n: tuple(m.shape) for n, m in first.items()}
    for label in labels[1:]:
        other = {n: tuple(m.shape) for n, m in masks[label].items()}
        if other != shapes:
            missing = sorted(set(shapes) ^ set(other))
            wrong = [n for n in shapes if n in other and other[n] != shapes[n]]
            what = (f"layers {', '.join(missing[:4])} in one only" if missing else
                    f"layer {wrong[0]!r} shaped {shapes[wrong[0]]} and {other[wrong[0]]}")
            raise MaskMismatchError(
                f"masks {labels[0]!r} and {label!r} are not for the same network ({what}); "
                "compare masks made for one model definition")


def compare_masks(masks: Mapping[str, Masks], *, model: nn.Module | None = None,
                  inputs: torch.Tensor | None = None, memory_budget: str | int | float = "2GiB",
                  progress: bool = False) -> MaskComparison:
    """Pairwise overlaps, per-layer densities and, with ``model`` and ``inputs``, the NTK
    spectrum of each masked copy of ``model`` against the dense one."""
    if len(masks) < 2:
        raise NtksapError(f"comparing masks needs at least two; got {len(masks)}")
    check_same_layers(masks)
    labels = list(masks)
    pairs = [{"a": a, "b": b, **overlap(masks[a], masks[b])}
             for a, b in itertools.combinations(labels, 2)]
    layers = [{"layer": name, "depth": depth, "weights": mask.numel(),
               "density": {label: int(masks[label][name].sum()) / mask.numel()
                           for label in labels}}
              for depth, (name, mask) in enumerate(masks[labels[0]].items())]
    spectra = None
    if model is not None:
        if inputs is None:
            raise NtksapError("the NTK comparison needs inputs (one batch shaped like the "
                              "model's) along with the model")
        spectra = compare_spectra(model, dict(masks), inputs, memory_budget=memory_budget,
                                  progress=progress)
    return MaskComparison(dict(masks), pairs, layers, spectra)


# ----- the table and the figure

def write_comparison(comparison: MaskComparison, out_dir: str | os.PathLike,
                     title: str | None = None) -> dict[str, str]:
    """``masks.png`` (the figure), ``masks.md`` (the tables), ``masks.csv`` (per-layer
    densities and overlaps, one row per layer and a total row) and ``pairs.csv`` (each
    pair's overlap per layer and in total) in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"figure": str(plot_comparison(comparison, out / "masks.png", title)),
             "table_md": str(_write_markdown(comparison, out / "masks.md")),
             "layers_csv": str(_write_layers(comparison, out / "masks.csv")),
             "pairs_csv": str(_write_pairs(comparison, out / "pairs.csv"))}
    comparison.files = files
    return files


def plot_comparison(comparison: MaskComparison, path: str | os.PathLike,
                    title: str | None = None) -> Path:
    """Overlap heatmap, density against depth (log scale) and, with spectra, the NTK
    spectrum distance to dense, side by side."""
    panels = 3 if comparison.spectra else 2
    fig, axes = new_figure(columns=panels, size=(5.4, 4.6))
    overlap_heatmap(axes[0], comparison.labels, comparison.matrix(),
                    comparison.matrix("random_jaccard"))
    _shape_plot(axes[1], comparison)
    if comparison.spectra:
        _distance_plot(axes[2], comparison)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def overlap_heatmap(ax: Any, labels: list[str], matrix: np.ndarray,
                    baseline: np.ndarray | None = None) -> None:
    """Jaccard overlaps as a labelled heatmap (0 white, 1 dark), values written in, each
    off-diagonal cell over its random-mask baseline ("r ...") when given."""
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i, j in itertools.product(range(len(labels)), repeat=2):
        text = f"{matrix[i, j]:.2f}"
        if baseline is not None and i != j:
            text += f"\nr {baseline[i, j]:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=6 if "\n" in text else 7,
                color="white" if matrix[i, j] > 0.6 else "black")
    ax.set_title("overlap of kept weights (Jaccard; r: random masks)")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def _shape_plot(ax: Any, comparison: MaskComparison) -> None:
    from matplotlib.ticker import MaxNLocator

    depth = [r["depth"] for r in comparison.layers]
    floor = 1e-3
    for label in comparison.labels:
        density = [max(100 * r["density"][label], floor) for r in comparison.layers]
        ax.plot(depth, density, marker=".", linewidth=1.2, label=label)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("prunable layer (depth)")
    ax.set_ylabel("density % (layers with none at the bottom)")
    ax.set_title("layer-wise shape")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")


def _distance_plot(ax: Any, comparison: MaskComparison) -> None:
    rows = comparison.summary()
    ax.bar(range(len(rows)), [r.get("ntk_log_distance_to_dense", math.nan) for r in rows])
    ax.set_xticks(range(len(rows)), [r["mask"] for r in rows], rotation=45, ha="right",
                  fontsize=8)
    ax.set_ylabel("RMS log-ratio of sorted eigenvalues")
    ax.set_title("NTK spectrum distance to dense")
    ax.grid(True, axis="y", alpha=0.3)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return escape(value)


def _markdown(header: list[str], rows: list[list[Any]]) -> list[str]:
    return (["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def _write_markdown(comparison: MaskComparison, path: Path) -> Path:
    labels, matrix = comparison.labels, comparison.matrix()
    summary = comparison.summary()
    keys = list(summary[0])
    lines = ["Overlap of kept weights (Jaccard, all prunable layers):", ""]
    lines += _markdown(["", *labels], [[a, *matrix[i]] for i, a in enumerate(labels)])
    lines += ["", "Each pair beside the overlap of two random masks with its per-layer kept "
              "counts (the overlap expected by chance):", ""]
    lines += _markdown(["a", "b", "Jaccard", "random masks", "ratio"],
                       [[p["a"], p["b"], p["jaccard"], p["random_jaccard"],
                         p["jaccard"] / p["random_jaccard"] if p["random_jaccard"] else
                         math.nan] for p in comparison.pairs])
    lines += ["", "Masks:", ""]
    lines += _markdown(keys, [[r.get(k, "") for k in keys] for r in summary])
    lines += ["", "Density (%) by layer:", ""]
    lines += _markdown(["depth", "layer", "weights", *labels],
                       [[r["depth"], r["layer"], r["weights"],
                         *(100 * r["density"][label] for label in labels)]
                        for r in comparison.layers])
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _write_layers(comparison: MaskComparison, path: Path) -> Path:
    labels = comparison.labels
    per_pair = {(p["a"], p["b"]): {r["layer"]: r["jaccard"] for r in p["layers"]}
                for p in comparison.pairs}
    pair_names = [f"jaccard {a} ~ {b}" for a, b in per_pair]
    with atomic_text(path) as f:
        writer = csv.writer(f)
        writer.writerow(["depth", "layer", "weights", *(f"density {x}" for x in labels),
                         *pair_names])
        for r in comparison.layers:
            writer.writerow([r["depth"], r["layer"], r["weights"],
                             *(r["density"][x] for x in labels),
                             *(per_pair[key][r["layer"]] for key in per_pair)])
        writer.writerow(["", "total", comparison.masks[labels[0]].total,
                         *(comparison.masks[x].density for x in labels),
                         *(p["jaccard"] for p in comparison.pairs)])
    return path


def _write_pairs(comparison: MaskComparison, path: Path) -> Path:
    with atomic_text(path) as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "layer", "jaccard", "random_jaccard", "kept_a", "kept_b",
                         "both"])
        for p in comparison.pairs:
            for r in p["layers"]:
                writer.writerow([p["a"], p["b"], r["layer"], r["jaccard"], r["random_jaccard"],
                                 r["kept_a"], r["kept_b"], r["both"]])
            writer.writerow([p["a"], p["b"], "total", p["jaccard"], p["random_jaccard"], "",
                             "", ""])
    return path
