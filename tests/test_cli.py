"""The command line: `ntksap prune`."""

from __future__ import annotations

import json

import pytest
import torch

import ntksap
from ntksap.cli import main


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_prune_resnet20_ntksap_json_reports_exact_counts(capsys, tmp_path):
    # the acceptance command, with fewer rounds and repeats to keep the suite fast: the counts
    # depend only on the sparsity
    out = tmp_path / "masks.pt"
    report = _json(capsys, ["prune", "--model", "resnet20", "--num-classes", "10", "--method",
                            "ntksap", "--sparsity", "0.982", "--rounds", "2", "--repeats", "1",
                            "--samples", "20", "--seed", "0", "--out", str(out), "--json"])
    assert report["method"] == "ntksap" and report["sparsity"] == 0.982
    assert report["total"] == 270_896 and report["remaining"] == 4876
    assert report["seconds"] > 0
    layers = report["layers"]
    assert layers[0]["name"] == "conv1" and layers[0]["shape"] == [16, 3, 3, 3]
    assert layers[-1]["name"] == "fc" and len(layers) == 22
    assert sum(r["remaining"] for r in layers) == 4876
    masks = ntksap.Masks.load(out, ntksap.build_model("resnet20"))
    assert masks.remaining == 4876 and masks.meta["model"] == "resnet20"


def test_same_seed_same_mask_file(capsys, tmp_path):
    paths = [tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"]
    for path, seed in zip(paths, ["3", "3", "4"], strict=True):
        assert main(["prune", "--model", "convnet", "--method", "ntksap", "--sparsity", "0.9",
                     "--rounds", "2", "--repeats", "1", "--seed", seed, "--out", str(path),
                     "--no-progress"]) == 0
    a, b, c = (ntksap.Masks.load(p) for p in paths)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_table_output(capsys):
    assert main(["prune", "--model", "convnet", "--method", "magnitude", "--sparsity", "0.5",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "total" in out and "sparsity 0.5" in out


@pytest.mark.parametrize("argv, message", [
    (["--method", "nope", "--sparsity", "0.5"], "unknown method 'nope'"),
    (["--method", "random", "--sparsity", "1.2"], "sparsity must be a number in [0, 1)"),
    (["--method", "snip", "--sparsity", "0.5"], "needs a pruning set"),
    (["--method", "random", "--sparsity", "0.5", "--input-shape", "3", "8"],
     "cannot take inputs of shape (3, 8)"),
    (["--method", "magnitude", "--sparsity", "0.5", "--repeats", "3"], "no option repeats"),
])
def test_bad_input_is_a_clear_error(capsys, argv, message):
    assert main(["prune", "--model", "convnet", *argv]) == 2
    assert message in capsys.readouterr().err
