"""The theory lab at reduced sizes: the properties each experiment illustrates."""

from __future__ import annotations

import json

import pytest
import torch

from ntksap.cli import main
from ntksap.lab import ASI, DeepNTK, TwoLayer, asi, doubled, dynamics, frequency, zero_crossings
from ntksap.ntk import empirical_ntk

pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
def test_asi_output_is_exactly_zero_and_its_kernel_is_unchanged(dtype, tol):
    net = DeepNTK((1, 64, 64, 1), std=10.0, seed=3).to(dtype)
    model = ASI(net)
    x = torch.linspace(-1, 1, 9, dtype=dtype).unsqueeze(1)
    assert torch.equal(model(x), torch.zeros(9, 1, dtype=dtype))
    assert net(x).abs().max() > 1  # the network itself is far from zero
    assert rel(empirical_ntk(model, x), empirical_ntk(net, x)) < tol


def test_doubling_zeroes_the_output_but_changes_the_kernel():
    net = DeepNTK((1, 64, 64, 1), std=10.0, seed=3).double()
    twin = doubled(net)
    x = torch.linspace(-1, 1, 9, dtype=torch.float64).unsqueeze(1)
    assert twin(x).abs().max() < 1e-10 * net(x).abs().max()
    assert rel(empirical_ntk(twin, x), empirical_ntk(net, x)) > 0.1


def test_two_layer_ntk_parameterization():
    net = TwoLayer(4000, seed=0)
    assert float(net.hidden.weight.detach().std()) == pytest.approx(1, abs=0.05)
    x = torch.linspace(-1, 1, 5).unsqueeze(1)
    with torch.no_grad():
        assert 0.1 < float(net(x).abs().max()) < 10  # O(1) at any width


def test_kernel_prediction_tracks_a_wide_network():
    wide = dynamics(width=2000, points=8, steps=300, lr_scale=0.1)
    narrow = dynamics(width=10, points=8, steps=300, lr_scale=0.1)
    s = wide.summary
    assert s["max_relative_deviation"] < 0.03
    assert s["max_relative_deviation_linearized"] < 0.005
    assert s["test_max_relative_deviation"] < 0.03
    assert s["final_loss_gd"] < 0.5 * float(0.5 * wide.arrays["u_gd"][0].pow(2).sum())
    # the kernel moves during training the less, the wider the network
    assert (narrow.summary["max_relative_deviation_linearized"]
            > 5 * s["max_relative_deviation_linearized"])


def test_zero_crossings_grow_as_eigenvalues_shrink(tmp_path):
    r = frequency(tmp_path, points=300, width=500, indices=30)
    crossings = r.arrays["crossings"]
    assert crossings[:8].tolist() == list(range(8))
    assert r.summary["spearman"] > 0.95
    assert crossings[20:].double().mean() > crossings[:10].double().mean() + 10
    eigs = r.arrays["eigenvalues"]
    assert torch.all(eigs[1:] <= eigs[:-1])
    assert r.figure.stat().st_size > 0
    assert zero_crossings(torch.tensor([1.0, 2.0, -1.0, -3.0, 4.0])) == 2


def test_asi_experiment_small(tmp_path):
    r = asi(tmp_path, widths=(1, 48, 48, 1), steps=150, test_points=41)
    s = r.summary
    assert s["asi"]["initial_max_abs_output"] == 0.0
    assert s["doubling"]["initial_max_abs_output"] < 1e-4
    assert s["plain"]["initial_max_abs_output"] > 1.0
    assert s["asi_kernel_max_rel_diff"] < 1e-4 < 0.1 < s["doubling_kernel_max_rel_diff"]
    assert s["asi"]["parameters"] == 2 * s["plain"]["parameters"]
    assert s["asi"]["final_test_mse"] < s["plain"]["final_test_mse"]
    for name in ("plain", "asi", "doubling", "rnd"):
        losses = r.arrays["variants"][name]["train_loss"]
        assert losses[-1] < losses[0]
    assert r.figure.read_bytes()[:4] == b"\x89PNG"


def test_cli_lab_json(capsys, tmp_path):
    assert main(["lab", "frequency", "--out", str(tmp_path), "--points", "120", "--width",
                 "200", "--indices", "10", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["experiment"] == "frequency" and report["figure"].endswith("frequency.png")
    assert report["crossings_first"][:5] == [0, 1, 2, 3, 4]
    assert main(["lab", "asi", "--out", str(tmp_path), "--widths", "1", "16", "16", "1",
                 "--steps", "5", "--variants", "plain", "asi", "--no-check-kernel",
                 "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"plain", "asi", "figure", "lr"} and "rnd" not in report
