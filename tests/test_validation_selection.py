"""Per-epoch validation and the validation-selected epoch: a run with a hold-out records
``val_acc`` every epoch (alone and in a pack, the same numbers), and its summary names the
epoch a reviewer may select (on validation data, never on the test set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ntksap.epochs import val_selected
from ntksap.experiment import resolve, run_experiment
from ntksap.pack import run_pack

pytestmark = pytest.mark.usefixtures("one_thread")


def _records(*rows: tuple[int, float | None, float]) -> list[dict]:
    return [{"epoch": e, "test_acc": t, **({} if v is None else {"val_acc": v})}
            for e, v, t in rows]


def test_the_selected_epoch_is_the_best_on_validation_the_earliest_on_ties():
    assert val_selected(_records((1, 0.5, 0.9), (2, 0.7, 0.1), (3, 0.7, 0.8))) == (2, 0.1)
    assert val_selected(_records((1, 0.2, 0.3))) == (1, 0.3)
    assert val_selected(_records((1, None, 0.9), (2, None, 0.95))) == (None, None)
    assert val_selected([]) == (None, None)


def _config(seed: int, method: str = "magnitude", holdout: float = 0.2):
    return resolve("cifar10-resnet20", method, 0.8, seed=seed, dataset="synthetic",
                   model="convnet", limit_per_class=20, holdout=holdout,
                   train_overrides={"epochs": 3, "batch_size": 16})


def _metrics(summary: dict) -> list[dict]:
    path = Path(summary["run_dir"]) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_with_a_holdout_validates_every_epoch_and_names_the_selected_one(tmp_path):
    summary = run_experiment(_config(0), out_dir=tmp_path, progress=False)
    metrics = _metrics(summary)
    assert len(metrics) == 3 and all(0 <= r["val_acc"] <= 1 for r in metrics)
    assert metrics[-1]["val_acc"] == summary["final_val_acc"]  # computed apart, at the end
    best = max(metrics, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert summary["val_selected_epoch"] == best["epoch"]
    assert summary["val_selected_test_acc"] == best["test_acc"]
    plain = run_experiment(_config(0, holdout=0.0), out_dir=tmp_path, progress=False)
    assert "val_acc" not in _metrics(plain)[0]
    assert plain["val_selected_epoch"] is None and plain["val_selected_test_acc"] is None


def test_a_pack_validates_each_network_as_its_separate_run(tmp_path, double_precision):
    configs = [_config(0), _config(1, "random")]
    packed = run_pack(configs, out_dir=tmp_path / "pack", progress=False)
    for config, result in zip(configs, packed, strict=True):
        alone = run_experiment(config, out_dir=tmp_path / "alone", progress=False)
        mine, theirs = _metrics(result.summary), _metrics(alone)
        assert [r["val_acc"] for r in mine] == pytest.approx([r["val_acc"] for r in theirs],
                                                             abs=1e-12)
        assert result.summary["val_selected_epoch"] == alone["val_selected_epoch"]


def test_the_report_leads_with_the_validation_selected_accuracy(tmp_path):
    """Runs with a hold-out: the cell is the mean ± 95 % t-interval of the test accuracy at
    each run's validation-selected epoch (from its summary, by hand here), with the
    test-selected best epoch's mean beside it, named so."""
    from ntksap.report import build_report
    from ntksap.report.table import cell

    summaries = [run_experiment(_config(seed), out_dir=tmp_path / "runs", progress=False)
                 for seed in (0, 1)]
    report = build_report(tmp_path / "runs", tmp_path / "report")
    (row,) = [r for r in report.rows if r.method == "magnitude"]
    values = [100 * s["val_selected_test_acc"] for s in summaries]
    mean = sum(values) / 2
    half = 12.706 * abs(values[0] - values[1]) / 2  # t_{0.975,1} s / sqrt(2) for n = 2
    best = sum(100 * s["best_test_acc"] for s in summaries) / 2
    assert (row.val_n, row.val_mean) == (2, pytest.approx(mean))
    assert row.val_half == pytest.approx(half)
    assert cell(row).startswith(f"{mean:.2f} ± {half:.2f} (n=2) [test-sel. {best:.2f}]")
    assert "validation accuracy, mean ± 95 % t-interval" in report.markdown.read_text()
