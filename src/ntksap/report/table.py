"""The results table: per setting x method variant x sparsity, the validation-selected test
accuracy (mean +- 95 % t-interval, runs with a hold-out) or the best epoch's (mean +- std), with the
paper's number where it gives one and the runs flagged for layer collapse or divergence."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_text
from ..markdown import escape
from ..methods import METHODS
from ..runners import is_baseline
from ..stats import interval
from .collapse import collapsed
from .paper import PAPER_SETTINGS, PaperSetting, Reference, reference
from .records import (
    OPTION,
    Point,
    setting_of,
    variant_labels,
    varying_options,
)

METHOD_ORDER = ("dense", "random", "magnitude", "snip", "iter_snip", "grasp", "synflow",
                "ntksap", "force", "imp")


@dataclass
class Row:
    """One cell group of the table: accuracies in %, std over seeds (0 for one seed)."""

    setting: str
    variant: str
    method: str
    sparsity: float  # %
    n: int
    best_mean: float
    best_std: float
    final_mean: float
    final_std: float
    paper: float | None
    paper_approx: bool
    collapsed: int
    disconnected: int
    effective_density: float | None  # %, mean over seeds where checked
    seeds: str
    effective_sparsity: float | None = None  # %, mean over seeds where known
    options: dict[str, Any] = field(default_factory=dict)  # the method options that vary
    diverged: int = 0  # runs whose training diverged: not in n, nor in the means (NaN if n = 0)
    # the test accuracy at each run's validation-selected epoch (runs with a hold-out only):
    # mean, half-width of its 95 % t-interval (None for one run) and the number of runs
    val_mean: float | None = None
    val_half: float | None = None
    val_n: int = 0
    # parameters and multiply-adds of one forward pass (ntksap.cost), mean over the runs that
    # recorded them (runs made before the counts: None)
    params_sparse: float | None = None
    flops_dense: float | None = None
    flops_sparse: float | None = None
    flops_effective: float | None = None


def _order(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def aggregate(points: list[Point]) -> list[Row]:
    """The table's rows from the finished points and the diverged ones (counted, left out of
    the means: a cell whose every run diverged has NaN means and n = 0), sorted by setting,
    method, sparsity."""
    trained = [p for p in points if p.status == "done" and p.best_acc is not None
               or p.diverged_epoch is not None]
    labels = variant_labels(trained)
    varying = varying_options(trained)
    groups: dict[tuple[str, str, float], list[Point]] = {}
    for p in trained:
        groups.setdefault((setting_of(p), labels[p.key], round(100 * p.sparsity, 2)),
                          []).append(p)
    rows = [_row(setting, variant, sparsity, members, varying)
            for (setting, variant, sparsity), members in groups.items()]
    rows.sort(key=lambda r: (r.setting, _order(r.method), r.variant, r.sparsity))
    return rows


def _row(setting: str, variant: str, sparsity: float, members: list[Point],
         varying: list[str]) -> Row:
    first = members[0]
    ok = [p for p in members if p.diverged_epoch is None]
    best = [100 * p.best_acc for p in ok]  # type: ignore[operator]
    final = [100 * (p.final_acc if p.final_acc is not None else p.best_acc)  # type: ignore[operator]
             for p in ok]
    ref = _paper(first)
    effective = [100 * p.collapse["effective_density"] for p in ok
                 if p.collapse and p.collapse.get("effective_density") is not None]
    pruned = [x for x in map(effective_sparsity, ok) if x is not None]
    return Row(
        setting, variant, first.method, sparsity, len(ok), _mean(best), _std(best),
        _mean(final), _std(final), ref.accuracy if ref else None, bool(ref and ref.approx),
        sum(collapsed(p.collapse) for p in ok),
        sum(bool(p.collapse and p.collapse.get("disconnected")) for p in ok),
        statistics.fmean(effective) if effective else None,
        ",".join(str(s) for s in sorted(p.seed for p in ok)),
        statistics.fmean(pruned) if pruned else None,
        {name: first.options[name] for name in varying if name in first.options},
        len(members) - len(ok), *_val_selected(ok), *_counts(ok))


def _counts(points: list[Point]) -> tuple[float | None, ...]:
    """(sparse parameters, dense, sparse and effective multiply-adds), each the mean over the
    points whose run recorded it."""
    def mean(kind: str, key: str) -> float | None:
        values = [p.cost[kind][key] for p in points
                  if p.cost and (p.cost.get(kind) or {}).get(key) is not None]
        return statistics.fmean(values) if values else None
    return (mean("params", "sparse"), mean("flops", "dense"), mean("flops", "sparse"),
            mean("flops", "effective"))


def _val_selected(points: list[Point]) -> tuple[float | None, float | None, int]:
    """(mean, 95 % half-width, n) of the validation-selected test accuracy in %."""
    selected = (p.val_selected_acc for p in points)
    values = [100 * acc for acc in selected if acc is not None]
    if not values:
        return None, None, 0
    mean, half = interval(values)
    return mean, half, len(values)


def effective_sparsity(point: Point) -> float | None:
    """A point's effective sparsity in % (Vysogorets and Kempe 2023, :mod:`ntksap.effective`):
    its run's record, else 100 - the report's path check's effective density, else None."""
    if point.effective_sparsity is not None:
        return 100 * point.effective_sparsity
    if is_baseline(point.method):
        return 0.0
    density = (point.collapse or {}).get("effective_density")
    return None if density is None else 100 * (1 - density)


def paper_setting(point: Point) -> PaperSetting | None:
    """The paper's setting a point reproduces (its preset's name, the paper's data and model),
    or None."""
    setting = PAPER_SETTINGS.get(point.preset)
    if setting is None or (point.config.get("dataset"), point.config.get("model")) != (
            setting.dataset, setting.model):
        return None
    return setting


def paper_variant(point: Point) -> tuple[str, str, int | None] | None:
    """(preset, method, rounds) under which the paper reports a point's configuration, or
    None: only the paper's data and model, the untransformed mask, the global scope and the
    method's options as the paper's runs set them (NTK-SAP: its R, the default eps);
    ``rounds`` is None for the paper's T, else the T ablation's."""
    setting = paper_setting(point)
    if setting is None or point.field("transform"):
        return None
    if (point.field("scope") or "global") != "global":
        return None
    paper_rounds, paper_options = setting.options_for(point.method)
    if point.options != paper_options:  # an option the paper's runs did not set
        return None
    default = paper_rounds or (METHODS[point.method].default_rounds
                               if point.method in METHODS else None)
    rounds = point.field("rounds")
    return point.preset, point.method, None if rounds in (None, 0, default) else rounds


def _paper(point: Point) -> Reference | None:
    key = paper_variant(point)
    return reference(key[0], key[1], point.sparsity, key[2]) if key else None


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _std(values: list[float]) -> float:
    if not values:
        return math.nan
    return statistics.stdev(values) if len(values) > 1 else 0.0


def write_csv(rows: list[Row], path: str | Path) -> None:
    """The long-format table, one row per setting x variant x sparsity, with a column
    ``method_options.NAME`` per method option that varies in the report."""
    options = sorted({name for row in rows for name in row.options})
    with atomic_text(path) as f:
        fields = [k for k in Row.__dataclass_fields__ if k != "options"]
        writer = csv.DictWriter(f, fieldnames=[*fields, *(OPTION + n for n in options)])
        writer.writeheader()
        for row in rows:
            values = {k: v for k, v in asdict(row).items() if k != "options"}
            values.update({OPTION + k: v for k, v in row.options.items()})
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                             for k, v in values.items()})


def cell(row: Row) -> str:
    """With validation-selected epochs (runs with a hold-out): their test accuracy's
    ``mean ± 95 % interval (n=k)``, then the test-selected best epoch's mean as ``[test-sel.
    m]``. Else ``mean ± std`` of the best-epoch accuracy (one seed: its accuracy alone, a
    standard deviation needs two). Then the seed count and the collapse and divergence
    flags."""
    if row.n == 0:
        return f"diverged ✗{row.diverged}"
    if row.val_mean is not None:
        text = f"{row.val_mean:.2f}"
        if row.val_half is not None:
            text += f" ± {row.val_half:.2f}"
        text += f" (n={row.val_n}) [test-sel. {row.best_mean:.2f}]"
    else:
        text = f"{row.best_mean:.2f}"
        if row.n != 1:
            text += f" ± {row.best_std:.2f} (n={row.n})"
    if row.collapsed:
        text += f" ⚠{row.collapsed}"
    if row.diverged:
        text += f" ✗{row.diverged}"
    if row.effective_sparsity is not None and row.effective_sparsity - row.sparsity >= 0.005:
        text += f" [eff. {row.effective_sparsity:.2f} %]"
    return text


def pivot(rows: list[Row]) -> dict[str, tuple[list[float], list[tuple[str, dict[float, str]]]]]:
    """Per setting: the sparsity columns and one line per variant (and per paper method)."""
    out = {}
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting]
        columns = sorted({r.sparsity for r in mine})
        lines: list[tuple[str, dict[float, str]]] = []
        for variant in dict.fromkeys(r.variant for r in mine):
            lines.append((variant, {r.sparsity: cell(r) for r in mine if r.variant == variant}))
        paper: dict[str, dict[float, str]] = {}
        for r in mine:
            if r.paper is not None:
                mark = "~" if r.paper_approx else ""
                paper.setdefault(f"{r.variant} (paper)", {})[r.sparsity] = f"{mark}{r.paper:.2f}"
        lines += list(paper.items())
        out[setting] = (columns, lines)
    return out


def markdown(rows: list[Row]) -> str:
    """Per setting, a method x sparsity table of best-epoch test accuracy (%)."""
    if not rows:
        return "No finished runs.\n"
    parts = ["Runs with a validation hold-out: test accuracy (%) at the epoch with the best "
             "validation accuracy, mean ± 95 % t-interval (n = runs), and beside it the "
             "test-selected best epoch's mean, named so. Runs without a hold-out: best-epoch "
             "test accuracy (%), mean ± std over seeds; n = number of seeds when "
             "not 1; ⚠k = k runs with layer collapse; ✗k = k runs whose training diverged "
             "(loss not finite; left out of the mean); [eff. x %]: the effective sparsity "
             "(kept weights on no input-output path counted as pruned), where it exceeds the "
             "column's; (paper) rows: the paper's numbers, ~ read off its figures.\n"]
    for setting, (columns, lines) in pivot(rows).items():
        mine = [r for r in rows if r.setting == setting]
        names = sorted({n for r in mine for n in r.options})  # the options that vary
        options = {r.variant: r.options for r in mine}
        parts.append(f"\n### {escape(setting)}\n")
        parts.append("| method | " + "".join(f"{escape(n)} | " for n in names)
                     + " | ".join(f"{c:.2f} %" for c in columns) + " |")
        parts.append("|---|" + "---|" * (len(names) + len(columns)))
        for name, cells in lines:
            given = options.get(name, {})
            parts.append(f"| {escape(name)} | "
                         + "".join(f"{escape(given.get(n, ''))} | " for n in names)
                         + " | ".join(cells.get(c, "") for c in columns) + " |")
    return "\n".join(parts) + "\n"


def not_reported(points: list[Point]) -> str:
    """Markdown lists of the diverged runs (counted ✗ in the table, with their epoch) and of
    the runs the table leaves out (failed, unfinished, unreadable) and unreadable files, each
    with its run directory and error; empty if none."""
    diverged = [f"- {escape(p.key)}: training loss not finite in epoch {p.diverged_epoch}"
                for p in points if p.diverged_epoch is not None]
    lines = []
    for p in points:
        if p.status != "done" and p.diverged_epoch is None:
            error = (p.error or "").strip().splitlines()
            where = f" in {escape(p.run_dir)}" if p.run_dir else ""
            lines.append(f"- {escape(p.key)} ({p.status}){where}"
                         + (f": {escape(error[0])}" if error else ""))
        lines += [f"- {escape(p.key)}: unreadable file {escape(f)}" for f in p.unreadable]
    text = ""
    if diverged:
        text += "\n### Diverged runs (✗ in the table)\n\n" + "\n".join(diverged) + "\n"
    if lines:
        text += "\n### Runs not in the table, unreadable files\n\n" + "\n".join(lines) + "\n"
    return text
