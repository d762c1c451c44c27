"""Each method's score against a value computed by hand on a tiny network."""

from __future__ import annotations

import copy

import oracles
import pytest
import torch
from conftest import ConvBN, TinyLinear, TwoLayer
from torch import nn
from torch.nn import functional as F

import ntksap
from ntksap.methods import METHODS, ScoreContext, ScoringNet
from ntksap.models.init import kaiming_init_
from ntksap.reference import NTKSAPReference

pytestmark = pytest.mark.usefixtures("double_precision")


def _data(n: int = 5, n_in: int = 3, classes: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=g), torch.randint(0, classes, (n,), generator=g)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-9, atol=1e-12)


def test_magnitude_is_absolute_initial_weight():
    model = TinyLinear()
    with torch.no_grad():  # set by hand; the expected values are written out below
        model.fc.weight.copy_(torch.tensor([[-3.0, 0.5, 2.0], [-0.25, 1.5, -1.0]]))
    expected = torch.tensor([[3.0, 0.5, 2.0], [0.25, 1.5, 1.0]])
    _close(ntksap.score(model, "magnitude", input_shape=(3,))["fc"], expected)
    masks = ntksap.prune(model, "magnitude", 0.5)  # drops 0.25, 0.5 and 1.0
    assert masks["fc"].tolist() == [[True, False, True], [False, True, False]]


def test_random_is_uniform_and_seeded():
    model = TwoLayer()
    a = ntksap.score(model, "random", input_shape=(3,), seed=1)
    b = ntksap.score(model, "random", input_shape=(3,), seed=1)
    c = ntksap.score(model, "random", input_shape=(3,), seed=2)
    for n in a:
        assert ((a[n] >= 0) & (a[n] < 1)).all()
        _close(a[n], b[n])
    assert not torch.equal(a["fc1"], c["fc1"])


def _densities_near(masks, density: float, sds: float = 5.0) -> bool:
    """Every layer's kept count within ``sds`` binomial standard deviations of density x n."""
    return all(abs(int(m.sum()) - density * m.numel())
               <= sds * (m.numel() * density * (1 - density)) ** 0.5 for m in masks.values())


def test_random_gives_every_layer_the_target_density():
    # layers of 20,000, 10,000 and 500 weights under one global threshold: each keeps ~10 %
    # (5 standard deviations: a seeded draw outside has probability ~1e-6)
    model = nn.Sequential(nn.Linear(100, 200, bias=False), nn.ReLU(),
                          nn.Linear(200, 50, bias=False), nn.ReLU(), nn.Linear(50, 10))
    for seed in range(3):
        masks = ntksap.prune(model, "random", 0.9, seed=seed)
        assert _densities_near(masks, 0.1)
    # the check has teeth: magnitude (Kaiming-uniform, bound 1/sqrt(fan_in)) fails it
    assert not _densities_near(ntksap.prune(model, "magnitude", 0.9), 0.1)


def _softmax_ce_grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d mean CE(W x, y) / dW = mean over examples of (softmax(W x) - onehot(y)) x^T."""
    p = torch.softmax(x @ w.T, dim=1)
    p[torch.arange(len(y)), y] -= 1
    return p.T @ x / len(y)


def test_snip_is_abs_gradient_times_weight():
    model = TinyLinear()
    x, y = _data()
    expected = (_softmax_ce_grad(model.fc.weight.detach(), x, y) * model.fc.weight).abs()
    _close(ntksap.score(model, "snip", data=(x, y))["fc"], expected)


def test_snip_sums_gradients_over_batches_before_abs():
    model = TinyLinear()
    x, y = _data(n=6)
    w = model.fc.weight.detach()
    g = _softmax_ce_grad(w, x[:3], y[:3]) + _softmax_ce_grad(w, x[3:], y[3:])
    got = ntksap.score(model, "snip", data=[(x[:3], y[:3]), (x[3:], y[3:])])
    _close(got["fc"], (g * w).abs())


def test_iter_snip_scores_the_masked_network():
    model = TinyLinear()
    x, y = _data()
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    ntksap.Masks({"fc": mask}).apply(model)
    w = model.fc.weight.detach()  # the masked weights
    expected = (_softmax_ce_grad(w, x, y) * w).abs()
    got = ntksap.score(model, "iter_snip", data=(x, y))["fc"]
    _close(got[mask], expected[mask])
    assert METHODS["iter_snip"].default_rounds == 20


def test_force_scores_pruned_weights_too():
    # within a pruning run the scoring copy keeps theta; the gradient is taken at theta * m
    model = TinyLinear()
    x, y = _data()
    theta = model.fc.weight.detach().clone()
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.float64)
    clone = copy.deepcopy(model)
    net = ScoringNet(clone, {"fc": clone.fc}, {"fc": mask})
    ctx = ScoreContext(1, 1, 0.5, (3,), 2, [(x, y)], torch.Generator())
    got = METHODS["force"]().scores(net, ctx)["fc"]
    expected = (theta * _softmax_ce_grad(theta * mask, x, y)).abs()
    _close(got, expected)
    assert (got[mask == 0] > 0).all()  # pruned weights keep a saliency: they may return
    assert METHODS["force"].monotone is False


def _grasp_closed_form(w, batches, temperature):
    """theta * (H g) for f(x) = W x: g = sum_b mean_i (p_i - onehot(y_i)) x_i^T / T and
    H_b v = mean_i (diag p_i - p_i p_i^T)(v x_i) x_i^T / T^2, p_i = softmax(W x_i / T)."""
    classes = w.shape[0]
    g = sum((torch.softmax(x @ w.T / temperature, 1) - F.one_hot(y, classes)).T @ x
            / (temperature * len(y)) for x, y in batches)
    hg = torch.zeros_like(w)
    for x, _ in batches:
        for xi in x:
            p = torch.softmax(w @ xi / temperature, 0)
            hg += ((torch.diag(p) - p.outer(p)) @ (g @ xi)).outer(xi) / (
                temperature ** 2 * len(x))
    return w * hg


def test_grasp_is_weight_times_hessian_gradient_product():
    # the default temperature (200), several examples in several batches; signed: the same
    # values with abs() taken would fail the comparison (both signs occur)
    model = TinyLinear(4, 3)
    x, y = _data(n=9, n_in=4, classes=3)
    batches = [(x[:4], y[:4]), (x[4:7], y[4:7]), (x[7:], y[7:])]
    expected = _grasp_closed_form(model.fc.weight.detach(), batches, 200.0)
    assert (expected < 0).any() and (expected > 0).any()
    got = ntksap.score(model, "grasp", data=batches)["fc"]
    assert oracles.relative_error(got, expected) < 1e-9
    at_two = ntksap.score(model, "grasp", data=batches, temperature=2.0)["fc"]
    assert oracles.relative_error(at_two, _grasp_closed_form(model.fc.weight.detach(),
                                                             batches, 2.0)) < 1e-9


def test_synflow_is_path_norm_derivative():
    model = TwoLayer()
    w1, w2 = model.fc1.weight.detach().abs(), model.fc2.weight.detach().abs()
    hidden = w1 @ torch.ones(3)
    expected1 = w1 * w2.sum(0)[:, None]
    expected2 = w2 * hidden[None, :]
    got = ntksap.score(model, "synflow", input_shape=(3,))
    _close(got["fc1"], expected1)
    _close(got["fc2"], expected2)


def test_ntksap_on_a_linear_network_is_the_perturbation_norm_gradient():
    # f(z) = (theta * m) z, so ||f(theta) - f(theta + delta)||^2 = ||(delta * m) z||^2 and
    # d/dm_ij = 2 sum_b (delta z_b)_i delta_ij z_bj, whatever theta is.
    model = TinyLinear()
    eps = 0.1
    got = ntksap.score(model, "ntksap", input_shape=(3,), seed=3, repeats=3, samples=4,
                       batch_size=4, eps=eps)["fc"]
    expected = torch.zeros(2, 3)
    # the draws in the documented order (the oracle's own generator and init)
    for _, z, delta in oracles.ntksap_draws(model, (3,), [4], repeats=3, eps=eps, seed=3):
        expected += 2 * (z @ delta["fc"].T).T @ z * delta["fc"]
    _close(got, expected.abs())


def test_ntksap_and_the_benchmarks_reference_procedure_match_the_oracle_with_batchnorm():
    """Fresh weights per draw, eval-mode BatchNorm holding the batch's statistics from a
    train-mode pass: the same scores as the specification's oracle (tests/oracles.py), for
    our method's speed paths and for the re-statement of the public code that
    benchmarks/prune_speed.py times against."""
    model = ConvBN()
    options = dict(input_shape=(2, 6, 6), seed=5, batch_size=8)
    expected = oracles.ntksap_scores(model, (2, 6, 6), [8, 8], repeats=2, eps=0.01, seed=5)
    for got in (ntksap.score(model, "ntksap", repeats=2, samples=16, **options),
                ntksap.score(model, "ntksap", repeats=2, samples=16, draws_per_pass=4,
                             **options),
                ntksap.score(model, "ntksap", repeats=2, samples=16, pair_vmap=False,
                             **options),
                ntksap.score(model, NTKSAPReference(repeats=2, samples=16), **options)):
        for n in expected:
            assert oracles.relative_error(got[n], expected[n]) < 1e-8, n


def test_ntksap_fused_statistics_stay_close_to_the_reference():
    model = ConvBN()
    exact = ntksap.score(model, "ntksap", input_shape=(2, 6, 6), seed=0, samples=64)
    fused = ntksap.score(model, "ntksap", input_shape=(2, 6, 6), seed=0, samples=64,
                         fused_statistics=True)
    for n in exact:
        assert not torch.equal(exact[n], fused[n])
        assert (fused[n] - exact[n]).abs().max() < 0.02 * exact[n].abs().max()


def test_ntksap_draws_fresh_weights_for_every_draw(monkeypatch):
    import ntksap.methods.ntksap as module

    seen = []

    def recording_init(model, generator=None):
        out = kaiming_init_(model, generator)
        seen.append(model.conv1.weight.detach().clone())
        return out

    monkeypatch.setattr(module, "kaiming_init_", recording_init)
    model = ConvBN()
    before = copy.deepcopy(model.state_dict())
    ntksap.prune(model, "ntksap", 0.5, rounds=2, input_shape=(2, 6, 6), repeats=3, samples=10,
                 batch_size=4)
    assert len(seen) == 2 * 3 * 3  # rounds x repeats x batches (4 + 4 + 2)
    assert all(not torch.equal(a, b) for i, a in enumerate(seen) for b in seen[i + 1:])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_synflow_falls_back_to_float64_when_float32_overflows():
    torch.set_default_dtype(torch.float32)  # this test is about float32
    chain = torch.nn.Sequential(*[torch.nn.Linear(20, 20, bias=False) for _ in range(40)])
    with torch.no_grad():
        for layer in chain:
            layer.weight.uniform_(3.0, 4.0)  # path sums ~ (20 * 3.5)^40: beyond float32
    got = ntksap.score(chain, "synflow", input_shape=(20,))
    # in float32 R overflows to inf and the engine would raise NonFiniteScoreError
    assert all(torch.isfinite(s).all() and (s > 0).all() for s in got.values())
    masks = ntksap.prune(chain, "synflow", 0.5, rounds=3, input_shape=(20,))
    assert masks.total - masks.remaining == round(0.5 * masks.total)


def test_random_scores_are_draws_of_the_seeded_generator_not_the_global_one():
    """Every random draw comes from the context's generator (the method guide's rule):
    uniform scores layer by layer in the model's order, whatever the global RNG's state.
    (Through ntksap.prune both are seeded with the seed, so only a direct call can tell.)"""
    from ntksap.methods.random import Random

    model = ConvBN()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    net = ScoringNet(model, layers, {n: torch.ones_like(m.weight) for n, m in layers.items()})
    ctx = ScoreContext(1, 1, 0.5, (), 0, None, torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    scores = Random().scores(net, ctx)
    g = torch.Generator().manual_seed(5)
    for name, module in layers.items():
        assert torch.equal(scores[name], torch.rand(module.weight.shape, generator=g)), name
