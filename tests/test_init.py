"""Weight initialization schemes (ntksap.init) and a run's ``init`` field.

The variance-scaling oracle is the distribution itself, from the SNIP code's
``tf.variance_scaling_initializer()`` defaults: a zero-mean normal cut at two of its standard
deviations, scaled so that the variance is 1 / fan_in. For a standard normal cut at +-2:
P(|z| <= 2) = erf(sqrt 2), its variance is 1 - 4 phi(2) / P(|z| <= 2), and a fraction
erf(1 / sqrt 2) / erf(sqrt 2) of it lies within one standard deviation of the uncut normal.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ntksap
from ntksap.errors import UnknownNameError
from ntksap.experiment import identity, resolve, run_dir, run_experiment
from ntksap.init import initialize_

TINY = dict(dataset="synthetic", model="convnet", limit_per_class=10,
            train_overrides={"epochs": 1, "batch_size": 8})


def _cut_normal():
    """(variance, share within one sigma) of a standard normal cut at +-2, from erf alone."""
    inside = math.erf(math.sqrt(2))
    density_at_2 = math.exp(-2) / math.sqrt(2 * math.pi)
    return 1 - 4 * density_at_2 / inside, math.erf(1 / math.sqrt(2)) / inside


def test_variance_scaling_draws_the_cut_normal_of_variance_one_over_fan_in():
    layer = nn.Linear(400, 5000)
    initialize_(layer, "variance-scaling", torch.Generator().manual_seed(0))
    w = layer.weight.detach().double().flatten()
    cut_variance, within_one = _cut_normal()
    sigma = math.sqrt(1 / 400 / cut_variance)  # the uncut normal's std
    assert w.var().item() == pytest.approx(1 / 400, rel=0.01)
    assert w.abs().max().item() <= 2 * sigma * (1 + 1e-6)
    assert w.abs().max().item() > 1.95 * sigma  # cut at 2 sigma, not before
    assert (w.abs() <= sigma).double().mean().item() == pytest.approx(within_one, abs=0.003)
    assert abs(w.mean().item()) < 3 * math.sqrt(1 / 400 / w.numel())
    assert torch.count_nonzero(layer.bias) == 0


def test_variance_scaling_counts_a_convolutions_fan_in_over_its_kernel():
    conv = nn.Conv2d(16, 512, 3)
    initialize_(conv, "variance-scaling", torch.Generator().manual_seed(1))
    assert conv.weight.var().item() == pytest.approx(1 / (16 * 9), rel=0.02)


def test_kaiming_stays_the_uncut_normal_of_variance_two_over_fan_in():
    layer = nn.Linear(400, 5000)
    initialize_(layer, "kaiming", torch.Generator().manual_seed(0))
    w = layer.weight.detach().double()
    assert w.var().item() == pytest.approx(2 / 400, rel=0.01)
    assert w.abs().max().item() > 3 * math.sqrt(2 / 400)  # the tails are not cut


def test_pytorch_init_draws_pytorchs_uniform_law_weights_and_biases():
    """PyTorch's layer defaults, from its documented formula: kaiming_uniform_ with a =
    sqrt(5) has bound gain sqrt(3 / fan_in) with gain sqrt(2 / (1 + 5)), i.e. 1 / sqrt(fan_in);
    the bias is uniform with the same bound; a uniform law on +-b has variance b^2 / 3."""
    gain = math.sqrt(2 / (1 + 5))
    for layer, fan_in in ((nn.Linear(400, 5000), 400), (nn.Conv2d(16, 512, 3), 16 * 9)):
        initialize_(layer, "pytorch", torch.Generator().manual_seed(0))
        bound = gain * math.sqrt(3 / fan_in)
        assert bound == pytest.approx(1 / math.sqrt(fan_in))
        w, b = layer.weight.detach().double().flatten(), layer.bias.detach().double()
        assert w.abs().max().item() <= bound and w.abs().max().item() > 0.999 * bound
        assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.02)
        assert b.abs().max().item() <= bound and torch.count_nonzero(b) == b.numel()
        reference = type(layer)(*((400, 5000) if fan_in == 400 else (16, 512, 3)))
        assert reference.weight.abs().max().item() <= bound  # PyTorch's own draw obeys it
    again = nn.Linear(400, 5000)
    initialize_(again, "pytorch", torch.Generator().manual_seed(0))
    first = nn.Linear(400, 5000)
    initialize_(first, "pytorch", torch.Generator().manual_seed(0))
    assert torch.equal(again.weight, first.weight) and torch.equal(again.bias, first.bias)


def test_build_model_init_is_seeded_and_resets_norms():
    a = ntksap.build_model("resnet20", seed=3, init="variance-scaling")
    b = ntksap.build_model("resnet20", seed=3, init="variance-scaling")
    c = ntksap.build_model("resnet20", seed=4, init="variance-scaling")
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert (a.bn1.weight == 1).all() and (a.bn1.bias == 0).all()
    with pytest.raises(UnknownNameError, match="unknown init 'xavier'.*kaiming"):
        ntksap.build_model("resnet20", init="xavier")


def test_init_is_part_of_a_runs_identity_only_when_not_the_default():
    default = resolve("cifar10-resnet20", "snip", 0.9, **TINY)
    snip_init = resolve("cifar10-resnet20", "snip", 0.9, init="variance-scaling", **TINY)
    assert default.init == "kaiming" and "init" not in identity(default)
    assert identity(snip_init)["init"] == "variance-scaling"
    assert run_dir(default, "o") != run_dir(snip_init, "o")
    assert run_dir(resolve("cifar10-resnet20", "snip", 0.9, init="kaiming", **TINY),
                   "o") == run_dir(default, "o")
    with pytest.raises(UnknownNameError, match="init"):
        resolve("cifar10-resnet20", "snip", 0.9, init="he", **TINY)


def _is_variance_scaling(weight: torch.Tensor, rel: float = 0.02) -> bool:
    """Variance 1 / fan_in within ``rel`` and nothing beyond the cut (2 sigma of the uncut
    normal); a Kaiming draw of a few hundred weights or more fails both."""
    w = weight.detach().double().flatten()
    fan_in = weight[0].numel()
    sigma = math.sqrt(1 / fan_in / _cut_normal()[0])
    return (abs(w.var().item() * fan_in - 1) < rel
            and w.abs().max().item() <= 2 * sigma * (1 + 1e-6))


def test_the_reinit_sanity_check_redraws_with_the_models_scheme():
    model = ntksap.build_model("lenet300", seed=0, init="variance-scaling")
    theta0 = model.fc1.weight.detach().clone()
    assert _is_variance_scaling(theta0)
    ntksap.prune(model, "magnitude", 0.9, transform="reinit", init="variance-scaling")
    assert not torch.equal(model.fc1.weight, theta0) and _is_variance_scaling(model.fc1.weight)
    kaiming = ntksap.build_model("lenet300", seed=0)
    ntksap.prune(kaiming, "magnitude", 0.9, transform="reinit")
    assert not _is_variance_scaling(kaiming.fc1.weight)
    assert kaiming.fc1.weight.var().item() * 784 == pytest.approx(2, rel=0.02)
    with pytest.raises(UnknownNameError, match="init"):
        ntksap.prune(model, "magnitude", 0.9, init="lecun")


def test_a_reinit_run_trains_a_fresh_draw_of_its_init(tmp_path):
    """The run records theta_0 (the scored draw) and trains the reinit draw: both of the
    run's scheme, not the same weights."""
    from ntksap.experiment import open_data, prepare_run

    config = resolve("cifar10-resnet20", "snip", 0.5, init="variance-scaling",
                     transform="reinit", **TINY)
    model = ntksap.build_model("convnet", 10, seed=0, init="variance-scaling")
    theta0 = model.features[3].weight.detach().clone()
    directory = tmp_path / "run"
    directory.mkdir()
    prepare_run(config, directory, open_data(config, None, False, False), model,
                torch.device("cpu"), False)
    recorded = torch.load(directory / "init.pt", weights_only=True)["features.3.weight"]
    assert torch.equal(recorded, theta0)
    trained_from = model.features[3].weight.detach()  # 1,152 weights: variance within 15 %
    assert not torch.equal(trained_from, theta0)
    assert _is_variance_scaling(trained_from, rel=0.15)


def test_a_run_scores_and_trains_the_weights_of_its_init(tmp_path):
    config = resolve("cifar10-resnet20", "snip", 0.5, init="variance-scaling", **TINY)
    summary = run_experiment(config, out_dir=tmp_path, progress=False)
    directory = Path(summary["run_dir"])
    theta0 = torch.load(directory / "init.pt", weights_only=True)
    expected = ntksap.build_model("convnet", 10, seed=0, init="variance-scaling").state_dict()
    assert all(torch.equal(theta0[k], v) for k, v in expected.items())
    kaiming = ntksap.build_model("convnet", 10, seed=0).state_dict()
    assert not all(torch.equal(theta0[k], v) for k, v in kaiming.items())
    recorded = json.loads((directory / "config.json").read_text())
    assert recorded["config"]["init"] == "variance-scaling"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ntksap", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_init_flags(tmp_path):
    out = tmp_path / "m.pt"
    done = _cli("prune", "--model", "lenet300", "--method", "magnitude", "--sparsity", "0.9",
                "--init", "variance-scaling", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    masks = ntksap.Masks.load(out)
    model = ntksap.build_model("lenet300", 10, seed=0, init="variance-scaling")
    kept = model.fc1.weight.abs()[masks["fc1"]]
    assert kept.min() >= model.fc1.weight.abs()[~masks["fc1"]].max()  # magnitude of that draw
    bad = _cli("prune", "--model", "lenet300", "--method", "snip", "--sparsity", "0.9",
               "--init", "lecun")
    assert bad.returncode == 2 and "--init" in bad.stderr and "Traceback" not in bad.stderr
    unknown = _cli("run", "--preset", "mnist-lenet300", "--method", "dense", "--init", "he",
                   "--out-dir", str(tmp_path / "runs"))
    assert unknown.returncode == 2 and "--init" in unknown.stderr
    assert not (tmp_path / "runs").exists()


def test_the_report_sets_runs_of_another_init_apart():
    """A run of another init is its own setting (its dense reference differs too); runs
    recorded before the field, and Kaiming runs, share the preset's."""
    from ntksap.report.records import Point, setting_of

    def point(**config: object) -> Point:
        return Point("k", "done", "snip", 0.95, 0, {"preset": "mnist-lenet300",
                                                    "dataset": "mnist", "model": "lenet300",
                                                    "holdout": 0.1, **config})

    assert setting_of(point()) == setting_of(point(init="kaiming")) == "mnist-lenet300"
    assert setting_of(point(init="variance-scaling")) == \
        "mnist-lenet300 [init=variance-scaling]"
