"""Scoring over several pruning batches, the scoring layout and dtype, NTK-SAP's batched code
paths, the finite-difference trace's parameters, and the reference procedure's copies.

The oracles here are written from the specification (reference sections 3 and 4) with plain
autograd on a copy of the model; they share no code with ``ntksap.methods``.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import ConvBN
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import ntksap
from ntksap.cli import main
from ntksap.engine import default_channels_last
from ntksap.errors import NtksapError
from ntksap.methods import METHODS
from ntksap.models.init import kaiming_init_
from ntksap.ntk import finite_difference_trace, ntk_trace
from ntksap.reference import NTKSAPReference

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 6, 6)


def _set(n: int, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *SHAPE, generator=g, dtype=dtype),
            torch.randint(0, 3, (n,), generator=g))


def _split(x: torch.Tensor, y: torch.Tensor, sizes: list[int]):
    out, start = [], 0
    for size in sizes:
        out.append((x[start:start + size], y[start:start + size]))
        start += size
    assert start == len(x)
    return out


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def snip_oracle(model: nn.Module, batches) -> dict[str, torch.Tensor]:
    """|sum over batches of dL_b/dw * w| (= |sum_b dL_b/dm| at m = 1), BatchNorm in train
    mode, each batch its own BatchNorm batch."""
    net = copy.deepcopy(model).train()
    w = _weights(net)
    total = {n: torch.zeros_like(p) for n, p in w.items()}
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(net(x), y), list(w.values()))
        for n, g in zip(w, grads, strict=True):
            total[n] += g
    return {n: (total[n] * w[n]).abs().detach() for n in w}


def grasp_oracle(model: nn.Module, batches, temperature: float = 200.0
                 ) -> dict[str, torch.Tensor]:
    """w * (H g): g = sum_b grad L_b (logits / T), H g = sum_b grad of (g . grad L_b)."""
    net = copy.deepcopy(model).train()
    w = _weights(net)
    params = list(w.values())

    def loss(x, y):
        return F.cross_entropy(net(x) / temperature, y)

    g = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        for acc, gi in zip(g, torch.autograd.grad(loss(x, y), params), strict=True):
            acc += gi
    hg = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        grads = torch.autograd.grad(loss(x, y), params, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(g, grads, strict=True))
        for acc, h in zip(hg, torch.autograd.grad(dot, params), strict=True):
            acc += h
    return {n: (p * h).detach() for (n, p), h in zip(w.items(), hg, strict=True)}


def _close(got: dict, expected: dict, rtol: float = 1e-9) -> None:
    assert set(got) == set(expected)
    for n in expected:
        torch.testing.assert_close(got[n].double(), expected[n].double(), rtol=rtol,
                                   atol=1e-12 * float(expected[n].abs().max()))


def _differ(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[n], b[n], rtol=1e-6, atol=0) for n in a)


# ----- item 1: the pruning set in batches


@pytest.mark.usefixtures("double_precision")
@pytest.mark.parametrize("method", ["snip", "iter_snip", "force"])
def test_tensors_are_cut_into_batches_and_gradients_summed_before_abs(method):
    model, (x, y) = ConvBN(), _set(10)
    expected = snip_oracle(model, _split(x, y, [4, 4, 2]))  # full mask: FORCE = SNIP
    _close(ntksap.score(model, method, data=(x, y), batch_size=4), expected)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    _close(ntksap.score(model, method, data=loader), expected)
    # one BatchNorm batch of 10 gives other scores: the test sees the batching
    assert _differ(snip_oracle(model, [(x, y)]), expected)


@pytest.mark.usefixtures("double_precision")
def test_grasp_over_several_batches_at_its_default_temperature():
    model, (x, y) = ConvBN(), _set(10, seed=1)
    expected = grasp_oracle(model, _split(x, y, [4, 4, 2]))
    _close(ntksap.score(model, "grasp", data=(x, y), batch_size=4), expected, rtol=1e-7)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    _close(ntksap.score(model, "grasp", data=loader), expected, rtol=1e-7)
    assert _differ(grasp_oracle(model, [(x, y)]), expected)


@pytest.mark.usefixtures("double_precision")
def test_default_batch_size_is_the_reference_256():
    model, (x, y) = ConvBN(), _set(300, seed=2)
    expected = snip_oracle(model, _split(x, y, [256, 44]))
    _close(ntksap.score(model, "snip", data=(x, y)), expected)
    assert _differ(snip_oracle(model, [(x, y)]), expected)
    masks = ntksap.prune(model, "snip", 0.5, data=(x, y))
    assert masks.meta["batch_size"] == 256


@pytest.mark.parametrize("sizes,per_repeat", [([100], 1), ([4, 4, 2], 3),
                                              ([256, 256, 256, 232], 4)])
def test_ntksap_draws_once_per_batch_per_repeat(monkeypatch, sizes, per_repeat):
    import ntksap.methods.ntksap as module

    draws: list[int] = []
    real_randn = torch.randn

    def recording_init(model, generator=None):
        draws.append(0)
        return kaiming_init_(model, generator)

    monkeypatch.setattr(module, "kaiming_init_", recording_init)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    n = sum(sizes)
    x, y = torch.randn(n, 4), torch.zeros(n, dtype=torch.long)
    batch = sizes[0]
    shapes: list[int] = []

    def recording_randn(*args, **kw):
        out = real_randn(*args, **kw)
        if out.dim() == 2 and out.shape[1] == 4 and out.shape != (3, 4):
            shapes.append(out.shape[0])
        return out

    monkeypatch.setattr(module.torch, "randn", recording_randn)
    ntksap.score(model, "ntksap", data=(x, y), batch_size=batch, repeats=2)
    assert len(draws) == 2 * per_repeat and shapes == sizes * 2
    # data-free, the pruning set's size as samples (10 x classes by default): the same draws
    draws.clear(), shapes.clear()
    ntksap.score(model, "ntksap", input_shape=(4,), samples=n, batch_size=batch, repeats=2)
    assert len(draws) == 2 * per_repeat and shapes == sizes * 2


def test_cli_prune_feeds_the_pruning_set_in_batches(tmp_path, capsys):
    from ntksap.data import load_dataset

    x, y = load_dataset("synthetic", progress=False).pruning_set(seed=0)
    model = ntksap.build_model("convnet", 10, seed=0)
    paths = {size: tmp_path / f"b{size}.pt" for size in (30, 256)}
    for size, path in paths.items():
        assert main(["prune", "--model", "convnet", "--method", "snip", "--sparsity", "0.9",
                     "--dataset", "synthetic", "--batch-size", str(size), "--out", str(path),
                     "--no-progress"]) == 0
    by_30 = ntksap.prune(model, "snip", 0.9, data=_split(x, y, [30, 30, 30, 10]))
    whole = ntksap.prune(model, "snip", 0.9, data=[(x, y)])  # 100 < 256: one batch
    got_30, got_256 = (ntksap.Masks.load(p) for p in paths.values())
    assert all(torch.equal(got_30[n], by_30[n]) for n in by_30)
    assert all(torch.equal(got_256[n], whole[n]) for n in whole)
    assert any(not torch.equal(by_30[n], whole[n]) for n in whole)


def test_batch_size_must_be_positive():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(NtksapError, match="batch_size must be a positive integer"):
            ntksap.prune(ConvBN(), "snip", 0.5, data=_set(4, dtype=torch.float32),
                         batch_size=bad)


# ----- item 2: the scoring layout


def test_cpu_default_scores_in_the_precise_contiguous_layout():
    # channels_last on CPU: train-mode BatchNorm loses precision in float32 and SNIP keeps
    # other weights (87 of 27,090 on this machine); the default must be the NCHW result
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 3, 32, 32, generator=g), torch.randint(0, 10, (100,), generator=g)
    model = ntksap.build_model("resnet20", 10, seed=0)
    default = ntksap.prune(model, "snip", 0.9, data=(x, y))
    nchw = ntksap.prune(model, "snip", 0.9, data=(x, y), channels_last=False)
    assert default.meta["channels_last"] is False
    assert all(torch.equal(default[n], nchw[n]) for n in nchw)
    forced = ntksap.prune(model, "magnitude", 0.9, input_shape=(3, 32, 32), channels_last=True)
    assert forced.meta["channels_last"] is True  # still a named option
    assert default_channels_last((3, 32, 32), torch.device("cuda"))
    assert not default_channels_last((3, 32, 32), torch.device("cpu"))
    assert not default_channels_last((10,), torch.device("cuda"))


# ----- item 3: the model's dtype


@pytest.mark.parametrize("method", list(METHODS))
def test_float64_model_scores_under_the_float32_default_dtype(method):
    assert torch.get_default_dtype() == torch.float32
    model = ConvBN().double()
    x64, y = _set(8, seed=3)
    options = {"samples": 8, "repeats": 1} if method == "ntksap" else {}
    data = (x64.float(), y) if METHODS[method].needs_data else None
    masks = ntksap.prune(model, method, 0.5, input_shape=SHAPE, data=data, rounds=2, **options)
    assert masks.total - masks.remaining == round(0.5 * masks.total)
    got = ntksap.score(model, method, input_shape=SHAPE, data=data, **options)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # the same float64 computation, with float64 as the default dtype
        data64 = (x64.float().double(), y) if data is not None else None
        expected = ntksap.score(model, method, input_shape=SHAPE, data=data64, **options)
    finally:
        torch.set_default_dtype(previous)
    if method != "random":  # uniform draws come in the default dtype: only the count matters
        _close(got, expected, rtol=1e-12)


# ----- item 4: the finite-difference trace perturbs what NTK-SAP perturbs


def test_finite_difference_trace_perturbs_the_prunable_weights_by_default():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()  # f = W x + b: no curvature, the estimate is unbiased
    with torch.no_grad():
        model.bias.normal_()
    x = 0.1 * torch.randn(6, 5, dtype=torch.float64)
    weights_only = ntk_trace(model, x, params="prunable")  # 3 * sum ||x_i||^2
    everything = ntk_trace(model, x, params="all")  # + 6 inputs x 3 logits from the bias
    assert weights_only == pytest.approx(3 * float(x.pow(2).sum()), rel=1e-9)
    est = finite_difference_trace(model, x, samples=2000, eps=1e-3, seed=0,
                                  probes_per_pass=500)
    assert abs(est.value - weights_only) < 5 * est.stderr
    assert abs(est.value - everything) > 0.5 * everything


# ----- item 5: NTK-SAP's GPU defaults, run on CPU against the sequential path


@pytest.mark.usefixtures("double_precision")
def test_ntksap_pair_vmap_and_draws_per_pass_equal_the_sequential_path():
    model = ConvBN()
    before = copy.deepcopy(model.state_dict())
    # draws of batch sizes 8, 8, 4 per repeat: vmapped chunks of equal sizes, and a rest
    options = dict(input_shape=SHAPE, seed=7, repeats=2, samples=20, batch_size=8)
    sequential = ntksap.score(model, "ntksap", pair_vmap=False, draws_per_pass=1, **options)
    for variant in ({"pair_vmap": True, "draws_per_pass": 1},
                    {"pair_vmap": False, "draws_per_pass": 3},
                    {"pair_vmap": True, "draws_per_pass": 2}):
        _close(ntksap.score(model, "ntksap", **variant, **options), sequential, rtol=1e-10)
    # BatchNorm statistics matter at this tolerance: the fused (eval-form) statistics, an
    # O(1/n) change, already differ
    fused = ntksap.score(model, "ntksap", fused_statistics=True, **options)
    assert _differ(fused, sequential)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# ----- item 12: the reference procedure copies the twin once per round


def test_reference_copies_the_perturbed_twin_once_per_round(monkeypatch):
    import ntksap.reference as reference

    copies = []
    real = copy.deepcopy

    def counting(obj, memo=None):
        if isinstance(obj, nn.Module):
            copies.append(type(obj).__name__)
        return real(obj, memo)

    monkeypatch.setattr(reference, "copy", SimpleNamespace(deepcopy=counting))
    ntksap.prune(ConvBN(), NTKSAPReference(repeats=3, samples=8), 0.5, rounds=2,
                 input_shape=SHAPE, batch_size=4)
    assert copies == ["ConvBN", "ConvBN"]  # 2 rounds x (3 repeats x 2 batches) draws
