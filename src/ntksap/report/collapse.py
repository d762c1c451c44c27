"""Layer collapse: a layer left with no weight, or a network in which every path from the
input to the output crosses a pruned weight (Tanaka et al. 2020).

The path check runs the masked network on an all-ones input with the masks themselves as
weights (scaled per layer to keep activations near 1), biases and BatchNorm shifts at zero,
BatchNorm as the identity and max-pooling replaced by average pooling. Every quantity is
then non-negative, so the output is zero exactly when no input-output path survives, and a
kept weight has a positive gradient exactly when it lies on such a path: the others are
kept but useless, and the "effective" density counts only the useful ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..masks import Masks, prunable_layers
from ..models import build_model, input_shape
from ..runners import is_baseline
from .records import Point


def collapsed_layers(densities: list[dict[str, Any]]) -> list[str]:
    """The layers of a densities report (``Masks.layers()``) left with no weight."""
    return [row["name"] for row in densities if row["remaining"] == 0]


def path_check(model: nn.Module, masks: Mapping[str, torch.Tensor],
               input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Whether any input-output path survives in ``model`` under ``masks``, and the number
    of kept weights per layer that lie on one (``effective``)."""
    net = Masks.plain_copy(model).double().eval()
    _neutralize(net)
    layers = prunable_layers(net)
    weights = {}
    for name, layer in layers.items():
        mask = masks[name].to(torch.float64) if name in masks else torch.ones_like(
            layer.weight, dtype=torch.float64)
        per_unit = float(mask.sum()) / mask.shape[0]
        weights[f"{name}.weight"] = (mask / max(per_unit, 1.0)).requires_grad_(True)
    x = torch.ones((1, *input_shape), dtype=torch.float64)
    total_out = functional_call(net, weights, (x,)).sum()
    connected = bool(total_out.item() > 0)
    effective = {}
    if connected:
        grads = torch.autograd.grad(total_out, list(weights.values()), allow_unused=True)
        for (name, w), g in zip(weights.items(), grads, strict=True):
            kept = w.detach() > 0
            effective[name[:-len(".weight")]] = int((kept & (g > 0)).sum()) if g is not None \
                else 0
    else:
        effective = dict.fromkeys(layers, 0)
    total = sum(int(masks[n].numel()) if n in masks else layers[n].weight.numel()
                for n in layers)
    return {"connected": connected, "effective": effective,
            "effective_remaining": sum(effective.values()), "total": total}


def _neutralize(net: nn.Module) -> None:
    """Biases and shifts to zero, BatchNorm to (almost) the identity, max- to avg-pooling."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                if module.affine:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            elif isinstance(getattr(module, "bias", None), nn.Parameter):
                module.bias.zero_()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride,
                                                   child.padding, child.ceil_mode))


def analyse(point: Point) -> dict[str, Any] | None:
    """The collapse record of a point: collapsed layers, and (where its masks and model can
    be loaded) whether it is disconnected and its effective density. None for dense runs."""
    if is_baseline(point.method) or (point.densities is None and point.masks_path is None):
        return None
    record: dict[str, Any] = {"layers": collapsed_layers(point.densities or []),
                              "disconnected": None, "effective_density": None}
    path = point.masks_path
    name, classes = point.config.get("model"), point.config.get("num_classes")
    if path is None or not name or not classes:
        return record
    try:
        masks = Masks.load(path)
        model = build_model(name, int(classes), seed=0)
        masks.check(model)
        check = path_check(model, masks, input_shape(name, point.input_shape))
    except Exception as err:  # a report never fails on one odd run: say why it is unchecked
        record["error"] = f"path check skipped: {type(err).__name__}: {err}"
        return record
    if not record["layers"]:
        record["layers"] = [n for n, m in masks.items() if not bool(m.any())]
    record["disconnected"] = not check["connected"]
    record["effective_density"] = check["effective_remaining"] / check["total"]
    return record


def collapsed(record: dict[str, Any] | None) -> bool:
    """Whether a collapse record flags the run (a dead layer or no surviving path)."""
    return bool(record and (record["layers"] or record.get("disconnected")))
