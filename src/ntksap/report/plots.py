"""The report's figures (matplotlib, Agg backend, PNG bytes): accuracy vs sparsity per setting
with the paper's numbers overlaid, learning curves, per-layer densities per method, NTK
spectra."""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..runners import is_baseline, label  # noqa: E402
from .paper import references  # noqa: E402
from .records import Point  # noqa: E402
from .table import METHOD_ORDER, Row, paper_variant  # noqa: E402

COLORS = {"dense": "#000000", "random": "#7f7f7f", "magnitude": "#8c564b", "snip": "#1f77b4",
          "iter_snip": "#17becf", "grasp": "#2ca02c", "synflow": "#9467bd", "ntksap": "#d62728",
          "force": "#bcbd22", "imp": "#ff7f0e"}
MARKERS = {"random": "v", "magnitude": "s", "snip": "o", "iter_snip": "D", "grasp": "^",
           "synflow": "P", "ntksap": "*", "force": "X", "imp": "h"}
STYLES = ("-", "--", ":", "-.")
FLOOR = 1e-3  # % density drawn for a collapsed layer on the log axis


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _sparsity_axis(ax: plt.Axes, ticks: Sequence[float], extent: Sequence[float] = (),
                   label: str = "sparsity") -> None:
    """x = sparsity %, spaced as the log of the remaining weights (the paper's grid is then
    evenly spaced), with a tick at every sparsity that has data; the view also spans
    ``extent`` (points drawn between the ticks)."""
    def forward(x: np.ndarray) -> np.ndarray:
        return -np.log10(np.clip(1 - np.asarray(x, dtype=float) / 100, 1e-6, None))

    def inverse(y: np.ndarray) -> np.ndarray:
        return 100 * (1 - 10 ** (-np.asarray(y, dtype=float)))

    ax.set_xscale("function", functions=(forward, inverse))
    ticks = sorted(t for t in set(ticks) if t > 0)
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:.2f}" for t in ticks], rotation=45, ha="right")
        right = max([ticks[-1], *(x for x in extent if x < 100)])
        ax.set_xlim(ticks[0] - 0.5 * (ticks[1] - ticks[0]) if len(ticks) > 1 else 0,
                    inverse(forward(right) + 0.1))
    ax.set_xlabel(f"{label} % (log scale of the remaining weights)")


def _style(variant: str, method: str, seen: dict[str, int]) -> dict[str, object]:
    index = seen.setdefault(method, 0)
    seen[method] += 1
    return {"color": COLORS.get(method, f"C{len(seen) % 10}"), "marker": MARKERS.get(method, "o"),
            "linestyle": STYLES[index % len(STYLES)]}


def accuracy_plot(setting: str, rows: list[Row], points: list[Point],
                  axis: str = "nominal") -> bytes:
    """Best-epoch test accuracy vs sparsity, mean +- std over seeds, one line per method
    variant; the paper's numbers for this setting as hollow markers on dotted lines. With
    ``axis="effective"`` each point sits at its effective sparsity (mean over seeds; the
    nominal one where unknown), the ticks and the paper's numbers at the nominal ones."""
    def x(row: Row) -> float:
        known = axis == "effective" and row.effective_sparsity is not None
        return row.effective_sparsity if known else row.sparsity  # type: ignore[return-value]

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    seen: dict[str, int] = {}
    ticks: list[float] = []
    mine = [r for r in rows if r.setting == setting and r.n > 0]  # not the diverged cells
    variants = sorted(dict.fromkeys(r.variant for r in mine),
                      key=lambda v: (_method_index(mine, v), v))
    for variant in variants:
        line = sorted((r for r in mine if r.variant == variant), key=lambda r: r.sparsity)
        method = line[0].method
        if is_baseline(method):
            mean = statistics.fmean(r.best_mean for r in line)
            ax.axhline(mean, color="black", linestyle="--", linewidth=1,
                       label=f"{label(method)} ({mean:.2f})")
            continue
        style = _style(variant, method, seen)
        xs = [x(r) for r in line]
        ticks += [r.sparsity for r in line]
        ax.errorbar(xs, [r.best_mean for r in line], yerr=[r.best_std for r in line],
                    capsize=3, markersize=7, linewidth=1.6, label=variant, **style)
        flagged = [r for r in line if r.collapsed]
        if flagged:
            ax.scatter([x(r) for r in flagged], [r.best_mean for r in flagged], s=160,
                       facecolors="none", edgecolors="red", linewidths=1.5, zorder=5)
    shown = set()
    for point in points:  # the paper's numbers for the configurations it reports
        key = paper_variant(point)
        if key is None or key in shown:
            continue
        shown.add(key)
        preset, method, rounds = key
        refs = [r for r in references(preset, method) if r.rounds == rounds]
        if not refs:
            continue
        if is_baseline(method):
            ax.axhline(refs[0].accuracy, color="black", linestyle=":", linewidth=1,
                       label=f"{label(method)} (paper, {refs[0].accuracy:.2f})")
            continue
        ticks += [r.sparsity for r in refs]
        name = label(method) + (f" T={rounds}" if rounds else "")
        ax.plot([r.sparsity for r in refs], [r.accuracy for r in refs], linestyle=":",
                marker=MARKERS.get(method, "o"), markerfacecolor="none", markersize=9,
                color=COLORS.get(method, "gray"), linewidth=1,
                label=f"{name} (paper{', approx.' if refs[0].approx else ''})")
    data = sorted({r.sparsity for r in mine if not is_baseline(r.method)})
    ticks = data + [t for t in ticks if all(abs(t - d) > 0.1 for d in data)]
    _sparsity_axis(ax, ticks, [x(r) for r in mine if not is_baseline(r.method)],
                   "effective sparsity" if axis == "effective" else "sparsity")
    ax.set_ylabel("test accuracy % (best epoch)")
    ax.set_title(setting, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _png(fig)


def curves_plot(setting: str, curves: dict[str, list[dict]]) -> bytes:
    """Test accuracy and training loss per epoch, one line per run (``curves``: a run's label
    -> its ``metrics.jsonl`` records)."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    seen: dict[str, int] = {}
    for name, records in curves.items():
        method = name.split()[0]
        style = {**_style(name, method, seen), "marker": None}
        epochs = [r["epoch"] for r in records]
        acc.plot(epochs, [100 * r["test_acc"] for r in records], label=name, **style)
        loss.plot(epochs, [r["loss"] for r in records], label=name, **style)
    acc.set_ylabel("test accuracy %")
    loss.set_ylabel("training loss")
    loss.set_yscale("log")
    for ax in (acc, loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc.set_title(setting, fontsize=10)
    acc.legend(fontsize=7, ncol=2)
    return _png(fig)


def _method_index(rows: list[Row], variant: str) -> int:
    method = next(r.method for r in rows if r.variant == variant)
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def density_plot(setting: str, by_variant: dict[str, list[Point]]) -> bytes:
    """Per-layer density (log scale) of every method variant, one panel each, one line per
    sparsity (seeds averaged); a layer left with no weight is a red cross at the bottom."""
    variants = [v for v, pts in by_variant.items() if any(p.densities for p in pts)]
    cols = 2 if len(variants) > 1 else 1
    rows_n = -(-len(variants) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.2 * cols, 3.1 * rows_n), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    for ax, variant in zip(axes.flat, variants, strict=False):
        pts = [p for p in by_variant[variant] if p.densities]
        sparsities = sorted({round(100 * p.sparsity, 2) for p in pts})
        cmap = plt.get_cmap("viridis")
        names: list[str] = []
        for i, s in enumerate(sparsities):
            same = [p for p in pts if round(100 * p.sparsity, 2) == s]
            names = [r["name"] for r in same[0].densities]
            dens = np.mean([[100 * r["density"] for r in p.densities] for p in same], axis=0)
            color = cmap(i / max(1, len(sparsities) - 1))
            x = np.arange(len(dens))
            ax.plot(x, np.maximum(dens, FLOOR), color=color, linewidth=1.2, marker=".",
                    label=f"{s:.2f}")
            dead = np.array([any(p.densities[j]["remaining"] == 0 for p in same)
                             for j in range(len(dens))])  # dead in any seed's network
            if dead.any():
                ax.scatter(x[dead], np.full(int(dead.sum()), FLOOR), marker="x", color="red",
                           s=40, zorder=5)
        ax.set_yscale("log")
        ax.set_ylim(FLOOR / 2, 150)
        step = max(1, len(names) // 24)
        ax.set_xticks(range(0, len(names), step))
        ax.set_xticklabels(names[::step], rotation=90, fontsize=6)
        ax.set_ylabel("density %", fontsize=8)
        ax.set_title(variant, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(title="sparsity %", fontsize=6, title_fontsize=6, ncol=2, loc="lower left")
    fig.suptitle(f"per-layer density: {setting} (red x: layer with no weight)", fontsize=10)
    return _png(fig)


def spectrum_plot(setting: str, by_variant: dict[str, list[Point]]) -> bytes:
    """NTK eigenvalues (descending, log scale) per sparsity panel, one line per variant (first
    seed), with the dense network's where it was computed."""
    pts = [p for ps in by_variant.values() for p in ps if p.spectrum]
    sparsities = sorted({round(100 * p.sparsity, 2) for p in pts})
    fig, axes = plt.subplots(1, len(sparsities), figsize=(4.6 * len(sparsities), 3.6),
                             squeeze=False, layout="constrained")
    dense = next((p.spectrum.get("dense_eigenvalues") for p in pts
                  if p.spectrum.get("dense_eigenvalues")), None)
    dense = dense or next((p.spectrum["eigenvalues"] for p in pts if is_baseline(p.method)), None)
    for ax, s in zip(axes.flat, sparsities, strict=True):
        if dense is not None and s > 0:
            ax.plot(sorted(dense, reverse=True), color="black", linestyle="--", label="dense")
        seen: dict[str, int] = {}
        for variant, group in by_variant.items():
            same = [p for p in group if p.spectrum and round(100 * p.sparsity, 2) == s]
            if not same:
                continue
            values = np.clip(sorted(same[0].spectrum["eigenvalues"], reverse=True), 1e-12, None)
            style = _style(variant, same[0].method, seen)
            ax.plot(values, color=style["color"], linestyle=style["linestyle"], label=variant)
        ax.set_yscale("log")
        ax.set_xlabel("index")
        ax.set_ylabel("NTK eigenvalue")
        ax.set_title(f"sparsity {s:.2f} %", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"NTK spectra: {setting}", fontsize=10)
    return _png(fig)
