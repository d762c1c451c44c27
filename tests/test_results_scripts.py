"""docs/results/scripts/cifar10_tables.py: the intervals, the ranking rule and the tables of the
CIFAR-10 results pages, checked against numbers worked out independently."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from ntksap.experiment import resolve, run_experiment
from ntksap.train import precision

ROOT = Path(__file__).resolve().parents[1]


def _script():
    path = ROOT / "docs" / "results" / "scripts" / "cifar10_tables.py"
    spec = importlib.util.spec_from_file_location("cifar10_tables", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cifar10_tables"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _t_mass(q: float, df: int, steps: int = 200_000) -> float:
    """P(|T| <= q) for Student's t with ``df`` degrees of freedom, by Simpson's rule on its
    density (written from the textbook formula, independently of the table)."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))

    def pdf(t: float) -> float:
        return c * (1 + t * t / df) ** (-(df + 1) / 2)

    h = q / steps
    total = pdf(0) + pdf(q) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, steps))
    return 2 * total * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 17, 30])
def test_the_t_table_leaves_95_percent_inside(df):
    assert _t_mass(_script().t975(df), df) == pytest.approx(0.95, abs=3e-4)


def test_interval_and_welch_by_hand():
    script = _script()
    mean, half = script.interval([1.0, 2.0, 3.0])  # sd 1, n 3: t_{0.975,2} / sqrt(3)
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert script.interval([5.0]) == (5.0, None)
    # a = [1, 3] (var 2), b = [2, 2, 5] (var 3): se^2 = 1 + 1 = 2,
    # df = 4 / (1/1 + 1/2) = 2.67 -> 2 (rounded down): t = 4.303
    diff, half = script.welch([1.0, 3.0], [2.0, 2.0, 5.0])
    assert diff == pytest.approx(2.0 - 3.0) and half == pytest.approx(4.303 * math.sqrt(2))


def test_an_ordering_needs_intervals_that_do_not_overlap():
    script = _script()
    assert script.separated([10.0, 10.2, 10.1], [8.0, 8.1, 7.9])
    assert not script.separated([10.0, 11.0, 9.0], [9.5, 9.6, 9.4])  # overlapping
    assert not script.separated([10.0], [1.0])  # one run gives no interval


def test_tables_from_real_runs(tmp_path, monkeypatch, capsys, one_thread):
    """Two seeds of dense in float32 and in bf16 (a bf16 CPU faked): the script finds the four
    runs, groups them by precision and prints their numbers."""
    monkeypatch.setattr(precision, "cpu_bf16_isa", lambda: "avx512_bf16")
    common = dict(dataset="synthetic", model="convnet", limit_per_class=10)
    summaries = {}
    for amp in (False, True):
        for seed in (0, 1):
            config = resolve("cifar10-resnet20", "dense", 0.0, seed=seed, **common,
                             train_overrides={"epochs": 2, "batch_size": 16, "amp": amp})
            summaries[amp, seed] = run_experiment(config, out_dir=tmp_path, progress=False)
    script = _script()
    runs = script.read_runs(tmp_path)
    assert sorted((r.precision, r.seed) for r in runs) == [
        ("bf16", 0), ("bf16", 1), ("fp32", 0), ("fp32", 1)]
    assert all(r.finished and len(r.metrics) == 2 for r in runs)
    grouped = script.groups(runs)
    last = [100 * summaries[True, s]["final_test_acc"] for s in (0, 1)]
    assert [r.last for r in grouped[("cifar10-resnet20", "dense", "bf16")]] == last
    script.main([str(tmp_path), "--figure", str(tmp_path / "curves.png")])
    out = capsys.readouterr().out
    mean, half = script.interval(last)
    assert f"| cifar10-resnet20 | dense | bf16 | 2 | 0,1 | {mean:.2f} ± {half:.2f} |" in out
    assert "### bf16 against float32" in out and (tmp_path / "curves.png").stat().st_size > 0


def _mnist_script():
    path = ROOT / "docs" / "results" / "scripts" / "mnist_validation_tables.py"
    spec = importlib.util.spec_from_file_location("mnist_validation_tables", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mnist_validation_tables"] = module
    spec.loader.exec_module(module)
    return module


def test_validation_selected_tables_from_real_runs(tmp_path, capsys, one_thread):
    """Runs with a hold-out: each cell is the mean +- t-interval of the test error at the epoch
    with the best validation accuracy (recomputed here from metrics.jsonl by hand)."""
    import json

    errors = {}
    for method in ("magnitude", "random"):
        for seed in (0, 1):
            config = resolve("cifar10-resnet20", method, 0.8, seed=seed, dataset="synthetic",
                             model="convnet", limit_per_class=20, holdout=0.2,
                             train_overrides={"epochs": 3, "batch_size": 16})
            summary = run_experiment(config, out_dir=tmp_path, progress=False)
            lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            top = max(r["val_acc"] for r in records)
            chosen = next(r for r in records if r["val_acc"] == top)  # the earliest best
            errors.setdefault(method, []).append(100 * (1 - chosen["test_acc"]))
    _mnist_script().main([str(tmp_path)])
    out = capsys.readouterr().out
    for method, values in errors.items():
        mean = sum(values) / 2
        half = 12.706 * abs(values[0] - values[1]) / 2  # t_{0.975,1} * s / sqrt(2), n = 2
        assert f"| {method} | {mean:.2f} ± {half:.2f} (n=2) |" in out
    assert "validation-selected epoch" in out and "test-selected (best) epoch" in out


def test_the_methods_tied_for_best_are_those_whose_intervals_overlap_the_best():
    script = _mnist_script()
    run = script.Run
    values = {"a": [1.0, 1.1, 0.9], "b": [5.0, 5.1, 4.9], "c": [1.2, 1.3, 1.1], "d": [3.0]}
    runs = [run(m, 0.9, i, v, v) for m, vs in values.items() for i, v in enumerate(vs)]
    runs += [run("e", 0.99, 0, 2.0, 2.0), run("e", 0.99, 1, 2.2, 2.2)]
    # half-widths 4.303 * 0.1 / sqrt(3) = 0.248: a [0.75, 1.25] and c [0.95, 1.45] overlap,
    # b [4.75, 5.25] does not; d (n = 1) has no interval and is left out
    assert script.tied_for_best(runs).splitlines() == [
        "- 90 %: lowest mean a; not separated from it: c",
        "- 99 %: lowest mean e (the only method with n >= 2: nothing to compare)"]
