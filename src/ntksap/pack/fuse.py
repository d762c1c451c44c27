"""Fuse M networks of one architecture into one module that computes all of them in one pass.

Layout (HFTA style, see docs/packs.md): network ``m`` owns the block ``m`` of every layer's
channels, so activations are ``[batch, M*C, ...]`` and every parameter and buffer of the fused
module is the M networks' tensors concatenated along dim 0:

- ``Conv1d/2d/3d`` -> the same class with ``groups = M * groups`` (``M*Cin`` -> ``M*Cout``);
- ``BatchNorm1d/2d/3d`` -> one BatchNorm over ``M*C`` channels: per-channel statistics are
  per network, so training statistics and running statistics are each network's own;
- ``Linear`` -> :class:`GroupedLinear`, a ``Conv1d`` of kernel 1 with ``groups = M`` that takes
  ``[batch, M*in]`` (so masks, which prune Conv and Linear weights, apply to it unchanged);
- stateless modules (activations, pooling, ``Flatten``, containers) stay as they are: they act
  per channel or per example, and ``flatten(1)`` of ``[batch, M*C, H, W]`` keeps network
  ``m``'s features in block ``m``.

The fused module keeps every module name of the original, so its state-dict keys (masks'
parametrizations included) are the original's and :func:`split_state` cuts the fused state
into the M networks' states. :func:`fuse` refuses (:class:`UnfusableModelError`, naming the
layer) a module with parameters or buffers of another type, dropout (its random draws cannot
match separate runs) and any model whose fused forward pass differs from the M separate ones
(a forward that mixes channels, e.g. a channel concatenation or a padded shortcut).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from ..masks import Masks

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_STATELESS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Mish,
    nn.Hardswish, nn.Hardtanh, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Flatten, nn.Sequential, nn.ModuleList, nn.ModuleDict,
)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)


class UnfusableModelError(ConfigError):
    """A model that the pack cannot fuse (names the layer and why)."""


class GroupedLinear(nn.Conv1d):
    """M ``Linear(in, out)`` layers side by side: ``[batch, M*in] -> [batch, M*out]``, network
    ``m``'s block ``m`` to block ``m``. A ``Conv1d`` (kernel 1, ``groups = M``) so that masks and
    every tool that handles Conv/Linear weights handle it; its weight is ``[M*out, in, 1]``."""

    def __init__(self, size: int, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(size * in_features, size * out_features, 1, groups=size, bias=bias,
                         device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One batched matrix product (``[M, B, in] @ [M, in, out]``), which runs far faster
        than the equivalent grouped convolution on a CPU."""
        if x.dim() != 2:
            raise UnfusableModelError(
                f"a fused Linear layer takes [batch, features] inputs, got shape "
                f"{tuple(x.shape)}; packs cannot fuse a Linear applied to other shapes")
        size = self.groups
        per_out, per_in = self.out_channels // size, self.in_channels // size
        x = x.reshape(x.shape[0], size, per_in).transpose(0, 1)  # [M, B, in]
        weight = self.weight.reshape(size, per_out, per_in).transpose(1, 2)  # [M, in, out]
        if self.bias is None:
            y = torch.bmm(x, weight)
        else:
            y = torch.baddbmm(self.bias.reshape(size, 1, per_out), x, weight)
        return y.transpose(0, 1).reshape(x.shape[1], size * per_out)


def fuse(models: Sequence[nn.Module]) -> nn.Module:
    """One module computing ``models`` (same architecture, unmasked) side by side.

    Input ``[batch, M*C, ...]`` (network ``m``'s input in channel block ``m``); output
    ``[batch, M*K]`` (network ``m``'s logits in block ``m``). The fused module is in the
    training mode of ``models[0]``; ``models`` are not changed."""
    if not models:
        raise ValueError("fuse needs at least one model")
    masked = [name for name, module in models[0].named_modules()
              if parametrize.is_parametrized(module)]
    if masked:
        raise UnfusableModelError(
            f"fuse takes unmasked models (layer {masked[0]!r} is parametrized); fuse first, "
            "then apply the stacked masks (stack_masks)")
    names = [dict(m.named_modules()) for m in models]
    if any(n.keys() != names[0].keys() for n in names):
        raise UnfusableModelError("the models of a pack must have the same architecture")
    fused = copy.deepcopy(models[0])
    for name, module in list(fused.named_modules()):
        if not name:
            _check_stateless(type(module).__name__, module, top=True)
            continue
        replacement = _fuse_module(name, [n[name] for n in names])
        if replacement is not None:
            fused.set_submodule(name, replacement)
    return fused


def _fuse_module(name: str, modules: list[nn.Module]) -> nn.Module | None:
    """The fused counterpart of the M modules named ``name``; None: keep it as it is."""
    first, size, kind = modules[0], len(modules), type(modules[0])
    if kind in _CONVS:
        return _fused_conv(name, modules, size)
    if kind in _NORMS:
        return _fused_norm(modules, size)
    if kind is nn.Linear:
        fused = GroupedLinear(size, first.in_features, first.out_features,
                              first.bias is not None, first.weight.device, first.weight.dtype)
        _copy_cat(fused, modules, reshape_weight=lambda w: w.unsqueeze(-1))
        return fused
    if isinstance(first, _DROPOUTS) and first.p > 0:
        raise UnfusableModelError(
            f"layer {name!r} ({kind.__name__}, p={first.p}): a pack cannot draw the same "
            "dropout masks as separate runs; train these runs one by one (--pack-size 1 or "
            "--separate-unfusable)")
    _check_stateless(name, first)
    return None


def _fused_conv(name: str, modules: list[nn.Module], size: int) -> nn.Module:
    first = modules[0]
    if first.padding_mode != "zeros":
        raise UnfusableModelError(f"layer {name!r}: packs fuse zero-padded convolutions only "
                                  f"(padding_mode={first.padding_mode!r})")
    fused = type(first)(size * first.in_channels, size * first.out_channels, first.kernel_size,
                        stride=first.stride, padding=first.padding, dilation=first.dilation,
                        groups=size * first.groups, bias=first.bias is not None,
                        device=first.weight.device, dtype=first.weight.dtype)
    _copy_cat(fused, modules)
    return fused


def _fused_norm(modules: list[nn.Module], size: int) -> nn.Module:
    first = modules[0]
    weight = first.weight if first.affine else first.running_mean
    fused = type(first)(size * first.num_features, eps=first.eps, momentum=first.momentum,
                        affine=first.affine, track_running_stats=first.track_running_stats,
                        device=None if weight is None else weight.device,
                        dtype=None if weight is None else weight.dtype)
    _copy_cat(fused, modules)
    if first.track_running_stats:
        fused.num_batches_tracked.copy_(first.num_batches_tracked)
    fused.train(first.training)
    return fused


def _copy_cat(fused: nn.Module, modules: list[nn.Module],
              reshape_weight: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Set each of ``fused``'s parameters and buffers to the M modules' ones concatenated
    along dim 0 (``reshape_weight`` reshapes each network's weight first)."""
    with torch.no_grad():
        for key, target in [*fused.named_parameters(recurse=False),
                            *fused.named_buffers(recurse=False)]:
            if target.dim() == 0:
                continue
            parts = [getattr(m, key) for m in modules]
            if key == "weight" and reshape_weight is not None:
                parts = [reshape_weight(p) for p in parts]
            target.copy_(torch.cat(parts, 0))
    fused.train(modules[0].training)


def _check_stateless(name: str, module: nn.Module, top: bool = False) -> None:
    own = [k for k, _ in [*module.named_parameters(recurse=False),
                          *module.named_buffers(recurse=False)]]
    if own:
        where = "the model itself" if top else f"layer {name!r}"
        raise UnfusableModelError(
            f"{where} ({type(module).__name__}) holds parameters or buffers ({', '.join(own)}) "
            "that packs cannot fuse (they fuse Conv, Linear and BatchNorm layers); train these "
            "runs one by one (--pack-size 1 or --separate-unfusable)")


def split_state(fused: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size],
                size: int) -> list[dict[str, torch.Tensor]]:
    """The M networks' state dicts from a fused state dict: each entry cut into M blocks along
    dim 0 and reshaped to ``shapes`` (a single network's state-dict shapes, same keys); an
    entry of a single network's size (``num_batches_tracked``) is each network's."""
    states: list[dict[str, torch.Tensor]] = [{} for _ in range(size)]
    for key, shape in shapes.items():
        value = fused[key]
        one = torch.Size(shape).numel()
        if value.numel() == one and size > 1 or value.dim() == 0:
            blocks = [value.clone() for _ in range(size)]
        else:
            blocks = list(value.reshape(size, *shape).clone().unbind(0))
        for state, block in zip(states, blocks, strict=True):
            state[key] = block
    return states


def stack_masks(masks: Sequence[Masks], fused: nn.Module) -> Masks:
    """The masks of a fused module from each network's (a network without masks, dense, keeps
    every weight of the layers the others mask). Layers are those of ``masks``' union."""
    modules = dict(fused.named_modules())
    layers = list(dict.fromkeys(name for m in masks for name in m))
    stacked = {}
    for name in layers:
        shape = modules[name].weight.shape
        per = torch.Size((shape[0] // len(masks), *shape[1:]))
        blocks = [m[name].reshape(per) if name in m else torch.ones(per, dtype=torch.bool)
                  for m in masks]
        stacked[name] = torch.cat(blocks, 0)
    return Masks(stacked, {"pack": len(masks)})


def stack_inputs(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Network ``m``'s batch into channel block ``m``: ``M x [B, C, ...] -> [B, M*C, ...]``."""
    return torch.cat(list(inputs), 1)


def split_logits(logits: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, M*K] -> [B, M, K]``: network ``m``'s logits at ``[:, m]``."""
    return logits.reshape(logits.shape[0], size, -1)


def check_fused(fused: nn.Module, models: Sequence[nn.Module], input_shape: Sequence[int],
                tolerance: float = 1e-4) -> None:
    """Raise :class:`UnfusableModelError` unless ``fused`` computes what ``models`` compute on
    random inputs shaped ``input_shape`` (eval mode, no gradient; nothing changes): the check
    that catches a forward pass mixing the networks' channels."""
    generator = torch.Generator().manual_seed(0)
    param = next(fused.parameters())
    inputs = [torch.randn((2, *input_shape), generator=generator).to(param)
              for _ in models]
    modes = [m.training for m in (fused, *models)]
    try:
        for m in (fused, *models):
            m.eval()
        with torch.no_grad():
            try:
                together = split_logits(fused(stack_inputs(inputs)), len(models))
            except (RuntimeError, ValueError) as err:
                raise UnfusableModelError(
                    f"the fused {type(models[0]).__name__} fails on packed inputs "
                    f"({str(err).splitlines()[0]}); its forward pass does not keep each "
                    "network in its own channels; train these runs one by one "
                    "(--pack-size 1 or --separate-unfusable)") from err
            apart = torch.stack([m(x) for m, x in zip(models, inputs, strict=True)], 1)
    finally:
        for m, mode in zip((fused, *models), modes, strict=True):
            m.train(mode)
    if together.shape != apart.shape or not torch.allclose(together, apart, rtol=tolerance,
                                                          atol=tolerance):
        raise UnfusableModelError(
            f"the fused {type(models[0]).__name__} does not compute its networks' outputs: its "
            "forward pass mixes channels of different networks (e.g. a channel concatenation "
            "or a zero-padded shortcut); train these runs one by one (--pack-size 1 or "
            "--separate-unfusable)")
