"""ProsPr and Neural Tangent Transfer against oracles written from their papers' definitions:
SGD through torch.optim and finite differences for ProsPr's meta-gradient, per-example
autograd Jacobians for NTT's kernel distance."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ConvBN
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import ntksap
from ntksap.errors import ConfigError, MemoryBudgetError, MissingDataError
from ntksap.methods import METHODS, ScoreContext, ScoringNet
from ntksap.methods.ntt import NTT, cross_kernel
from ntksap.methods.prospr import ProsPr
from ntksap.ntk import empirical_ntk

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, 6, 6, generator=g, dtype=dtype),
            torch.randint(0, 3, (n,), generator=g))


def _conv_bn(dtype=torch.float32) -> nn.Module:
    """ConvBN with BatchNorm statistics moved off their initial values, in eval mode."""
    torch.manual_seed(0)
    model = ConvBN().to(dtype)
    model.train()
    with torch.no_grad():
        model(_images(8, seed=5, dtype=dtype)[0])
    return model.eval()


def _prunable(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


# ----- ProsPr

def test_prospr_with_no_steps_is_snip(double_precision):
    """In float64, to 1e-12: the two reach |dL/dm| through different code (ProsPr's
    functional steps, SNIP's mask gradients), so float32 equality would hold by luck."""
    model = _conv_bn(torch.float64)
    data = _images(10, dtype=torch.float64)
    snip = ntksap.score(model, "snip", data=data)
    prospr = ntksap.score(model, "prospr", data=data, steps=0)
    for name in snip:
        torch.testing.assert_close(prospr[name], snip[name], rtol=1e-12, atol=1e-15)


def _loss_after_sgd(model: nn.Module, weights: dict[str, torch.Tensor],
                    batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float,
                    momentum: float) -> torch.Tensor:
    """The cross-entropy on the last batch after len(batches) - 1 steps of torch.optim.SGD
    on every parameter, from ``model`` with its prunable weights replaced by ``weights``,
    BatchNorm in train mode. With ``momentum`` this is PyTorch's SGD, not the authors' loop
    (see :func:`_loss_after_authors_sgd`): the test below shows the two differ."""
    net = copy.deepcopy(model).train()
    with torch.no_grad():
        for name, module in _prunable(net).items():
            module.weight.copy_(weights[name])
    sgd = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    for x, y in batches[:-1]:
        sgd.zero_grad()
        F.cross_entropy(net(x), y).backward()
        sgd.step()
    x, y = batches[-1]
    with torch.no_grad():
        return F.cross_entropy(net(x), y)


def _perturbed(theta: dict[str, torch.Tensor], name: str, index: tuple, h: float
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``theta`` with layer ``name``'s mask entry ``index`` at 1 + h and at 1 - h."""
    plus, minus = dict(theta), dict(theta)
    mask = torch.ones_like(theta[name])
    mask[index] += h
    plus[name] = theta[name] * mask
    mask[index] -= 2 * h
    minus[name] = theta[name] * mask
    return plus, minus


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    net = copy.deepcopy(model).train()
    F.cross_entropy(net(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in net.named_parameters()}


def _loss_after_authors_sgd(model: nn.Module, weights: dict[str, torch.Tensor],
                            batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float,
                            momentum: float, first: dict[str, torch.Tensor]) -> torch.Tensor:
    """The authors' inner loop with momentum, restated from their description of
    ``functional_sgd`` (mil-ad/prospr): the first step's momentum buffer is a detached copy of
    its gradient and is the first update; so, differentiating by the mask, that gradient is
    the constant ``first`` (taken at the unperturbed weights). Later steps: v = momentum * v
    + g, theta -= lr * v. Returns the cross-entropy on the last batch; BatchNorm in train
    mode; written with plain parameter updates (no torch.optim)."""
    net = copy.deepcopy(model).train()
    with torch.no_grad():
        for name, module in _prunable(net).items():
            module.weight.copy_(weights[name])
        velocity = {n: first[n].clone() for n, _ in net.named_parameters()}
        for n, p in net.named_parameters():
            p -= lr * velocity[n]
    for x, y in batches[1:-1]:
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        with torch.no_grad():
            for n, p in net.named_parameters():
                velocity[n] = momentum * velocity[n] + p.grad
                p -= lr * velocity[n]
    x, y = batches[-1]
    with torch.no_grad():
        return F.cross_entropy(net(x), y)


def _inner_batches(x: torch.Tensor, y: torch.Tensor, steps: int, size: int,
                   new_batch_per_step: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ProsPr's K + 1 batches of ``size``: the first ``size`` examples every time, or step k on
    examples size k .. size k + size - 1 of the set, wrapping around."""
    if not new_batch_per_step:
        return [(x[:size], y[:size])] * (steps + 1)
    order = [[i % len(x) for i in range(size * k, size * k + size)] for k in range(steps + 1)]
    return [(x[idx], y[idx]) for idx in order]


@pytest.mark.parametrize(("momentum", "new_batch_per_step"), [(0.0, False), (0.9, True),
                                                               (0.9, False)])
def test_prospr_meta_gradient_equals_finite_differences_through_the_steps(
        momentum, new_batch_per_step):
    """Without momentum: the derivative of the loss after K steps of plain SGD. With
    momentum: of the authors' loop, whose first step's update is a detached gradient."""
    model = _conv_bn(torch.float64)
    x, y = _images(9, seed=1, dtype=torch.float64)
    steps, lr, size = 2, 0.2, 4
    batches = _inner_batches(x, y, steps, size, new_batch_per_step)
    scores = ntksap.score(model, "prospr", data=(x, y), steps=steps, lr=lr, momentum=momentum,
                          meta_batch_size=size, new_batch_per_step=new_batch_per_step)
    theta = {n: m.weight.detach().clone() for n, m in _prunable(model).items()}
    first = _gradients(model, *batches[0])

    def loss(weights):
        if momentum:
            return _loss_after_authors_sgd(model, weights, batches, lr, momentum, first)
        return _loss_after_sgd(model, weights, batches, lr, momentum)

    g = torch.Generator().manual_seed(3)
    h = 1e-6
    for name, weight in theta.items():
        for flat in torch.randperm(weight.numel(), generator=g)[:6].tolist():
            index = torch.unravel_index(torch.tensor(flat), weight.shape)
            plus, minus = _perturbed(theta, name, index, h)
            difference = (loss(plus) - loss(minus)) / (2 * h)
            assert float(scores[name][index]) == pytest.approx(abs(float(difference)),
                                                               rel=1e-5, abs=1e-9)


def _authors_meta_gradient(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                           lr: float, momentum: float, first_order: bool
                           ) -> dict[str, torch.Tensor]:
    """|dL/dm| of the authors' procedure (mil-ad/prospr, restated from its description):
    masks m (ones) on the prunable weights, theta_0 = every parameter, the prunable weights
    times m; K steps theta_{k+1} = theta_k - lr v_k with v_k = g_k (momentum 0), or v_0 = g_0
    detached and v_k = momentum v_{k-1} + g_k; g_k the gradient of batch k's cross-entropy,
    its graph kept (full) or cut (first-order); L the cross-entropy of the last batch after
    the K steps; BatchNorm in train mode. Exact (autograd through the restated loop), so it
    can be compared to rounding, not to a finite difference's error."""
    net = copy.deepcopy(model).train()
    prunable = _prunable(net)
    masks = {n: torch.ones_like(m.weight, requires_grad=True) for n, m in prunable.items()}
    params = {k: p.detach().clone().requires_grad_(True) for k, p in net.named_parameters()}
    for name in prunable:
        params[f"{name}.weight"] = params[f"{name}.weight"] * masks[name]
    velocity: dict[str, torch.Tensor] = {}
    for k, (x, y) in enumerate(batches[:-1]):
        loss = F.cross_entropy(functional_call(net, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        stepped = {}
        for (name, p), g in zip(params.items(), grads, strict=True):
            if first_order:
                g = g.detach()
            if momentum:
                g = g.detach() if k == 0 else momentum * velocity[name] + g
                velocity[name] = g
            stepped[name] = p - lr * g
        params = stepped
    x, y = batches[-1]
    loss = F.cross_entropy(functional_call(net, params, (x,)), y)
    meta = torch.autograd.grad(loss, list(masks.values()))
    return {n: g.abs() for n, g in zip(masks, meta, strict=True)}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("new_batch_per_step", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_prospr_equals_the_authors_procedure_to_rounding(momentum, new_batch_per_step,
                                                        first_order):
    model = _conv_bn(torch.float64)
    x, y = _images(9, seed=1, dtype=torch.float64)
    steps, lr, size = 3, 0.2, 4
    batches = _inner_batches(x, y, steps, size, new_batch_per_step)
    scores = ntksap.score(model, "prospr", data=(x, y), steps=steps, lr=lr, momentum=momentum,
                          meta_batch_size=size, new_batch_per_step=new_batch_per_step,
                          first_order=first_order)
    expected = _authors_meta_gradient(model, batches, lr, momentum, first_order)
    for name, value in expected.items():
        torch.testing.assert_close(scores[name], value, rtol=1e-8, atol=1e-14)


def test_prospr_with_momentum_is_not_pytorchs_sgd():
    """The authors' detached first buffer matters: at momentum 0.9 the scores differ from the
    meta-gradient through PyTorch's SGD by far more than rounding."""
    model = _conv_bn(torch.float64)
    x, y = _images(8, seed=1, dtype=torch.float64)
    scores = ntksap.score(model, "prospr", data=(x, y), steps=2, lr=0.2, momentum=0.9,
                          meta_batch_size=8)
    theta = {n: m.weight.detach().clone() for n, m in _prunable(model).items()}
    name = next(iter(theta))
    h, index = 1e-6, (0,) * theta[name].dim()
    plus, minus = _perturbed(theta, name, index, h)
    batches = [(x, y)] * 3
    pytorch = abs(float(_loss_after_sgd(model, plus, batches, 0.2, 0.9)
                        - _loss_after_sgd(model, minus, batches, 0.2, 0.9)) / (2 * h))
    assert abs(float(scores[name][index]) - pytorch) > 1e-3 * pytorch


def test_prospr_first_order_is_the_gradient_after_the_steps_times_theta():
    model = _conv_bn(torch.float64)
    x, y = _images(6, seed=2, dtype=torch.float64)
    scores = ntksap.score(model, "prospr", data=(x, y), steps=3, lr=0.1, first_order=True)
    net = copy.deepcopy(model).train()
    theta = {n: m.weight.detach().clone() for n, m in _prunable(net).items()}
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        sgd.zero_grad()
        F.cross_entropy(net(x), y).backward()
        sgd.step()
    sgd.zero_grad()
    F.cross_entropy(net(x), y).backward()
    for name, module in _prunable(net).items():
        torch.testing.assert_close(scores[name], (module.weight.grad * theta[name]).abs())


def test_prospr_refuses_steps_over_its_memory_budget():
    with pytest.raises(MemoryBudgetError, match="lower meta_batch_size.*first_order=True"):
        ntksap.prune(_conv_bn(), "prospr", 0.5, data=_images(6), memory_budget="1KiB")


@pytest.mark.parametrize("options", [dict(steps=-1), dict(steps=1.5), dict(lr=0),
                                     dict(momentum=1.0), dict(meta_batch_size=0),
                                     dict(first_order="yes"), dict(memory_budget="lots")])
def test_prospr_options_are_checked(options):
    with pytest.raises(ConfigError):
        ProsPr(**options)


def test_prospr_needs_data():
    with pytest.raises(MissingDataError):
        ntksap.prune(_conv_bn(), "prospr", 0.5, input_shape=(2, 6, 6))


# ----- NTT

class BiasMLP(nn.Module):
    """f(x) = W2 tanh(W1 x + b1) + b2: no BatchNorm, so the oracle's kernel is plain."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _kernel(model: nn.Module, weights: dict[str, torch.Tensor],
            masks: dict[str, torch.Tensor], x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """K(x1, x2)[(i, c), (j, d)] = <d f_c(x1_i), d f_d(x2_j)> over every parameter of the
    network with weights ``weights * masks``, the gradients taken with respect to the
    unmasked weights (a pruned weight's column is zero); each row one autograd gradient of
    one logit of one example."""
    net = copy.deepcopy(model)
    layers = _prunable(net)
    with torch.no_grad():
        for name, module in layers.items():
            module.weight.copy_(weights[name] * masks[name])
    chain = {id(m.weight): masks[n].to(m.weight.dtype) for n, m in layers.items()}

    def rows(x: torch.Tensor) -> torch.Tensor:
        out = []
        for xi in x:
            logits = net(xi[None])[0]
            for c in range(len(logits)):
                grads = torch.autograd.grad(logits[c], list(net.parameters()),
                                            retain_graph=True)
                out.append(torch.cat([(g * chain.get(id(p), 1.0)).flatten()
                                      for g, p in zip(grads, net.parameters(), strict=True)]))
        return torch.stack(out)

    return rows(x1) @ rows(x2).T


def _context(model: nn.Module, x: torch.Tensor, density: float) -> tuple[ScoringNet,
                                                                           ScoreContext]:
    layers = _prunable(model)
    net = ScoringNet(model, layers, {n: torch.ones_like(m.weight) for n, m in layers.items()})
    ctx = ScoreContext(round=1, rounds=1, density=density, input_shape=tuple(x.shape[1:]),
                       num_outputs=3, data=[(x, torch.zeros(len(x), dtype=torch.long))],
                       generator=torch.Generator().manual_seed(0))
    return net, ctx


def test_ntt_lowers_the_ntk_distance_to_the_dense_teacher(double_precision):
    torch.manual_seed(1)
    teacher = BiasMLP()
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    density = 0.5
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(False)
    net, ctx = _context(student, x, density)
    learned = NTT(steps=40, lr=1e-2, inputs_per_step=8, ntk_weight=1.0,  # tiny kernels: weigh them
                  progress_bar=False).transfer(net, ctx)

    theta = {n: m.weight.detach() for n, m in _prunable(teacher).items()}
    flat = torch.cat([w.abs().flatten() for w in theta.values()])
    threshold = flat.sort(descending=True).values[round(density * len(flat)) - 1]
    start = {n: w.abs() >= threshold for n, w in theta.items()}  # the magnitude mask
    for name in start:
        assert torch.equal(learned.masks[name], start[name])  # no update within 40 steps
    x1, x2 = x[:4], x[4:]
    dense = {n: torch.ones_like(w) for n, w in theta.items()}
    target = _kernel(teacher, theta, dense, x1, x2)
    before = _kernel(teacher, theta, start, x1, x2) - target
    after_student = copy.deepcopy(teacher)
    with torch.no_grad():
        for name, p in after_student.named_parameters():
            p.copy_(learned.params[name])
    learned_weights = {n: learned.params[f"{n}.weight"] for n in theta}
    after = _kernel(after_student, learned_weights, start, x1, x2) - target
    assert after.pow(2).mean() < 0.7 * before.pow(2).mean()
    history = [h["ntk_distance"] for h in learned.history]
    assert len(history) == 40
    assert history[0] == pytest.approx(float(before.pow(2).mean()), rel=1e-9)
    assert history[-1] < 0.7 * history[0]


def test_ntt_student_kernel_is_the_projects_ntk(double_precision):
    model = _conv_bn(torch.float64)
    x = _images(6, seed=4, dtype=torch.float64)[0]
    params = {k: p.detach() for k, p in model.named_parameters()}
    masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in _prunable(model).items()}
    from ntksap.batchnorm import batch_statistics

    with batch_statistics(model, "record_train") as stats:
        with torch.no_grad():
            model(x)
        student = cross_kernel(model, params, masks, x[:3], x[3:], stats)
    whole = empirical_ntk(model, x)
    torch.testing.assert_close(student, whole[:9, 9:])


def test_ntt_from_initial_weights_prunes_exactly_and_leaves_the_model_alone():
    model = _conv_bn()
    before = copy.deepcopy(model.state_dict())
    masks = ntksap.prune(model, "ntt", 0.7, data=_images(10), steps=3, inputs_per_step=6,
                         progress_bar=False, start_from="initial")
    assert masks.meta["start_weights"] == "initial"
    assert masks.total - masks.remaining == round(0.7 * masks.total)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_prospr_leaves_the_model_alone():
    model = _conv_bn()
    before = copy.deepcopy(model.state_dict())
    masks = ntksap.prune(model, "prospr", 0.7, data=_images(10))
    assert masks.total - masks.remaining == round(0.7 * masks.total)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("option", [{"steps": 0}, {"epochs": 0}])
def test_ntt_without_steps_is_refused_not_magnitude_pruning_under_its_name(option):
    """0 steps would return the magnitude mask labelled ntt: refused in one line."""
    with pytest.raises(ConfigError, match=f"ntt: {next(iter(option))} must be an integer >= 1"):
        ntksap.prune(_conv_bn(), "ntt", 0.6, data=_images(6), **option)


def test_ntt_never_uses_the_labels():
    model = _conv_bn()
    x, y = _images(8)
    a = ntksap.prune(copy.deepcopy(model), "ntt", 0.6, data=(x, y), steps=2,
                     progress_bar=False)
    b = ntksap.prune(copy.deepcopy(model), "ntt", 0.6, data=(x, (y + 1) % 3), steps=2,
                     progress_bar=False)
    for name in a:
        assert torch.equal(a[name], b[name])


def test_ntt_refuses_a_kernel_over_its_memory_budget():
    with pytest.raises(MemoryBudgetError, match="lower ntk_inputs"):
        ntksap.prune(_conv_bn(), "ntt", 0.5, data=_images(6), memory_budget="1KiB")


@pytest.mark.parametrize("options", [dict(steps=-1), dict(ntk_inputs=1), dict(lr=0.0),
                                     dict(ntk_weight=-1.0), dict(inputs_per_step=1),
                                     dict(mask_scope="rows"), dict(progress_bar=1),
                                     dict(min_mask_updates=-1), dict(start_from="trained")])
def test_ntt_options_are_checked(options):
    with pytest.raises(ConfigError):
        NTT(**options)


def test_both_are_registered_with_their_papers_rounds():
    assert METHODS["prospr"] is ProsPr and METHODS["ntt"] is NTT
    assert ProsPr.default_rounds == 1 and NTT.default_rounds == 1
    assert ProsPr.needs_data and NTT.needs_data
    assert (ProsPr().steps, ProsPr().lr, ProsPr().meta_batch_size) == (3, 0.1, 128)


def test_prospr_turns_running_out_of_device_memory_into_a_clear_error(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ProsPr, "_meta_gradients", out_of_memory)
    with pytest.raises(MemoryBudgetError, match="lower meta_batch_size .now 128. or steps"):
        ntksap.prune(_conv_bn(), "prospr", 0.5, data=_images(6))


def test_ntt_runs_its_epochs_and_updates_its_mask_from_the_student(double_precision):
    model = _conv_bn(torch.float64)
    x = _images(10, seed=6, dtype=torch.float64)[0]
    net, ctx = _context(model, x, 0.3)
    ntt = dict(inputs_per_step=4, lr=1e-2, progress_bar=False)
    assert len(NTT(epochs=2, min_mask_updates=0, **ntt).transfer(net, ctx).history) == 2 * 3
    # batches 4, 4, 2
    # mask updates every step but in the last: the final mask is chosen after step 1, so it
    # is the top 30 % by magnitude of the weights a one-step run ends with
    updated = NTT(steps=3, mask_update_every=1, **ntt).transfer(*_context(model, x, 0.3))
    one_step = NTT(steps=1, **ntt).transfer(*_context(model, x, 0.3))
    weights = {n: one_step.params[f"{n}.weight"].abs() for n in updated.masks}
    flat = torch.cat([w.flatten() for w in weights.values()])
    threshold = flat.sort(descending=True).values[round(0.3 * len(flat)) - 1]
    for name, w in weights.items():
        assert torch.equal(updated.masks[name], w >= threshold)
    start = NTT(steps=1, **ntt).transfer(*_context(model, x, 0.3)).masks
    assert any(not torch.equal(start[n], updated.masks[n]) for n in start)


def test_ntt_layerwise_student_masks_keep_each_layers_share():
    model = _conv_bn()
    x = _images(6)[0]
    learned = NTT(steps=1, mask_scope="layerwise", progress_bar=False).transfer(
        *_context(model, x, 0.25))
    for mask in learned.masks.values():
        assert abs(int(mask.sum()) - 0.25 * mask.numel()) < 1


def test_ntt_returns_the_mask_it_last_chose(monkeypatch):
    """The authors' code returns the mask of NTT's last update, not the largest weights after
    the last step (pruned weights keep their size while kept ones shrink, so a re-pick
    differs)."""
    chosen = []
    transfer = NTT.transfer

    def recording(self, net, ctx):
        learned = transfer(self, net, ctx)
        chosen.append({n: m.clone() for n, m in learned.masks.items()})
        chosen.append({n: p.detach().abs() for n, p in learned.params.items()})
        return learned

    monkeypatch.setattr(NTT, "transfer", recording)
    model = _conv_bn()
    x = _images(10, seed=6)[0]
    masks = ntksap.prune(model, "ntt", 0.7, data=(x, torch.zeros(10, dtype=torch.long)),
                         steps=6, mask_update_every=2, inputs_per_step=4, lr=5e-2,
                         l2_weight=1.0, progress_bar=False)
    last, weights = chosen
    for name in masks:
        assert torch.equal(masks[name], last[name]), name
    flat = torch.cat([weights[f"{n}.weight"].flatten() for n in masks])
    threshold = flat.sort(descending=True).values[masks.remaining - 1]
    repick = {n: weights[f"{n}.weight"] >= threshold for n in masks}
    assert any(not torch.equal(repick[n], last[n]) for n in masks)  # the test can tell them apart
