"""The tables and figures of docs/results/cifar10-short.md and cifar10-paper-recipe.md.

Reads every run directory under each ROOT (``ntksap run``/``sweep`` out-dirs), groups the runs
by (preset, method, precision) and prints Markdown:

- per group: n, the **last-epoch** test accuracy as mean +- 95 % interval (Student t, n - 1
  degrees of freedom; these presets hold out no validation split, so the last epoch is the
  one number chosen without looking at the test set) and, beside it and named so, the
  best-epoch test accuracy (selected on the test set, as the NTK-SAP paper reports);
- the ranking: which groups' intervals lie wholly above which (an ordering is claimed only
  where the 95 % intervals do not overlap; every other pair is a tie);
- bf16 against float32 for each method run in both: the difference of means with Welch's 95 %
  interval, and whether it excludes 0;
- per run: epochs reached (of the preset's), wall time of training, seconds per epoch.

With ``--figure PATH`` it also draws the learning curves (test accuracy per epoch, one line per
run). Unfinished runs count in the per-run list and the curves, not in the statistics.

    python docs/results/scripts/cifar10_tables.py runs-cifar10-short [--figure out.png]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ntksap import rundir
from ntksap.stats import interval, separated, t975


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """(mean(a) - mean(b), half-width of Welch's 95 % interval); both need n >= 2."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return diff, 0.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, t975(df) * math.sqrt(va + vb)


@dataclass
class Run:
    """One run directory as the pages need it."""

    directory: Path
    preset: str
    method: str
    seed: int
    precision: str
    epochs: int  # the recipe's
    metrics: list[dict] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return len(self.metrics) == self.epochs

    @property
    def last(self) -> float:
        return 100 * self.metrics[-1]["test_acc"]

    @property
    def best(self) -> float:
        return 100 * max(r["test_acc"] for r in self.metrics)

    @property
    def seconds(self) -> float:
        return sum(r["seconds"] for r in self.metrics)


def read_runs(root: Path) -> list[Run]:
    """Every run directory under ``root`` that has trained at least one epoch."""
    runs = []
    for directory in rundir.config_dirs(root):
        record = rundir.read_config(directory)
        config = record["config"]
        metrics = rundir.read_metrics(directory)
        if not metrics:
            continue
        precision = record.get("precision") or (
            "bfloat16-autocast" if config["train"]["amp"] else "float32")
        runs.append(Run(directory, config["preset"], config["method"], config["seed"],
                        "bf16" if precision.startswith("bfloat16") else "fp32",
                        config["train"]["epochs"], metrics))
    return sorted(runs, key=lambda r: (r.preset, r.method, r.precision, r.seed))


def groups(runs: list[Run]) -> dict[tuple[str, str, str], list[Run]]:
    out: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.finished:
            out[(run.preset, run.method, run.precision)].append(run)
    return dict(out)


def _pm(mean: float, half: float | None) -> str:
    return f"{mean:.2f}" if half is None else f"{mean:.2f} ± {half:.2f}"


def accuracy_table(grouped: dict[tuple[str, str, str], list[Run]]) -> str:
    lines = ["| preset | method | precision | n | seeds | last epoch % (mean ± 95 % CI) | "
             "best epoch %, test-selected |",
             "|---|---|---|---|---|---|---|"]
    for (preset, method, precision), members in sorted(
            grouped.items(), key=lambda kv: -interval([r.last for r in kv[1]])[0]):
        last, best = interval([r.last for r in members]), interval([r.best for r in members])
        seeds = ",".join(str(r.seed) for r in members)
        lines.append(f"| {preset} | {method} | {precision} | {len(members)} | {seeds} | "
                     f"{_pm(*last)} | {_pm(*best)} |")
    return "\n".join(lines)


def ranking(grouped: dict[tuple[str, str, str], list[Run]]) -> str:
    """For each group, best mean first: the groups whose interval lies wholly below its own."""
    names = {key: f"{key[1]} ({key[2]})" for key in grouped}
    values = {key: [r.last for r in members] for key, members in grouped.items()}
    order = sorted(values, key=lambda k: -statistics.fmean(values[k]))
    lines = []
    for key in order:
        below = [names[o] for o in order if o != key and separated(values[key], values[o])
                 and statistics.fmean(values[key]) > statistics.fmean(values[o])]
        tied = [names[o] for o in order if o != key and not separated(values[key], values[o])]
        lines.append(f"- {names[key]}: above {', '.join(below) or 'none'}; tied with "
                     f"{', '.join(tied) or 'none'}")
    return "\n".join(lines)


def parity(grouped: dict[tuple[str, str, str], list[Run]]) -> str:
    lines = ["| preset | method | fp32 n | bf16 n | bf16 - fp32, last epoch (95 % Welch CI) | "
             "differs? |", "|---|---|---|---|---|---|"]
    for (preset, method, precision), bf16 in sorted(grouped.items()):
        fp32 = grouped.get((preset, method, "fp32"))
        if precision != "bf16" or not fp32 or len(fp32) < 2 or len(bf16) < 2:
            continue
        diff, half = welch([r.last for r in bf16], [r.last for r in fp32])
        verdict = "yes" if abs(diff) > half else "no (0 inside the interval)"
        lines.append(f"| {preset} | {method} | {len(fp32)} | {len(bf16)} | "
                     f"{diff:+.2f} ± {half:.2f} | {verdict} |")
    return "\n".join(lines)


def per_run(runs: list[Run]) -> str:
    lines = ["| run | precision | epochs | last epoch % | best epoch % (test-selected, epoch) | "
             "training time | s per epoch (median) |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        best_epoch = max(run.metrics, key=lambda r: r["test_acc"])["epoch"]
        per_epoch = statistics.median(r["seconds"] for r in run.metrics)
        lines.append(f"| {run.method} seed {run.seed} ({run.preset}) | {run.precision} | "
                     f"{len(run.metrics)}/{run.epochs} | {run.last:.2f} | "
                     f"{run.best:.2f} ({best_epoch}) | {run.seconds / 3600:.2f} h | "
                     f"{per_epoch:.0f} |")
    return "\n".join(lines)


def figure(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        epochs = [r["epoch"] for r in run.metrics]
        label = f"{run.method} s{run.seed} {run.precision}"
        style = "-" if run.precision == "bf16" else "--"
        acc.plot(epochs, [100 * r["test_acc"] for r in run.metrics], style, label=label)
        loss.plot(epochs, [r["loss"] for r in run.metrics], style, label=label)
    acc.set(xlabel="epoch", ylabel="test accuracy %", title="test accuracy")
    loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
    acc.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="run folders (out-dirs)")
    parser.add_argument("--figure", type=Path, default=None, help="learning curves PNG")
    parser.add_argument("--json", action="store_true", help="the per-group numbers as JSON")
    args = parser.parse_args(argv)
    runs = [run for root in args.roots for run in read_runs(root)]
    grouped = groups(runs)
    if args.json:
        print(json.dumps({"/".join(k): {"n": len(v), "last": interval([r.last for r in v]),
                                        "best": interval([r.best for r in v])}
                          for k, v in grouped.items()}))
        return
    if grouped:
        print("### Accuracy\n\n" + accuracy_table(grouped))
        print("\n### Ranking (ordered only where the 95 % intervals separate)\n\n"
              + ranking(grouped))
    else:
        print("### Accuracy\n\nNo run has finished yet.")
    table = parity(grouped)
    if table.count("\n") > 1:
        print("\n### bf16 against float32\n\n" + table)
    print("\n### Runs\n\n" + per_run(runs))
    if args.figure:
        figure(runs, args.figure)


if __name__ == "__main__":
    main()
