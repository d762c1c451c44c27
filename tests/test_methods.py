"""Each method's score against a value computed by hand on a tiny network."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ConvBN, TinyLinear, TwoLayer
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
    _close(ntksap.score(model, "magnitude", input_shape=(3,))["fc"], model.fc.weight.abs())


def test_random_is_uniform_and_seeded():
    model = TwoLayer()
    a = ntksap.score(model, "random", input_shape=(3,), seed=1)
    b = ntksap.score(model, "random", input_shape=(3,), seed=1)
    c = ntksap.score(model, "random", input_shape=(3,), seed=2)
    for n in a:
        assert ((a[n] >= 0) & (a[n] < 1)).all()
        _close(a[n], b[n])
    assert not torch.equal(a["fc1"], c["fc1"])


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


def test_grasp_is_weight_times_hessian_gradient_product():
    model = TinyLinear()
    x, y = _data(n=1)
    temperature = 2.0
    w = model.fc.weight.detach()
    p = torch.softmax(x @ w.T / temperature, dim=1)[0]
    g = (p - F.one_hot(y, 2)[0]).outer(x[0]) / temperature
    hessian_logits = (torch.diag(p) - p.outer(p)) / temperature**2
    hg = (hessian_logits @ (g @ x[0])).outer(x[0])
    got = ntksap.score(model, "grasp", data=(x, y), temperature=temperature)["fc"]
    _close(got, w * hg)
    assert (got < 0).any() or (got > 0).any()  # signed, not absolute


def test_synflow_is_path_norm_derivative():
    model = TwoLayer()
    w1, w2 = model.fc1.weight.detach().abs(), model.fc2.weight.detach().abs()
    hidden = w1 @ torch.ones(3)
    expected1 = w1 * w2.sum(0)[:, None]
    expected2 = w2 * hidden[None, :]
    got = ntksap.score(model, "synflow", input_shape=(3,))
    _close(got["fc1"], expected1)
    _close(got["fc2"], expected2)


def _replay_draws(model, seed, repeats, size, n_in, eps):
    """The (z, delta) of each draw, drawn in the method's order from its seeded generator."""
    g = torch.Generator().manual_seed(seed)
    twin = copy.deepcopy(model)
    draws = []
    for _ in range(repeats):
        kaiming_init_(twin, g)
        z = torch.randn((size, n_in), generator=g)
        delta = torch.randn(model.fc.weight.shape, generator=g) * eps
        draws.append((z, delta))
    return draws


def test_ntksap_on_a_linear_network_is_the_perturbation_norm_gradient():
    # f(z) = (theta * m) z, so ||f(theta) - f(theta + delta)||^2 = ||(delta * m) z||^2 and
    # d/dm_ij = 2 sum_b (delta z_b)_i delta_ij z_bj, whatever theta is.
    model = TinyLinear()
    eps = 0.1
    got = ntksap.score(model, "ntksap", input_shape=(3,), seed=3, repeats=3, samples=4,
                       batch_size=4, eps=eps)["fc"]
    expected = torch.zeros(2, 3)
    for z, delta in _replay_draws(model, 3, 3, 4, 3, eps):
        expected += 2 * (z @ delta.T).T @ z * delta
    _close(got, expected.abs())


def test_ntksap_matches_the_reference_procedure_with_batchnorm():
    """Fresh weights per draw, eval-mode BatchNorm holding the batch's statistics from a
    train-mode pass: the same scores as the plain re-statement of the public code."""
    model = ConvBN()
    options = dict(input_shape=(2, 6, 6), seed=5, repeats=2, samples=16, batch_size=8)
    ours = ntksap.score(model, "ntksap", **options)
    batched = ntksap.score(model, "ntksap", draws_per_pass=4, **options)
    sequential = ntksap.score(model, "ntksap", pair_vmap=False, **options)
    options.pop("seed"), options.pop("input_shape"), options.pop("batch_size")
    reference = ntksap.score(model, NTKSAPReference(**{k: v for k, v in options.items()}),
                             input_shape=(2, 6, 6), seed=5, batch_size=8)
    for n in ours:
        torch.testing.assert_close(ours[n], reference[n], rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(batched[n], reference[n], rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(sequential[n], reference[n], rtol=1e-8, atol=1e-12)


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
