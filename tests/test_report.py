"""`ntksap report`: table, paper overlay, layer collapse, figures, the HTML page in Chromium."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import ConvBN, TwoLayer

from ntksap import Masks, build_model
from ntksap.cli import main
from ntksap.report import build_report, path_check, reference
from ntksap.report.browser import check_page, find_chromium
from ntksap.sweep import Store
from ntksap.sweep.store import Job

SEED_ACC = {0: 0.80, 1: 0.82, 2: 0.84}
SPARSITIES = (1 - 0.8 ** 10, 1 - 0.8 ** 14)


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(root: Path, method: str, sparsity: float, seed: int, *, dead_fc: bool = False,
         spectrum: bool = False) -> tuple[Job, dict]:
    """A finished CIFAR-10 ResNet-20 run as a sweep leaves it (masks, densities, summary)."""
    config = {"preset": "cifar10-resnet20", "method": method, "sparsity": sparsity,
              "seed": seed, "dataset": "cifar10", "model": "resnet20", "num_classes": 10,
              "rounds": {"ntksap": 20, "dense": 0}.get(method, 1),
              "repeats": 5 if method == "ntksap" else 0, "scope": "global",
              "transform": "", "limit_per_class": 0,
              "train": {"epochs": 160, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
                        "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
                        "schedule": "multistep", "milestones": [80, 120], "gamma": 0.1,
                        "warmup_epochs": 0, "label_smoothing": 0.0, "amp": False,
                        "channels_last": False}}
    key = f"cifar10-resnet20/{method}-sp{sparsity:g}-seed{seed}"
    directory = root / key
    directory.mkdir(parents=True)
    if method != "dense":
        gen = torch.Generator().manual_seed(seed)
        model = build_model("resnet20", 10)
        masks = Masks({n: torch.rand(m.shape, generator=gen) > sparsity
                       for n, m in Masks.of(model).items()})
        if dead_fc:
            masks = Masks({**masks, "fc": torch.zeros_like(masks["fc"])})
        masks.save(directory / "masks.pt")
        (directory / "densities.json").write_text(json.dumps(masks.layers()))
    if spectrum:
        (directory / "ntk_spectrum.json").write_text(json.dumps(
            {"eigenvalues": [10.0 / (i + 1) for i in range(50)],
             "dense_eigenvalues": [20.0 / (i + 1) for i in range(50)]}))
    shift = {"dense": 0.08, "snip": -0.01, "ntksap": 0.0}[method] - 0.02 * (sparsity > 0.95)
    summary = {"run_dir": str(directory), "final_test_acc": SEED_ACC[seed] + shift - 0.01,
               "best_test_acc": SEED_ACC[seed] + shift, "best_epoch": 150}
    (directory / "config.json").write_text(json.dumps({"config": config}))
    (directory / "summary.json").write_text(json.dumps(summary))
    return Job(key, "run", config), summary


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store with ntksap and snip at two paper sparsities x 3 seeds, dense, one collapsed
    run, one run with an NTK spectrum and one failed run."""
    root = tmp_path_factory.mktemp("runs")
    db = root / "ntksap.db"
    runs = [_run(root, "dense", 0.0, s) for s in SEED_ACC]
    for method in ("snip", "ntksap"):
        for sparsity in SPARSITIES:
            for seed in SEED_ACC:
                runs.append(_run(root, method, sparsity, seed,
                                 dead_fc=method == "snip" and sparsity > 0.95 and seed == 2,
                                 spectrum=method == "ntksap" and seed == 0))
    failed = Job("cifar10-resnet20/grasp-sp0.9-seed0", "run",
                 {"preset": "cifar10-resnet20", "method": "grasp", "sparsity": 0.9})
    summaries = {job.key: summary for job, summary in runs}
    with Store(db) as s:
        s.add("paper", [job for job, _ in runs] + [failed])
        while (claim := s.claim("paper")) is not None:
            if claim.job.key == failed.key:
                s.fail(claim, "NonFiniteScoreError: GraSP gave non-finite scores")
            else:
                s.finish(claim, summaries[claim.job.key])
    return db


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    return build_report(store, tmp_path_factory.mktemp("report"))


def test_paper_numbers_are_looked_up_by_setting_method_and_sparsity():
    assert reference("cifar10-resnet20", "ntksap", 1 - 0.8 ** 10).accuracy == 87.86
    assert reference("cifar100-vgg16", "ntksap", 0.982).accuracy == 69.27
    assert reference("imagenet-resnet50", "grasp", 1 - 0.8 ** 14).accuracy == 59.73
    assert reference("cifar10-resnet20", "ntksap", 0.982, rounds=1).accuracy == 74.4
    assert reference("cifar10-resnet20", "ntksap", 0.982, rounds=5) is None
    assert reference("cifar10-resnet20", "snip", 0.982) is None  # "below 75": no number
    assert reference("cifar10-resnet20", "snip", 0.5) is None
    assert reference("cifar10-resnet20", "snip", 0.956).approx
    # the MNIST LeNets: the SNIP paper's Table 1 (100 - test error), its recipe's presets only
    snip = reference("mnist-lenet300", "snip", 0.98)
    assert (snip.accuracy, snip.source) == (97.6, "Lee, Ajanthan, Torr, SNIP, ICLR 2019")
    assert reference("mnist-lenet5", "snip", 0.99).accuracy == 98.9
    assert reference("mnist-lenet5", "dense", 0.0).accuracy == 99.1
    assert reference("mnist-lenet300-short", "snip", 0.98) is None
    assert reference("mnist-lenet300", "ntksap", 0.98) is None


def test_path_check_finds_cut_paths_and_useless_weights():
    model = TwoLayer(3, 4, 2)  # fc1: 4x3, fc2: 2x4
    top, bottom = torch.zeros(4, 3, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)
    top[:2] = True  # only hidden units 0, 1 receive input...
    bottom[:, 2:] = True  # ...and only units 2, 3 reach the output: no layer empty, no path
    cut = path_check(model, {"fc1": top, "fc2": bottom}, (3,))
    assert not cut["connected"] and cut["effective_remaining"] == 0
    bottom[0, 0] = True  # one path through unit 0
    one = path_check(model, {"fc1": top, "fc2": bottom}, (3,))
    assert one["connected"] and one["effective"] == {"fc1": 3, "fc2": 1}
    # a dead conv whose block survives through its shortcut is collapsed but connected
    conv = ConvBN()
    masks = {n: m.clone() for n, m in Masks.of(conv).items()}
    masks["conv2"][:] = False
    res = path_check(conv, masks, (2, 6, 6))
    assert res["connected"] and res["effective"]["conv2"] == 0
    masks["short"][:] = False
    assert not path_check(conv, masks, (2, 6, 6))["connected"]


def test_report_builds_the_table_plots_and_collapse_flags(report):
    rows = {(r.variant, r.sparsity): r for r in report.rows}
    ntk = rows[("ntksap", 89.26)]
    assert (ntk.n, ntk.best_mean, ntk.best_std) == (3, pytest.approx(82.0),
                                                    pytest.approx(2.0))
    assert ntk.final_mean == pytest.approx(81.0) and ntk.paper == 87.86 and not ntk.paper_approx
    from dataclasses import replace

    from ntksap.report.table import cell
    assert cell(ntk).startswith("82.00 ± 2.00 (n=3)")
    assert cell(replace(ntk, n=1, best_std=0.0)).startswith("82.00") and "±" not in cell(
        replace(ntk, n=1, best_std=0.0))  # one seed: no standard deviation to show
    assert rows[("snip", 95.6)].paper == 82.9 and rows[("snip", 95.6)].paper_approx
    assert rows[("snip", 95.6)].collapsed == 1 and rows[("snip", 95.6)].disconnected == 1
    assert rows[("dense", 0.0)].best_mean == pytest.approx(90.0)
    with open(report.csv) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 and {"best_mean", "best_std", "paper", "collapsed"} <= set(table[0])
    text = report.markdown.read_text()
    assert "| ntksap (paper) |" in text and "82.00 ± 2.00" in text and "⚠1" in text
    with open(report.collapse_csv) as f:
        flagged = [r for r in csv.DictReader(f) if r["collapsed"] == "1"]
    assert [(r["method"], r["dead_layers"], r["disconnected"]) for r in flagged] == [
        ("snip", "fc", "1")]
    names = sorted(p.name for p in report.figures)
    assert names == ["cifar10-resnet20-accuracy.png", "cifar10-resnet20-density-1.png",
                     "cifar10-resnet20-overlap.png", "cifar10-resnet20-spectrum.png"]
    page = report.html.read_text()
    assert page.count("data:image/png;base64,") == 4 and "http" not in page.replace(
        "http-equiv", "")  # self-contained
    assert "Layer collapse in 1 of 12" in page and "NonFiniteScoreError" in page


def test_report_reads_a_folder_of_runs_like_the_store(store, report, tmp_path):
    from_db = report.rows
    from_folder = build_report(store.parent, tmp_path / "b").rows
    assert [(r.variant, r.sparsity, r.best_mean, r.collapsed) for r in from_db] == [
        (r.variant, r.sparsity, r.best_mean, r.collapsed) for r in from_folder]


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary (Debian: apt-get "
                    "install chromium; or set NTKSAP_CHROMIUM): the page cannot be checked")
def test_report_page_loads_in_headless_chromium_without_errors(report, tmp_path):
    seen = check_page(report.html, timeout=120)
    (tmp_path / "page.png").write_bytes(seen.screenshot)
    assert seen.errors == []
    assert seen.images == seen.images_loaded == seen.images_visible == len(report.figures)
    assert seen.tables == 2 and seen.table_rows == 5 + 1  # results (3 + 2 paper), failed
    assert seen.title == "NTK-SAP reproduction report" and seen.ok
    assert seen.screenshot[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_and_its_errors(store, tmp_path, capsys):
    assert main(["report", str(store), "--out", str(tmp_path / "r"), "--sweep", "paper"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing.db"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(store), "--out", str(tmp_path / "r"), "--sweep", "nope"]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err


def test_paper_comparison_reads_the_paper_settings_not_the_training_presets(monkeypatch):
    """The paper's T and R for a setting come from report.paper, so editing a training
    preset (e.g. to prune with another T) does not change which runs match the paper."""
    import dataclasses as dc

    from ntksap.report.records import Point
    from ntksap.report.table import paper_variant
    from ntksap.train import config as train_config

    def point(method: str, **config: object) -> Point:
        return Point("k", "done", method, 0.982, 0,
                     {"preset": "cifar10-resnet20", "dataset": "cifar10", "model": "resnet20",
                      **config})

    paper = point("ntksap", method_options={"repeats": 5})
    t1 = point("ntksap", method_options={"repeats": 5}, rounds=1)
    assert paper_variant(paper) == ("cifar10-resnet20", "ntksap", None)
    assert paper_variant(t1) == ("cifar10-resnet20", "ntksap", 1)
    assert paper_variant(point("ntksap", method_options={"repeats": 1})) is None
    assert paper_variant(point("snip", model="vgg16")) is None  # not the paper's model
    assert paper_variant(point("snip", preset="mnist-lenet300-short", dataset="mnist",
                               model="lenet300")) is None  # not a published recipe
    assert paper_variant(point("snip", preset="mnist-lenet300", dataset="mnist",
                               model="lenet300")) == ("mnist-lenet300", "snip", None)  # SNIP's
    preset = train_config.PRESETS["cifar10-resnet20"]
    changed = dc.replace(preset, method_defaults={"ntksap": {"rounds": 7, "repeats": 2}})
    monkeypatch.setitem(train_config.PRESETS, "cifar10-resnet20", changed)
    assert paper_variant(paper) == ("cifar10-resnet20", "ntksap", None)
    assert paper_variant(t1) == ("cifar10-resnet20", "ntksap", 1)


def test_learning_curves_are_drawn_from_each_runs_metrics(tmp_path, one_thread):
    """A setting of a few finished runs gets a learning-curve figure drawn from their
    metrics.jsonl; the records it plots are each run's own epochs."""
    from ntksap.experiment import resolve, run_experiment
    from ntksap.report import learning_curves, load_points, variant_labels

    common = dict(dataset="synthetic", model="convnet", limit_per_class=12,
                  train_overrides={"epochs": 3, "batch_size": 32})
    for method, sparsity in (("dense", 0.0), ("magnitude", 0.9)):
        run_experiment(resolve("cifar10-resnet20", method, sparsity, **common),
                       out_dir=tmp_path / "runs", progress=False)
    report = build_report(tmp_path / "runs", tmp_path / "report")
    assert [p.name for p in report.figures if p.name.endswith("-curves.png")]
    points = [p for p in load_points(tmp_path / "runs") if p.status == "done"]
    curves = learning_curves(points, variant_labels(points))
    assert sorted(curves) == ["dense 0 % seed 0", "magnitude 90 % seed 0"]
    assert all([r["epoch"] for r in records] == [1, 2, 3] for records in curves.values())


def _diverge(directory: Path, epoch: int, *, finished: bool) -> None:
    """Give a run's directory the metrics of a network whose loss is not finite from
    ``epoch`` on; without ``finished`` it has no summary (it stopped, as runs now do)."""
    records = [{"epoch": e, "loss": 0.5 if e < epoch else math.nan, "train_acc": 0.5,
                "test_loss": 0.5, "test_acc": 0.1, "lr": 0.1, "seconds": 1.0,
                "images_per_s": 1.0} for e in range(1, epoch + 1)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if not finished:
        (directory / "summary.json").unlink()


def test_diverged_runs_are_counted_not_averaged(tmp_path, capsys):
    """SNIP at the lower sparsity: seed 2 diverged (old style: trained on, summary at
    chance), so the cell is the mean of seeds 0 and 1 with one divergence flagged; at the
    higher sparsity every seed diverged (two stopped without a summary), so the cell says
    so and the plot leaves it out; NTK-SAP is untouched."""
    root = tmp_path / "runs"
    for sparsity in SPARSITIES:
        for seed in SEED_ACC:
            _run(root, "snip", sparsity, seed)
            _run(root, "ntksap", sparsity, seed)
    folder = root / "cifar10-resnet20"
    _diverge(folder / f"snip-sp{SPARSITIES[0]:g}-seed2", 3, finished=True)
    for seed in SEED_ACC:
        _diverge(folder / f"snip-sp{SPARSITIES[1]:g}-seed{seed}", 1, finished=seed == 0)
    report = build_report(root, tmp_path / "report")
    rows = {(r.method, round(r.sparsity, 2)): r for r in report.rows}
    low, high = (round(100 * s, 2) for s in SPARSITIES)
    snip = rows["snip", low]
    assert (snip.n, snip.diverged, snip.seeds) == (2, 1, "0,1")
    assert snip.best_mean == pytest.approx(100 * ((0.80 + 0.82) / 2 - 0.01))
    assert (rows["snip", high].n, rows["snip", high].diverged) == (0, 3)
    assert math.isnan(rows["snip", high].best_mean)
    assert (rows["ntksap", low].n, rows["ntksap", low].diverged) == (3, 0)
    text = report.markdown.read_text()
    assert f"{snip.best_mean:.2f} ± {snip.best_std:.2f} (n=2) ✗1" in text
    assert "diverged ✗3" in text
    listed = text.split("### Diverged runs")[1]
    assert listed.count("training loss not finite in epoch 1") == 3
    assert "Runs not in the table" not in text  # the two stopped runs are in it, as ✗
    assert main(["report", str(root), "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert "4 diverged" in out and "not in the table" not in out
    with open(report.csv) as f:
        diverged = {(r["method"], r["sparsity"]): r["diverged"] for r in csv.DictReader(f)}
    assert diverged["snip", f"{high:.4f}"] == "3"
    page = report.html.read_text()
    assert page.count("loss not finite in epoch 1<") == 3
    assert page.count("loss not finite in epoch 3<") == 1
