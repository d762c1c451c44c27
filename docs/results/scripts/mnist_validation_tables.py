"""The validation-selected MNIST tables of docs/results/mnist.md.

Reads every finished run directory under ROOT (``ntksap sweep`` out-dirs of runs made with a
hold-out, so that ``metrics.jsonl`` has ``val_acc`` every epoch) and prints Markdown:

- test error (%) at the **validation-selected epoch** (the epoch with the highest validation
  accuracy, the earliest on ties; the test set is never looked at to choose it), mean +- 95 %
  interval (Student t, n - 1 degrees of freedom) with n, one row per method, one column per
  sparsity; dense on its own line;
- beside it, named so, the same table with the test-selected (best) epoch;
- per sparsity, the methods tied for the lowest error: every method whose interval overlaps
  the best one's (an ordering is claimed only where intervals do not overlap).

    python docs/results/scripts/mnist_validation_tables.py results/mnist-validation
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ntksap import rundir
from ntksap.stats import interval, separated
from ntksap.train.loop import val_selected


@dataclass
class Run:
    method: str
    sparsity: float
    seed: int
    val_selected_error: float  # % at the validation-selected epoch
    test_selected_error: float  # % at the best epoch on the test set


def read_runs(root: Path) -> list[Run]:
    """The finished runs under ``root`` that validated every epoch."""
    runs = []
    for directory in rundir.config_dirs(root):
        config = rundir.read_config(directory)["config"]
        metrics = rundir.read_metrics(directory)
        if len(metrics) != config["train"]["epochs"]:
            continue
        epoch, test_acc = val_selected(metrics)
        if epoch is None:
            continue
        runs.append(Run(config["method"], float(config["sparsity"]), int(config["seed"]),
                        100 * (1 - test_acc), 100 * (1 - max(r["test_acc"] for r in metrics))))
    return runs


def _cell(values: list[float]) -> str:
    mean, half = interval(values)
    return f"{mean:.2f}" + ("" if half is None else f" ± {half:.2f}") + f" (n={len(values)})"


def table(runs: list[Run], field: str) -> str:
    by_cell: dict[tuple[str, float], list[float]] = defaultdict(list)
    for run in runs:
        by_cell[(run.method, run.sparsity)].append(getattr(run, field))
    sparsities = sorted({s for m, s in by_cell if m != "dense"})
    methods = sorted({m for m, _ in by_cell if m != "dense"},
                     key=lambda m: (m == "ntt", m))
    lines = ["| method | " + " | ".join(f"{100 * s:g} %" for s in sparsities) + " |",
             "|---|" + "---|" * len(sparsities)]
    for method in methods:
        cells = [_cell(by_cell[(method, s)]) if (method, s) in by_cell else "-"
                 for s in sparsities]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    dense = [v for (m, _), values in by_cell.items() if m == "dense" for v in values]
    if dense:
        lines.append(f"\nDense: {_cell(dense)} % test error.")
    return "\n".join(lines)


def tied_for_best(runs: list[Run]) -> str:
    """Per sparsity, the methods whose validation-selected interval is not separated from
    the lowest mean's."""
    by_cell: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.method != "dense":
            by_cell[run.sparsity][run.method].append(run.val_selected_error)
    lines = []
    for sparsity in sorted(by_cell):
        cells = {m: v for m, v in by_cell[sparsity].items() if len(v) > 1}
        if not cells:
            continue
        best = min(cells, key=lambda m: interval(cells[m])[0])
        tied = [m for m in sorted(cells) if m != best and not separated(cells[m], cells[best])]
        head = f"- {100 * sparsity:g} %: lowest mean {best}"
        if len(cells) == 1:
            lines.append(f"{head} (the only method with n >= 2: nothing to compare)")
        elif tied:
            lines.append(f"{head}; not separated from it: {', '.join(tied)}")
        else:
            lines.append(f"{head}, alone: every other interval lies above")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    runs = read_runs(args.root)
    print("Test error (%) at the validation-selected epoch, mean ± 95 % interval (n runs):\n")
    print(table(runs, "val_selected_error"))
    print("\nTied for the lowest error (intervals that overlap the best one's):\n")
    print(tied_for_best(runs))
    print("\nFor comparison only, the test-selected (best) epoch, as the tables above on this "
          "page report it:\n")
    print(table(runs, "test_selected_error"))


if __name__ == "__main__":
    main()
