"""What a sparse network costs: parameters and multiply-adds (MACs) of one forward pass,
dense, sparse and effective, per prunable layer and in total, measured on the real model.

One forward pass of one example shaped ``input_shape`` runs with forward hooks on the
prunable (Conv/Linear) layers: a layer's dense MACs are its weight's entries times the number
of output positions each weight entry is used at (1 for a Linear on a vector; the output's
spatial positions for a convolution; the leading positions for a Linear applied to a
sequence), its sparse MACs the kept entries times the same, its effective MACs the kept
entries on some input-output path (:meth:`Masks.effective`) times the same. A pruned weight
saves its multiply-adds only where an execution skips zeros; the dense count is what a dense
kernel does. Only Conv/Linear MACs are counted (BatchNorm, activations, pooling and
attention's score products are not): the figure to compare between masks. Parameters: every
parameter of the model (dense), minus the pruned weights (sparse), minus also the kept
weights on no path (effective).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .layers import prunable_layers
from .masks import Masks

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def output_positions(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """For each prunable layer, how many times one example's forward pass uses each weight
    entry (output positions per output channel)."""
    layers = prunable_layers(model)
    counts: dict[str, int] = {}
    handles = []
    for name, module in layers.items():
        def hook(mod: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
            channels = out.shape[1] if isinstance(mod, CONVS) else out.shape[-1]
            counts[name] = out.numel() // channels
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=parameter.dtype,
                              device=parameter.device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts


def cost(model: nn.Module, masks: Masks, input_shape: Sequence[int],
         effective: Masks | Mapping[str, int] | None = None) -> dict[str, Any]:
    """``{"params": {"dense", "sparse", "effective"}, "flops": {...}, "layers": [...]}``
    (flops: multiply-adds of one example's forward pass; see the module docstring).
    ``effective``: the effective masks (:meth:`Masks.effective`) or each layer's count of
    kept weights on a path; None leaves the effective counts None."""
    positions = output_positions(model, input_shape)
    if isinstance(effective, Masks):
        effective = {name: int(m.sum()) for name, m in effective.items()}
    layers, macs = [], {"dense": 0, "sparse": 0, "effective": 0}
    for name, mask in masks.items():
        uses = positions.get(name, 0)
        on_path = effective.get(name) if effective is not None else None
        row = {"name": name, "positions": uses, "dense": mask.numel() * uses,
               "sparse": int(mask.sum()) * uses,
               "effective": None if on_path is None else on_path * uses}
        layers.append(row)
        for key in macs:
            macs[key] += row[key] or 0
    total = sum(p.numel() for p in model.parameters())
    pruned = masks.total - masks.remaining
    off_path = None if effective is None else masks.remaining - sum(effective.values())
    params = {"dense": total, "sparse": total - pruned,
              "effective": None if off_path is None else total - pruned - off_path}
    flops = {**macs, "effective": macs["effective"] if effective is not None else None}
    return {"params": params, "flops": flops, "layers": layers}


def format_count(value: int | None) -> str:
    """1234567 -> "1.23 M"."""
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return str(value)


__all__ = ["cost", "format_count", "output_positions"]

