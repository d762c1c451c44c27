"""Parameters and multiply-adds of a sparse network, against counts written by hand."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ntksap
from ntksap.cli import main
from ntksap.cost import cost, format_count
from ntksap.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lenet300_dense_counts_are_the_hand_counts():
    """784 x 300 + 300 x 100 + 100 x 10 weights, each used once per example; 410 biases."""
    model = build_model("lenet300", 10, seed=0)
    masks = ntksap.prune(model, "magnitude", 0.9)
    counts = cost(model, masks, (1, 28, 28), masks.effective(model, (1, 28, 28)))
    weights = 784 * 300 + 300 * 100 + 100 * 10
    assert counts["flops"]["dense"] == weights == 266_200
    assert counts["params"]["dense"] == weights + 300 + 100 + 10
    assert counts["flops"]["sparse"] == masks.remaining == round(0.1 * weights)
    assert counts["params"]["sparse"] == counts["params"]["dense"] - (weights - masks.remaining)
    assert counts["flops"]["effective"] <= counts["flops"]["sparse"]


def test_a_convolution_counts_its_output_positions():
    """Conv2d(3, 8, 3, stride 2) on 3 x 11 x 11: a 5 x 5 output, so each of the 8 x 3 x 3 x 3
    weights is used 25 times; a Linear on a (7, 16) sequence uses each weight 7 times."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2)
            self.head = nn.Linear(5, 4)

        def forward(self, x):
            return self.head(self.conv(x).mean(1))  # (B, 5, 5) -> (B, 5, 4): 5 positions

    model = Net()
    masks = ntksap.Masks({"conv": torch.rand(8, 3, 3, 3) > 0.5, "head": torch.ones(4, 5)})
    counts = cost(model, masks, (3, 11, 11))
    conv, head = counts["layers"]
    assert (conv["positions"], conv["dense"]) == (25, 8 * 27 * 25)
    assert conv["sparse"] == int(masks["conv"].sum()) * 25
    assert (head["positions"], head["dense"]) == (5, 20 * 5)
    assert counts["flops"]["effective"] is None and counts["params"]["effective"] is None
    assert format_count(40_813_184) == "40.8 M" and format_count(None) == "-"


def test_prune_json_and_run_summary_carry_params_and_flops(tmp_path, capsys):
    assert main(["prune", "--model", "lenet300", "--method", "magnitude", "--sparsity", "0.9",
                 "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["flops"]["dense"] == 266_200 and record["params"]["dense"] == 266_610
    assert record["flops"]["sparse"] == record["remaining"]
    assert sum(r["flops"]["dense"] for r in record["layers"]) == 266_200
    assert main(["run", "--preset", "cifar10-resnet20", "--dataset", "synthetic", "--model",
                 "convnet", "--limit-per-class", "10", "--epochs", "1", "--batch-size", "20",
                 "--method", "random", "--sparsity", "0.5", "--device", "cpu",
                 "--no-progress", "--json", "--out-dir", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["flops"]["sparse"] < summary["flops"]["dense"]
    assert summary["params"]["sparse"] == summary["params"]["dense"] - (
        summary["total"] - summary["remaining"])
    assert summary["flops"]["effective"] is not None


def test_the_report_gives_the_counts_in_its_csv_and_json(tmp_path, capsys):
    common = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--model", "convnet",
              "--limit-per-class", "10", "--epochs", "1", "--batch-size", "20", "--device",
              "cpu", "--no-progress", "--out-dir", str(tmp_path / "runs"), "--json"]
    summaries = []
    for seed in ("0", "1"):
        assert main(["run", *common, "--method", "random", "--sparsity", "0.5", "--seed",
                     seed]) == 0
        summaries.append(json.loads(capsys.readouterr().out))
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["flops_sparse"] == pytest.approx(
        sum(s["flops"]["sparse"] for s in summaries) / 2)
    assert row["flops_dense"] == summaries[0]["flops"]["dense"]
    header = (tmp_path / "rep" / "results.csv").read_text().splitlines()[0]
    assert "params_sparse" in header and "flops_effective" in header


def test_the_prune_table_shows_each_layers_kept_multiply_adds(capsys):
    """ResNet-20's first convolution keeps k weights, each used at 32 x 32 positions."""
    assert main(["prune", "--model", "resnet20", "--method", "magnitude", "--sparsity", "0.5",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["MACs", "kept"]
    conv1 = next(line.split() for line in lines if line.startswith("conv1 "))
    assert int(conv1[-1]) == int(conv1[2]) * 32 * 32
