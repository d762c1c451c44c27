"""The scores and the NTK against the oracles of tests/oracles.py (written from the
specification alone, no ntksap code), in float64 on networks with BatchNorm; and the oracles
themselves against closed forms, so that they are known to be right."""

from __future__ import annotations

import copy

import oracles
import pytest
import torch
from conftest import ConvBN, TinyLinear, TwoLayer
from torch.nn import functional as F

import ntksap
from ntksap.methods import METHODS, ScoreContext, ScoringNet
from ntksap.ntk import empirical_ntk

pytestmark = pytest.mark.usefixtures("double_precision", "one_thread")

SHAPE = (2, 6, 6)
TIGHT = 1e-9  # float64: the same computation in another order


def _batches(sizes=(5, 4, 3), shape=SHAPE, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g))
            for n in sizes]


def _convbn_with_statistics(seed: int = 0) -> ConvBN:
    """ConvBN as after some training: BatchNorm running statistics and affine parameters
    away from their initial values (negative means and shifts included)."""
    torch.manual_seed(seed)
    model = ConvBN()
    with torch.no_grad():
        for bn in oracles.norms(model):
            bn.running_mean.normal_(0.0, 1.0)
            bn.running_var.uniform_(0.3, 3.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.5)
    return model


def _partial_masks(model, density: float = 0.6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(m.weight.shape, generator=g) < density
            for n, m in oracles.prunable(model).items()}


def _assert_matches(got: dict, expected: dict, tol: float = TIGHT) -> None:
    assert set(got) == set(expected)
    for n in expected:
        assert oracles.relative_error(got[n], expected[n]) < tol, n


def _differs(a: dict, b: dict, by: float = 1e-3) -> bool:
    return max(oracles.relative_error(a[n], b[n]) for n in b) > by


# ----- the oracles against closed forms


def test_ntksap_oracle_on_a_linear_network_is_the_perturbation_norm_gradient():
    # f(z) = (theta * m) z: ||f(theta) - f(theta + delta)||^2 = ||(delta * m) z||^2, whose
    # m-gradient is 2 sum_b ((delta z_b) outer z_b) * delta, whatever theta is
    model = TinyLinear()
    expected = torch.zeros(2, 3)
    for _, z, delta in oracles.ntksap_draws(model, (3,), [4, 2], repeats=2, eps=0.1, seed=3):
        expected += 2 * (z @ delta["fc"].T).T @ z * delta["fc"]
    got = oracles.ntksap_scores(model, (3,), [4, 2], repeats=2, eps=0.1, seed=3)
    assert oracles.relative_error(got["fc"], expected.abs()) < TIGHT


def test_ntk_oracle_on_a_linear_network():
    # f(x) = W x: K[(i, c), (j, d)] = [c == d] x_i . x_j
    model, x = TinyLinear(5, 3), torch.randn(4, 5)
    K = oracles.ntk(model, x).view(4, 3, 4, 3)
    expected = torch.einsum("ik,jk,cd->icjd", x, x, torch.eye(3))
    assert oracles.relative_error(K, expected) < TIGHT


def test_snip_and_grasp_oracles_on_a_linear_network():
    model, temperature = TinyLinear(), 200.0
    batches = _batches((3, 2), shape=(3,), classes=2)
    w = model.fc.weight.detach()
    g = torch.zeros_like(w)
    hg = torch.zeros_like(w)
    for x, y in batches:  # mean cross-entropy of (W x) / T, per batch
        p = torch.softmax(x @ w.T / temperature, dim=1)
        g += (p - F.one_hot(y, 2)).T @ x / (temperature * len(y))
    for x, _ in batches:  # H_b v = mean_i (diag p_i - p_i p_i^T)(v x_i) x_i^T / T^2
        p = torch.softmax(x @ w.T / temperature, dim=1)
        for pi, xi in zip(p, x, strict=True):
            hg += ((torch.diag(pi) - pi.outer(pi)) @ (g @ xi)).outer(xi) / (
                temperature ** 2 * len(x))
    got = oracles.grasp_scores(model, batches, temperature=temperature)["fc"]
    assert oracles.relative_error(got, w * hg) < TIGHT
    g1 = sum((torch.softmax(x @ w.T, 1) - F.one_hot(y, 2)).T @ x / len(y) for x, y in batches)
    assert oracles.relative_error(oracles.snip_scores(model, batches)["fc"],
                                  (g1 * w).abs()) < TIGHT


def test_synflow_oracle_on_a_two_layer_network():
    model = TwoLayer()
    w1, w2 = model.fc1.weight.detach().abs(), model.fc2.weight.detach().abs()
    got = oracles.synflow_scores(model, (3,))
    assert oracles.relative_error(got["fc1"], w1 * w2.sum(0)[:, None]) < TIGHT
    assert oracles.relative_error(got["fc2"], w2 * (w1 @ torch.ones(3))[None, :]) < TIGHT


# ----- NTK-SAP (section 3) with BatchNorm, every code path


@pytest.mark.parametrize("options", [
    {}, {"pair_vmap": True}, {"pair_vmap": False}, {"draws_per_pass": 3},
    {"draws_per_pass": 2, "pair_vmap": True}, {"channels_last": True}],
    ids=["default", "pair-vmap", "sequential", "draws-per-pass", "both", "channels-last"])
def test_ntksap_matches_the_oracle_with_batchnorm(options):
    """Fresh theta per draw, eval-mode BatchNorm with the statistics of a train-mode pass: the
    oracle's scores to float64 rounding, whichever speed path runs."""
    model = _convbn_with_statistics()
    got = ntksap.score(model, "ntksap", input_shape=SHAPE, seed=5, repeats=2, samples=20,
                       batch_size=8, eps=0.01, **options)
    expected = oracles.ntksap_scores(model, SHAPE, [8, 8, 4], repeats=2, eps=0.01, seed=5)
    _assert_matches(got, expected, 1e-8)


def test_ntksap_on_a_masked_network_matches_the_oracle():
    model = _convbn_with_statistics()
    masks = _partial_masks(model)
    expected = oracles.ntksap_scores(model, SHAPE, [6], repeats=3, eps=0.01, seed=2,
                                     masks=masks)
    ntksap.Masks(masks).apply(model)
    got = ntksap.score(model, "ntksap", input_shape=SHAPE, seed=2, repeats=3, samples=6,
                       batch_size=6)
    for n, m in masks.items():
        assert oracles.relative_error(got[n][m], expected[n][m]) < 1e-8, n


# ----- the BatchNorm mode of each baseline (section 4: train mode, SynFlow eval mode)


def test_snip_scores_with_batchnorm_in_train_mode():
    model, batches = _convbn_with_statistics(), _batches()
    expected = oracles.snip_scores(model, batches)
    _assert_matches(ntksap.score(model, "snip", data=batches), expected)
    assert _differs(oracles.snip_scores(model, batches, train=False), expected)


def test_iter_snip_scores_the_masked_network_with_batchnorm_in_train_mode():
    model, batches = _convbn_with_statistics(), _batches()
    masks = _partial_masks(model)
    expected = oracles.snip_scores(model, batches, masks)
    assert _differs(oracles.snip_scores(model, batches, masks, train=False), expected)
    ntksap.Masks(masks).apply(model)
    got = ntksap.score(model, "iter_snip", data=batches)
    for n, m in masks.items():
        assert oracles.relative_error(got[n][m], expected[n][m]) < TIGHT


def test_force_scores_every_weight_with_batchnorm_in_train_mode():
    model, batches = _convbn_with_statistics(), _batches()
    _assert_matches(ntksap.score(model, "force", data=batches),
                    oracles.snip_scores(model, batches))
    # within a pruning run the scoring copy keeps theta under a partial mask: the gradient
    # is taken at theta * m, and pruned weights keep a saliency (they may return)
    masks = _partial_masks(model)
    expected = oracles.snip_scores(model, batches, masks)
    clone = copy.deepcopy(model).train()
    layers = dict(clone.named_modules())
    net = ScoringNet(clone, {n: layers[n] for n in masks}, masks)
    ctx = ScoreContext(round=2, rounds=2, density=0.5, input_shape=SHAPE, num_outputs=3,
                       data=batches, generator=torch.Generator())
    got = METHODS["force"]().scores(net, ctx)
    _assert_matches(got, expected)
    assert all((got[n][~m] > 0).all() for n, m in masks.items())
    assert _differs(oracles.snip_scores(model, batches, masks, train=False), expected)


def test_grasp_scores_with_batchnorm_in_train_mode_default_temperature_several_batches():
    model, batches = _convbn_with_statistics(), _batches()
    expected = oracles.grasp_scores(model, batches)  # temperature 200
    got = ntksap.score(model, "grasp", data=batches)
    _assert_matches(got, expected, 1e-8)
    signs = torch.cat([s.flatten() for s in got.values()])
    assert (signs < 0).sum() > 10 and (signs > 0).sum() > 10  # abs() would fail the match
    assert _differs(oracles.grasp_scores(model, batches, train=False), expected)
    assert _differs(oracles.grasp_scores(model, batches, temperature=2.0), expected)


def test_synflow_scores_with_batchnorm_in_eval_mode_and_absolute_buffers():
    model = _convbn_with_statistics()
    masks = _partial_masks(model)
    expected = oracles.synflow_scores(model, SHAPE)
    _assert_matches(ntksap.score(model, "synflow", input_shape=SHAPE), expected)
    assert _differs(oracles.synflow_scores(model, SHAPE, train=True), expected)
    assert _differs(oracles.synflow_scores(model, SHAPE, abs_buffers=False), expected)
    # a later round: the masked network's flow
    expected = oracles.synflow_scores(model, SHAPE, masks)
    ntksap.Masks(masks).apply(model)
    got = ntksap.score(model, "synflow", input_shape=SHAPE)
    for n, m in masks.items():
        assert oracles.relative_error(got[n][m], expected[n][m]) < TIGHT


# ----- the empirical NTK (section 7)


@pytest.mark.parametrize("backend", ["structured", "func"])
def test_ntk_matches_the_oracle_with_batchnorm_dense_and_masked(backend):
    model, x = _convbn_with_statistics(), torch.randn(5, *SHAPE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _assert_matches({"K": empirical_ntk(model, x, backend=backend)},
                    {"K": oracles.ntk(model, x)}, 1e-10)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    ntksap.Masks(_partial_masks(model)).apply(model)
    _assert_matches({"K": empirical_ntk(model, x, backend=backend)},
                    {"K": oracles.ntk(model, x)}, 1e-10)
