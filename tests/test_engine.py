"""The engine: exact sparsity for every method, monotone masks, untouched models, transforms,
and clear errors for bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ConvBN
from torch import nn

import ntksap
from ntksap.errors import (
    InputShapeError,
    LayerCollapseError,
    MaskMismatchError,
    MissingDataError,
    NonFiniteScoreError,
    NoPrunableLayersError,
    NtksapError,
    UnknownNameError,
)
from ntksap.methods import METHODS, Method

SHAPE = (2, 6, 6)


def _data(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 3, (n,), generator=g)


def _prune(model, method, sparsity, **kw):
    kw.setdefault("input_shape", SHAPE)
    if METHODS[method].needs_data:
        kw.setdefault("data", _data())
    if method == "ntksap":
        kw.setdefault("samples", 8)
        kw.setdefault("repeats", 1)
    if method == "ntt":  # its default 401 steps are timed in test_ntt_transfer
        kw.setdefault("steps", 20)
        kw.setdefault("progress_bar", False)
    return ntksap.prune(model, method, sparsity, **kw)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_removes_exactly_the_requested_count(method):
    model = ConvBN()
    masks = _prune(model, method, 0.8, rounds=3)
    assert masks.total - masks.remaining == round(0.8 * masks.total)
    masks.apply(model)
    assert ntksap.measured_sparsity(model) == pytest.approx(round(0.8 * masks.total)
                                                            / masks.total)


@pytest.mark.parametrize("method", [m for m, c in METHODS.items() if c.monotone])
def test_masks_are_monotone_across_rounds(method):
    history = []
    _prune(ConvBN(), method, 0.9, rounds=4, on_round=lambda t, m: history.append(m))
    assert len(history) == 4
    for earlier, later in zip(history, history[1:], strict=False):
        assert later.remaining < earlier.remaining
        for n in earlier:
            assert not (later[n] & ~earlier[n]).any(), f"{n} regrew a pruned weight"


@pytest.mark.parametrize("method", list(METHODS))
def test_scoring_leaves_weights_and_batchnorm_statistics_untouched(method):
    model = ConvBN()
    model.train()
    model(torch.randn(4, *SHAPE))  # non-trivial running statistics
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    # NTT's default writes its transferred weights into the model (test_ntt_transfer)
    options = {"start_from": "initial"} if method == "ntt" else {}
    _prune(model, method, 0.7, rounds=2, **options)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("method", list(METHODS))
def test_same_seed_same_mask(method):
    model = ConvBN()
    twin = copy.deepcopy(model)  # before: NTT writes its transferred weights into the model
    a = _prune(model, method, 0.8, seed=7, rounds=2)
    b = _prune(twin, method, 0.8, seed=7, rounds=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    if method in ("random", "ntksap"):
        c = _prune(model, method, 0.8, seed=8, rounds=2)
        assert any(not torch.equal(a[n], c[n]) for n in a)


def test_shuffle_keeps_every_layer_count_and_moves_weights():
    model = ConvBN()
    plain = _prune(model, "magnitude", 0.6)
    shuffled = _prune(model, "magnitude", 0.6, transform="shuffle")
    assert [r["remaining"] for r in plain.layers()] == [r["remaining"] for r in
                                                         shuffled.layers()]
    assert any(not torch.equal(plain[n], shuffled[n]) for n in plain)


def test_invert_prunes_the_highest_scores():
    model = ConvBN()
    inverted = _prune(model, "magnitude", 0.5, transform="invert")
    weights = torch.cat([model.get_submodule(n).weight.detach().abs().flatten()
                         for n in inverted])
    kept = torch.cat([inverted[n].flatten() for n in inverted])
    assert weights[kept].max() <= weights[~kept].min()


def test_reinit_keeps_the_mask_and_redraws_the_weights():
    model = ConvBN()
    before = model.conv1.weight.detach().clone()
    plain = _prune(copy.deepcopy(model), "magnitude", 0.5)
    reinit = _prune(model, "magnitude", 0.5, transform="reinit")
    assert all(torch.equal(plain[n], reinit[n]) for n in plain)
    assert not torch.equal(model.conv1.weight, before)


def test_layer_filter_keeps_excluded_layers_dense():
    model = ConvBN()
    masks = _prune(model, "magnitude", 0.9, layer_filter=ntksap.exclude_layers("fc", "conv1"))
    assert "fc" not in masks and "conv1" not in masks
    masks.apply(model)
    assert (model.fc.weight != 0).all()


def test_layer_collapse_is_an_error_when_forbidden():
    class Lopsided(nn.Module):
        def __init__(self):
            super().__init__()
            self.small = nn.Linear(4, 4, bias=False)
            self.big = nn.Linear(4, 400, bias=False)

        def forward(self, x):
            return self.big(self.small(x))

    model = Lopsided()
    with torch.no_grad():
        model.small.weight.fill_(1e-6)
    masks = ntksap.prune(model, "magnitude", 0.9, input_shape=(4,))
    assert masks.meta["collapsed_layers"] == ["small"]
    with pytest.raises(LayerCollapseError, match="small"):
        ntksap.prune(model, "magnitude", 0.9, input_shape=(4,), allow_layer_collapse=False)


def test_pruning_a_masked_model_continues_from_its_masks():
    model = ConvBN()
    first = _prune(model, "magnitude", 0.5)
    first.apply(model)
    second = _prune(model, "random", 0.8)
    assert all(not (second[n] & ~first[n]).any() for n in first)
    with pytest.raises(NtksapError, match="already pruned"):
        _prune(model, "random", 0.3)


# Bad input -----------------------------------------------------------------------------------

def test_unknown_method_names_the_choices():
    with pytest.raises(UnknownNameError, match="unknown method 'nope'.*ntksap"):
        ntksap.prune(ConvBN(), "nope", 0.5, input_shape=SHAPE)


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownNameError, match="unknown model 'resnet21'.*resnet20"):
        ntksap.build_model("resnet21")


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, "0.5", float("nan"), True])
def test_sparsity_outside_unit_interval(sparsity):
    with pytest.raises(NtksapError, match=r"sparsity must be a number in \[0, 1\)"):
        ntksap.prune(ConvBN(), "random", sparsity, input_shape=SHAPE)


def test_unknown_option_lists_the_method_options():
    with pytest.raises(NtksapError, match="no option bogus.*repeats"):
        ntksap.prune(ConvBN(), "ntksap", 0.5, input_shape=SHAPE, bogus=1)


def test_model_without_prunable_layers():
    with pytest.raises(NoPrunableLayersError, match="no prunable layers"):
        ntksap.prune(nn.Sequential(nn.ReLU()), "random", 0.5, input_shape=(3,))


def test_input_shape_the_model_cannot_take():
    with pytest.raises(InputShapeError, match=r"cannot take inputs of shape \(3, 32, 32\)"):
        ntksap.prune(ConvBN(), "random", 0.5, input_shape=(3, 32, 32))


def test_non_finite_scores_name_the_layer():
    class Broken(Method):
        name = "broken"

        def scores(self, net, ctx):
            out = {n: torch.ones_like(w) for n, w in net.weights().items()}
            out["conv2"][0, 0, 0, 0] = float("nan")
            return out

    with pytest.raises(NonFiniteScoreError, match="layer 'conv2'"):
        ntksap.prune(ConvBN(), Broken(), 0.5, input_shape=SHAPE)


@pytest.mark.parametrize("method", [m for m, c in METHODS.items() if c.needs_data])
def test_data_needing_method_without_data(method):
    with pytest.raises(MissingDataError, match=f"method '{method}' needs a pruning set"):
        ntksap.prune(ConvBN(), method, 0.5, input_shape=SHAPE)


def test_masks_for_another_model():
    masks = _prune(ConvBN(num_classes=3), "random", 0.5)
    with pytest.raises(MaskMismatchError, match="layer 'fc' has weight shape"):
        masks.apply(ConvBN(num_classes=5))
    with pytest.raises(MaskMismatchError, match="no prunable layer 'conv1'"):
        masks.apply(ntksap.build_model("mlp"))


def test_methods_without_a_forward_pass_need_no_input_shape():
    model = ConvBN()
    for method in ("magnitude", "random"):
        plain = ntksap.prune(model, method, 0.5, seed=1)
        shaped = ntksap.prune(model, method, 0.5, seed=1, input_shape=(2, 8, 8))
        assert plain.remaining == shaped.remaining
        assert all(torch.equal(plain[n], shaped[n]) for n in plain)
    for method in ("synflow", "ntksap"):  # they run the network: the shape is required
        with pytest.raises(NtksapError, match=f"{method}.*input_shape"):
            ntksap.prune(model, method, 0.5)
    with pytest.raises(MissingDataError):
        ntksap.prune(model, "snip", 0.5)
