"""Reports: a results table (CSV, Markdown), accuracy-vs-sparsity plots with the paper's
numbers overlaid, per-layer density plots, NTK spectra, layer-collapse flags, and one
self-contained HTML page gathering them. ``ntksap report`` is the command-line form."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .. import rundir
from ..atomic import atomic_text, write_bytes_atomic, write_text_atomic
from ..errors import ConfigError
from ..runners import is_baseline
from .collapse import analyse, collapsed, path_check
from .overlap import check_sparsity as check_overlap_sparsity
from .overlap import overlap_figure
from .paper import REFERENCES, Reference, reference
from .records import Point, load_points, setting_of, variant_labels
from .table import Row, aggregate, markdown, not_reported, write_csv

DENSITY_PANELS = 8  # method panels per density figure


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out_dir: Path
    html: Path
    csv: Path
    markdown: Path
    collapse_csv: Path
    figures: list[Path] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)


SPARSITY_AXES = ("nominal", "effective")


def build_report(source: str | Path, out_dir: str | Path, *, sweep: str | None = None,
                 title: str = "NTK-SAP reproduction report",
                 sparsity_axis: str = "nominal", overlap_sparsity: float | None = None
                 ) -> Report:
    """Read the runs of ``source`` (a results store or a folder of run directories) and write
    ``results.csv``, ``results.md``, ``collapse.csv``, ``figures/*.png`` and the
    self-contained ``index.html`` to ``out_dir``. Everything is checked before ``out_dir`` is
    created: a source with no run is an error (nothing to report). ``sparsity_axis``: plot
    accuracy against the nominal or the effective sparsity (:mod:`ntksap.effective`)."""
    from . import html, plots

    check_overlap_sparsity(overlap_sparsity)
    if sparsity_axis not in SPARSITY_AXES:
        raise ConfigError(f"sparsity axis {sparsity_axis!r}: choose one of "
                          f"{', '.join(SPARSITY_AXES)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder for the report (it is "
                          "created if missing)")
    points = load_points(source, sweep)
    if not points:
        raise ConfigError(f"nothing to report: {_no_runs(Path(source), sweep)}")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for p in points:
        if p.status == "done":
            p.collapse = analyse(p)
    rows = aggregate(points)
    report = Report(out, out / "index.html", out / "results.csv", out / "results.md",
                    out / "collapse.csv", rows=rows, points=points)
    write_csv(rows, report.csv)
    write_text_atomic(report.markdown, markdown(rows) + not_reported(points))
    _write_collapse(points, report.collapse_csv)

    done = [p for p in points if p.status == "done"]
    labels = variant_labels(done)
    figures: list[html.Figure] = []
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [p for p in done if setting_of(p) == setting]
        slug = html.slug(setting)
        figures.append(html.Figure(
            setting, "Accuracy vs " + ("effective " if sparsity_axis == "effective" else "")
            + "sparsity",
            "Best-epoch test accuracy, mean ± std over seeds; hollow markers on dotted lines: "
            "the paper's numbers; red circles: runs with layer collapse."
            + (" Points at their effective sparsity (kept weights on no input-output path "
               "counted as pruned), ticks and the paper's numbers at the nominal one."
               if sparsity_axis == "effective" else ""),
            plots.accuracy_plot(setting, rows, mine, sparsity_axis), f"{slug}-accuracy.png"))
        curves = learning_curves(mine, labels)
        if curves:
            figures.append(html.Figure(
                setting, "Learning curves", "Test accuracy and training loss after each epoch, "
                "one line per run (drawn for settings of at most "
                f"{MAX_CURVES} finished runs).", plots.curves_plot(setting, curves),
                f"{slug}-curves.png"))
        by_variant: dict[str, list[Point]] = {}
        for p in mine:
            if not is_baseline(p.method) and p.densities:
                by_variant.setdefault(labels[p.key], []).append(p)
        names = list(by_variant)
        for part, start in enumerate(range(0, len(names), DENSITY_PANELS)):
            chunk = {n: by_variant[n] for n in names[start:start + DENSITY_PANELS]}
            figures.append(html.Figure(
                setting, "Per-layer density" + (f" ({part + 1})" if len(names) >
                                                DENSITY_PANELS else ""),
                "Fraction of each layer's weights kept (log scale), one line per sparsity; a "
                "red cross marks a layer left with no weight (layer collapse).",
                plots.density_plot(setting, chunk), f"{slug}-density-{part + 1}.png"))
        spectra: dict[str, list[Point]] = {}
        for p in mine:
            if p.spectrum:
                spectra.setdefault(labels[p.key], []).append(p)
        if spectra:
            figures.append(html.Figure(
                setting, "NTK spectra", "Eigenvalues of the empirical NTK at initialization, "
                "largest first; dashed: the dense network.",
                plots.spectrum_plot(setting, spectra), f"{slug}-spectrum.png"))
        heatmap = overlap_figure(mine, labels, overlap_sparsity)
        if heatmap is not None:
            figures.append(html.Figure(
                setting, "Mask overlap", "Jaccard overlap of the kept weights between method "
                f"variants at sparsity {100 * heatmap.sparsity:.2f} %, seed {heatmap.seed} "
                "(1: the same weights kept; ntksap report --overlap-sparsity picks another).",
                heatmap.png, f"{slug}-overlap.png"))
    for fig in figures:
        path = out / "figures" / fig.filename
        write_bytes_atomic(path, fig.png)
        report.figures.append(path)
    write_text_atomic(report.html, html.page(title, str(source), points, rows, figures))
    return report


MAX_CURVES = 24  # learning curves are drawn for settings of at most this many finished runs


def learning_curves(points: list[Point], labels: dict[str, str]) -> dict[str, list[dict]]:
    """Each finished run's per-epoch records, by ``"<variant> <sparsity> % seed <seed>"``
    ({} for a setting of more than :data:`MAX_CURVES` runs or without records)."""
    if len(points) > MAX_CURVES:
        return {}
    return {f"{labels[p.key]} {100 * p.sparsity:g} % seed {p.seed}": p.metrics
            for p in points if p.metrics}


def _no_runs(source: Path, sweep: str | None) -> str:
    if source.is_dir():
        return (f"no run directories (folders with a {rundir.CONFIG}) under {str(source)!r}; give "
                "the folder ntksap run or ntksap sweep wrote to (--out-dir), or a sweep's .db")
    return (f"the results store {str(source)!r} has no runs"
            + (f" in sweep {sweep!r}" if sweep else "") + "; run ntksap sweep first")


def _write_collapse(points: list[Point], path: Path) -> None:
    with atomic_text(path) as f:
        writer = csv.writer(f)
        writer.writerow(["key", "setting", "method", "sparsity", "seed", "collapsed",
                         "dead_layers", "disconnected", "effective_density"])
        for p in points:
            if p.collapse is None:
                continue
            c = p.collapse
            writer.writerow([p.key, setting_of(p), p.method, f"{p.sparsity:.6f}", p.seed,
                             int(collapsed(c)), ";".join(c["layers"]),
                             "" if c.get("disconnected") is None else int(c["disconnected"]),
                             "" if c.get("effective_density") is None
                             else f"{c['effective_density']:.6f}"])


__all__ = [
    "REFERENCES", "Point", "Reference", "Report", "Row", "aggregate", "analyse",
    "build_report", "collapsed", "learning_curves", "load_points", "markdown", "path_check",
    "reference", "variant_labels",
]
