"""Effective sparsity: kept weights that lie on no input-output path count as pruned.

Vysogorets and Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens of
Effective Sparsity", JMLR 24 (2023), arXiv 2107.02306. A kept weight is *effective* when some
path from an input to an output of the masked network runs through it; the others (their unit
lost every incoming or every outgoing connection) can be removed without changing any output
up to biases, so they count as pruned. Biases are not part of any path: a unit fed only by its
bias emits a constant and its outgoing weights are not effective.

How it is computed (exact, no overflow): the model is traced with ``torch.fx`` and run on an
all-ones input as a *path network*: every Conv/Linear weight replaced by its 0/1 mask (layers
without a mask by ``weight != 0``), biases zero, BatchNorm, dropout and elementwise activations
as the identity, max-pooling as average pooling of the same window. Every quantity is then
non-negative and linear in the masks, like SynFlow's path count (Tanaka et al. 2020); a unit
is positive exactly when some input reaches it, and the gradient of the summed outputs with
respect to a weight is positive exactly when the weight lies on an input-output path. Path
*counts* grow like the product of the layer widths and overflow even float64 in deep networks,
so after every operation the values are replaced by their support (x > 0 -> 1) and so is every
gradient on the way back: a positive rescaling of each entry, which leaves every "is it
positive" answer unchanged and keeps all numbers small integers or simple fractions. It runs on
the CPU in float64, where a sum of non-negative terms is zero only if every term is. The
model's own parameters are never used: it is neither copied nor changed, on any device.

Supported: Conv1d/2d/3d, Linear, BatchNorm, elementwise activations (modules or functions),
dropout, max/avg/adaptive pooling, flatten/reshape/view, residual additions, concatenation and
means. Anything else (LayerNorm, attention, a parameter used directly in ``forward``,
subtraction, multiplication of two activations, data-dependent control flow that ``torch.fx``
cannot trace) raises :class:`UntraceableModelError` naming the operation: the path argument
would not hold there.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from .errors import NtksapError
from .layers import PRUNABLE_TYPES, prunable_layers, raw_weight

_PARAMETERLESS_MODULES = (nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_IDENTITY_MODULES = (nn.Identity, nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
                     nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU,
                     nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish,
                     nn.Hardsigmoid, nn.Softplus)
_ELEMENTWISE_FUNCTIONS = {torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu,
                          F.elu, F.selu, F.gelu, F.silu, F.mish, F.hardtanh, F.hardswish,
                          torch.sigmoid, torch.tanh, F.dropout}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone"}
_STRUCTURAL_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.cat, torch.flatten,
                         torch.reshape, torch.squeeze, torch.unsqueeze, torch.mean,
                         F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
                         F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, operator.getitem, getattr}
_STRUCTURAL_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "mean", "add",
                       "add_", "size", "dim"}
_ADDITIONS = {operator.add, operator.iadd, torch.add, "add", "add_"}


class UntraceableModelError(NtksapError):
    """A model whose input-output paths the effective-sparsity check cannot follow."""


class _Support(torch.autograd.Function):
    """Forward ``x > 0`` and backward ``grad > 0`` as 0/1 values (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return (grad > 0).to(grad.dtype)


def _support(value: Any) -> Any:
    return _Support.apply(value) if isinstance(value, torch.Tensor) and value.is_floating_point() \
        else value


def _unsupported(what: str) -> UntraceableModelError:
    return UntraceableModelError(
        f"effective sparsity cannot follow input-output paths through {what}; it supports "
        "Conv/Linear, BatchNorm, elementwise activations, dropout, pooling, flatten/reshape, "
        "residual additions and concatenation (see ntksap.effective)")


class _PathNetwork(fx.Interpreter):
    """Runs a traced model as its path network, one graph node at a time: each prunable
    layer with ``weights[its name]`` in place of its weight, no bias (the model's own
    parameters are never used or changed)."""

    def __init__(self, traced: fx.GraphModule, weights: dict[str, torch.Tensor]) -> None:
        super().__init__(traced)
        self.weights = weights

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if isinstance(module, PRUNABLE_TYPES):
            return _support(_layer(module, args[0], self.weights[target]))
        if isinstance(module, _IDENTITY_MODULES):
            return args[0]
        if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            return _support(_max_as_average(module, args[0]))
        if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
            pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
            return _support(pool[_spatial_dims(module)](args[0], module.output_size))
        if isinstance(module, _PARAMETERLESS_MODULES):
            return _support(module(*args, **kwargs))
        raise _unsupported(f"module {target!r} ({type(module).__name__})")

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target in _ELEMENTWISE_FUNCTIONS:
            return args[0]
        if target not in _STRUCTURAL_FUNCTIONS:
            raise _unsupported(f"function {getattr(target, '__name__', target)!r}")
        _check_addition(target, args)
        return _support(target(*args, **kwargs))

    def call_method(self, target: str, args: tuple, kwargs: dict) -> Any:
        if not isinstance(args[0], torch.Tensor):  # arithmetic on shapes and sizes
            return getattr(args[0], target)(*args[1:], **kwargs)
        if target in _ELEMENTWISE_METHODS:
            return args[0]
        if target not in _STRUCTURAL_METHODS:
            raise _unsupported(f"tensor method {target!r}")
        _check_addition(target, args)
        return _support(getattr(args[0], target)(*args[1:], **kwargs))

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        raise _unsupported(f"the parameter or buffer {target!r} used directly in forward")


def _layer(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``module``'s Conv/Linear map with ``weight`` and no bias."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight)
    if module.padding_mode != "zeros":
        raise _unsupported(f"a convolution with padding_mode {module.padding_mode!r}")
    conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
    kind = next(k for k in conv if isinstance(module, k))
    return conv[kind](x, weight, None, module.stride, module.padding, module.dilation,
                      module.groups)


def _check_addition(target: Any, args: tuple) -> None:
    """A tensor plus a non-zero constant is a bias-like signal with no input path."""
    if target in _ADDITIONS and any(isinstance(a, torch.Tensor) for a in args):
        if any(not isinstance(a, torch.Tensor) and a != 0 for a in args):
            raise _unsupported("the addition of a constant to an activation")


def _spatial_dims(module: nn.Module) -> int:
    return int(type(module).__name__[-2])


def _max_as_average(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The average pooling over ``module``'s windows: positive wherever the max is, and with
    a gradient to every entry of the window (the max sends it to one entry only)."""
    if module.dilation not in (1, (1,) * _spatial_dims(module)) or module.return_indices:
        raise _unsupported(f"{type(module).__name__} with dilation or return_indices")
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[_spatial_dims(module)]
    return pool(x, module.kernel_size, module.stride, module.padding, module.ceil_mode)


def _path_weights(model: nn.Module, masks: Mapping[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """The path network's weight of every prunable layer: its mask (or ``weight != 0`` for
    a layer without one) as a float64 CPU leaf tensor that requires grad."""
    weights = {}
    for name, layer in prunable_layers(model).items():
        kept = masks[name] if name in masks else raw_weight(layer).detach() != 0
        weights[name] = kept.to("cpu", torch.float64).requires_grad_(True)
    return weights


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # fx raises many kinds of errors for untraceable code
        raise UntraceableModelError(
            f"effective sparsity needs a model torch.fx can trace; {type(model).__name__} "
            f"cannot be traced ({type(err).__name__}: {err})") from err


def effective_masks(model: nn.Module, masks: Mapping[str, torch.Tensor],
                    input_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """The kept weights of each masked layer of ``model`` that lie on some path from the
    input (one example shaped ``input_shape``, e.g. ``(3, 32, 32)``) to the output; boolean
    tensors on the masks' devices. ``model`` is left as it is."""
    traced, weights = _trace(model), _path_weights(model, masks)
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UntraceableModelError(f"effective sparsity needs a model with one input; "
                                    f"{type(model).__name__}.forward takes {len(placeholders)}")
    x = torch.ones((1, *input_shape), dtype=torch.float64)
    with torch.enable_grad():
        try:
            out = _PathNetwork(traced, weights).run(x)
        except UntraceableModelError as err:  # fx appends the graph node: keep one line
            raise UntraceableModelError(str(err).splitlines()[0]) from None
        if not isinstance(out, torch.Tensor):
            raise UntraceableModelError(f"effective sparsity needs a model that returns one "
                                        f"tensor; {type(model).__name__} returns "
                                        f"{type(out).__name__}")
        total = _support(out).sum()
        grads: Sequence[torch.Tensor | None] = [None] * len(weights)
        if total.requires_grad and total.item() > 0:
            grads = torch.autograd.grad(total, list(weights.values()), allow_unused=True)
    effective = {}
    for (name, weight), grad in zip(weights.items(), grads, strict=True):
        if name not in masks:
            continue
        on_path = grad > 0 if grad is not None else torch.zeros_like(weight, dtype=torch.bool)
        effective[name] = (on_path & (weight > 0)).to(masks[name].device)
    return effective


def effective_sparsity(model: nn.Module, masks: Mapping[str, torch.Tensor],
                       input_shape: Sequence[int]) -> float | None:
    """The fraction of the masked layers' weights that are pruned or on no input-output
    path; None for a model whose paths cannot be followed (:class:`UntraceableModelError`)."""
    try:
        effective = effective_masks(model, masks, input_shape)
    except UntraceableModelError:
        return None
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in effective.values()) / total


def sparsity_of_report(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The effective sparsity of a :func:`layer_report` (None where the paths were not
    followed), without tracing the model again."""
    if any(r["effective_density"] is None for r in rows):
        return None
    total = sum(r["total"] for r in rows)
    return 1.0 - sum(r["effective_density"] * r["total"] for r in rows) / total


def layer_report(model: nn.Module, masks: Mapping[str, torch.Tensor],
                 input_shape: Sequence[int]) -> list[dict[str, Any]]:
    """Per masked layer: name, shape, total, remaining, density and ``effective_density``
    (None for a model whose paths cannot be followed)."""
    try:
        effective = effective_masks(model, masks, input_shape)
    except UntraceableModelError:
        effective = {}
    rows = []
    for name, mask in masks.items():
        kept = int(mask.sum())
        on_path = int(effective[name].sum()) if name in effective else None
        rows.append({"name": name, "shape": list(mask.shape), "total": mask.numel(),
                     "remaining": kept, "density": kept / mask.numel(),
                     "effective_density": None if on_path is None else on_path / mask.numel()})
    return rows
