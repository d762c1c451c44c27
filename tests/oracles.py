"""Test oracles written from the specification alone (docs/reference.md sections 3, 4 and 7).

Nothing here imports ``ntksap``: each oracle uses plain PyTorch (autograd, ``nn.BatchNorm`` in
the mode the specification names, ``torch.func.functional_call`` only to put masked weights
into a deep copy) and its own weight draws, so it shares no code, default or random-number
order with the implementation it checks. The models are plain ``nn.Module`` networks of
Conv2d/Linear/BatchNorm layers; "prunable" = the weights of every Conv2d and Linear layer
(section 1), in ``named_modules()`` order.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

Batch = tuple[torch.Tensor, torch.Tensor]
Tensors = dict[str, torch.Tensor]

# ----- helpers


def prunable(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d and Linear layers, by name (section 1)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]


def ones_masks(model: nn.Module) -> Tensors:
    return {n: torch.ones_like(m.weight) for n, m in prunable(model).items()}


def masked_forward(model: nn.Module, weights: Tensors, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with the prunable layers' weights replaced by ``weights``."""
    return functional_call(model, {f"{n}.weight": w for n, w in weights.items()}, (x,))


def set_batch_statistics(model: nn.Module, x: torch.Tensor, weights: Tensors | None = None
                         ) -> None:
    """Section 3 step 4, literally: reset the running statistics, one no-grad forward in
    train mode with momentum 1 (the running statistics become the batch's mean and unbiased
    variance), then eval mode. Momenta are left at 1 (``model`` is a private copy)."""
    for bn in norms(model):
        bn.reset_running_stats()
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        if weights is None:
            model(x)
        else:
            masked_forward(model, weights, x)
    model.eval()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|."""
    scale = expected.double().abs().max()
    return float((got.double() - expected.double()).abs().max() / scale)


# ----- NTK-SAP (section 3)


def kaiming_draw_(model: nn.Module, generator: torch.Generator) -> None:
    """Step 1: every Conv2d/Linear weight, in module order, is a standard normal tensor of its
    shape (one ``torch.randn`` in its dtype) times sqrt(2 / fan_in); biases 0; BatchNorm
    gamma = 1, beta = 0. Other parametrized modules are not supported by this oracle."""
    with torch.no_grad():
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if isinstance(module, nn.Conv2d | nn.Linear):
                w = module.weight
                fan_in = w[0].numel()
                w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype)
                        * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif own:
                raise TypeError(f"oracle: unsupported module with parameters: {module}")


def ntksap_draws(model: nn.Module, input_shape: Sequence[int], batch_sizes: Sequence[int],
                 repeats: int, eps: float, seed: int
                 ) -> Iterator[tuple[nn.Module, torch.Tensor, Tensors]]:
    """The round's draws in the documented order: for each repeat, for each batch: fresh
    theta (:func:`kaiming_draw_`), then z ~ N(0, I) of shape (batch, *input_shape), then
    delta ~ N(0, eps^2) for each prunable layer in order, all from one CPU generator seeded
    with ``seed``, in the model's dtype. Yields (the re-drawn copy, z, delta)."""
    g = torch.Generator().manual_seed(seed)
    net = copy.deepcopy(model)
    dtype = next(iter(prunable(net).values())).weight.dtype
    for _ in range(repeats):
        for size in batch_sizes:
            kaiming_draw_(net, g)
            z = torch.randn((size, *input_shape), generator=g, dtype=dtype)
            delta = {n: torch.randn(m.weight.shape, generator=g, dtype=dtype) * eps
                     for n, m in prunable(net).items()}
            yield net, z, delta


def ntksap_scores(model: nn.Module, input_shape: Sequence[int], batch_sizes: Sequence[int], *,
                  repeats: int, eps: float, seed: int, masks: Tensors | None = None) -> Tensors:
    """S_j = | sum over draws of d/dm_j || f(z; theta * m) - f(z; (theta + delta) * m) ||^2 |.

    Per draw: BatchNorm statistics from a no-grad train-mode pass of the unperturbed masked
    network (momentum 1), then both networks in eval mode with those statistics."""
    base = ones_masks(model) if masks is None else masks
    leaves = {n: m.detach().clone().to(next(iter(prunable(model).values())).weight.dtype)
              .requires_grad_(True) for n, m in base.items()}
    for net, z, delta in ntksap_draws(model, input_shape, batch_sizes, repeats, eps, seed):
        theta = {n: m.weight.detach() for n, m in prunable(net).items()}
        set_batch_statistics(net, z, {n: theta[n] * leaves[n].detach() for n in theta})
        clean = masked_forward(net, {n: theta[n] * leaves[n] for n in theta}, z)
        noisy = masked_forward(net, {n: (theta[n] + delta[n]) * leaves[n] for n in theta}, z)
        (clean - noisy).pow(2).sum().backward()
    return {n: m.grad.abs() for n, m in leaves.items()}


# ----- the empirical NTK (section 7)


def ntk_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J, (n k) x p, row i * k + c = d logit_c(x_i) / d(all parameters), one backward per
    (input, logit), each input alone through a deep copy whose BatchNorm layers hold the whole
    batch's statistics (:func:`set_batch_statistics`) in eval mode."""
    net = copy.deepcopy(model)
    set_batch_statistics(net, x)
    params = list(net.parameters())
    rows = []
    for i in range(len(x)):
        out = net(x[i:i + 1])[0]
        for c in range(len(out)):
            grads = torch.autograd.grad(out[c], params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                                   for p, g in zip(params, grads, strict=True)]))
    return torch.stack(rows)


def ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """K = J J^T."""
    J = ntk_jacobian(model, x)
    return J @ J.T


# ----- the data-driven baselines (section 4)


def _scoring_copy(model: nn.Module, train: bool) -> nn.Module:
    net = copy.deepcopy(model)
    net.train(train)
    return net


def weight_gradients(model: nn.Module, batches: Sequence[Batch], masks: Tensors | None = None,
                     *, train: bool = True, temperature: float = 1.0) -> tuple[Tensors, Tensors]:
    """(theta, sum over batches of d CE(f(x; theta * m) / temperature, y) / dw at
    w = theta * m), BatchNorm in train mode (``train=False``: eval mode) on a deep copy."""
    net = _scoring_copy(model, train)
    theta = {n: m.weight.detach().clone() for n, m in prunable(net).items()}
    masks = ones_masks(net) if masks is None else masks
    total = {n: torch.zeros_like(t) for n, t in theta.items()}
    for x, y in batches:
        w = {n: (theta[n] * masks[n].to(theta[n].dtype)).requires_grad_(True) for n in theta}
        loss = F.cross_entropy(masked_forward(net, w, x) / temperature, y)
        for n, g in zip(w, torch.autograd.grad(loss, list(w.values())), strict=True):
            total[n] += g
    return theta, total


def snip_scores(model: nn.Module, batches: Sequence[Batch], masks: Tensors | None = None, *,
                train: bool = True) -> Tensors:
    """SNIP / Iterative SNIP / FORCE: |theta * sum over batches of dL/dw| at w = theta * m."""
    theta, grads = weight_gradients(model, batches, masks, train=train)
    return {n: (theta[n] * grads[n]).abs() for n in theta}


def grasp_scores(model: nn.Module, batches: Sequence[Batch], *, temperature: float = 200.0,
                 train: bool = True) -> Tensors:
    """theta * (H g), signed: g = sum over batches of grad L_b, H = sum over batches of the
    Hessian of L_b, L_b = CE(logits / temperature) of batch b, both with respect to the
    prunable weights. H is formed as a full matrix (``torch.autograd.functional.hessian``)
    over the flattened weights, then multiplied by g: a route unlike double backprop."""
    net = _scoring_copy(model, train)
    layers = prunable(net)
    theta = {n: m.weight.detach().clone() for n, m in layers.items()}
    shapes = {n: t.shape for n, t in theta.items()}
    flat = torch.cat([t.flatten() for t in theta.values()])

    def unflatten(v: torch.Tensor) -> Tensors:
        out, i = {}, 0
        for n, s in shapes.items():
            out[n] = v[i:i + s.numel()].view(s)
            i += s.numel()
        return out

    g = torch.zeros_like(flat)
    hessian = torch.zeros(len(flat), len(flat), dtype=flat.dtype)
    for x, y in batches:
        def loss(v: torch.Tensor, x=x, y=y) -> torch.Tensor:
            return F.cross_entropy(masked_forward(net, unflatten(v), x) / temperature, y)

        v = flat.clone().requires_grad_(True)
        g += torch.autograd.grad(loss(v), v)[0]
        hessian += torch.autograd.functional.hessian(loss, flat)
    return {n: theta[n] * hg for n, hg in unflatten(hessian @ g).items()}


def synflow_scores(model: nn.Module, input_shape: Sequence[int], masks: Tensors | None = None,
                   *, train: bool = False, abs_buffers: bool = True) -> Tensors:
    """|theta * dR/dtheta|, R = sum of the outputs, on one all-ones input, of a deep copy whose
    parameters (and, with ``abs_buffers``, floating buffers: BatchNorm running statistics)
    are replaced by their absolute values, BatchNorm in eval mode (``train=True``: train)."""
    net = _scoring_copy(model, train)
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        if abs_buffers:
            for b in net.buffers():
                if b.is_floating_point():
                    b.abs_()
    masks = ones_masks(net) if masks is None else masks
    layers = prunable(net)
    w = {n: (m.weight.detach() * masks[n].to(m.weight.dtype)).requires_grad_(True)
         for n, m in layers.items()}
    dtype = next(iter(w.values())).dtype
    flow = masked_forward(net, w, torch.ones((1, *input_shape), dtype=dtype)).sum()
    grads = torch.autograd.grad(flow, list(w.values()))
    return {n: (layers[n].weight.detach() * g).abs() for n, g in zip(w, grads, strict=True)}
