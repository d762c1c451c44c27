"""Binary weight masks on any ``nn.Module``, applied with ``torch.nn.utils.parametrize``.

A :class:`Masks` maps a layer's module name (``"layer1.0.conv1"``) to a boolean tensor shaped
like that layer's ``weight`` (True = kept). ``masks.apply(model)`` registers a parametrization
so that ``module.weight`` is ``original * mask``: the stored weights of pruned entries are set
to zero once and their gradient is zero from then on, so they stay exactly zero through SGD
(momentum, Nesterov, weight decay), AdamW, deepcopy and ``state_dict`` round trips. Any model
works unmodified: torchvision, timm, or your own.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .atomic import atomic_torch_save
from .errors import MaskMismatchError, NoPrunableLayersError
from .layers import (  # noqa: F401 - re-exported: ntksap.masks is their home for users
    PRUNABLE_TYPES,
    LayerFilter,
    exclude_layers,
    prunable_layers,
    raw_weight,
)

FILE_FORMAT = "ntksap-masks/1"


class WeightMask(nn.Module):
    """Parametrization ``weight -> weight * mask``; the mask is a buffer in the weight's dtype."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _weight_mask(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations["weight"]:
        if isinstance(p, WeightMask):
            return p
    return None


class Masks(Mapping[str, torch.Tensor]):
    """Boolean masks by layer name, with density reports, save/load, apply and export."""

    def __init__(self, masks: Mapping[str, torch.Tensor], meta: dict[str, Any] | None = None):
        self._masks = {name: m.detach().to(torch.bool) for name, m in masks.items()}
        self.meta: dict[str, Any] = dict(meta or {})

    # Mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return (f"Masks({len(self)} layers, {self.remaining}/{self.total} kept, "
                f"sparsity {self.sparsity:.4f})")

    @classmethod
    def of(cls, model: nn.Module, layer_filter: LayerFilter | None = None) -> Masks:
        """The current masks of the prunable layers of ``model`` (all kept where unmasked)."""
        masks = {}
        for name, module in prunable_layers(model, layer_filter).items():
            current = _weight_mask(module)
            weight = raw_weight(module)
            masks[name] = (current.mask.bool() if current is not None
                           else torch.ones_like(weight, dtype=torch.bool))
        return cls(masks)

    # Reports
    @property
    def total(self) -> int:
        return sum(m.numel() for m in self._masks.values())

    @property
    def remaining(self) -> int:
        return sum(int(m.sum()) for m in self._masks.values())

    @property
    def density(self) -> float:
        return self.remaining / self.total

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def layers(self) -> list[dict[str, Any]]:
        """Per-layer report in module order: name, shape, total, remaining, density."""
        rows = []
        for name, m in self._masks.items():
            kept = int(m.sum())
            rows.append({"name": name, "shape": list(m.shape), "total": m.numel(),
                         "remaining": kept, "density": kept / m.numel()})
        return rows

    def table(self, effective: Masks | None = None,
              flops: Mapping[str, int] | None = None) -> str:
        """The per-layer density table and the total, as text; with ``effective`` (from
        :meth:`effective`) a column of each layer's effective density beside it; with
        ``flops`` (layer -> multiply-adds of one example's forward pass through its kept
        weights, :func:`ntksap.cost.cost`) a column of them."""
        rows = self.layers()
        extra = {r["name"]: r["density"] for r in effective.layers()} if effective else {}
        dense = self.meta.get("dense_weights") or {}
        width = max(12, *(len(r["name"]) for r in rows), *(len(n) for n in dense))
        lines = [f"{'layer':<{width}}  {'shape':<18} {'kept':>10} {'total':>10} {'density':>8}"
                 + (f" {'effective':>9}" if effective else "")
                 + (f" {'MACs kept':>12}" if flops is not None else "")]
        for r in rows:
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"{r['name']:<{width}}  {shape:<18} {r['remaining']:>10} "
                         f"{r['total']:>10} {r['density']:>8.4f}"
                         + (f" {extra[r['name']]:>9.4f}" if effective else "")
                         + (f" {flops.get(r['name'], 0):>12}" if flops is not None else ""))
        lines.append(f"{'total':<{width}}  {'':<18} {self.remaining:>10} {self.total:>10} "
                     f"{self.density:>8.4f}" + (f" {effective.density:>9.4f}" if effective
                                                 else "")
                     + (f" {sum(flops.values()):>12}" if flops is not None else ""))
        if dense:
            lines.append("not prunable (no Conv/Linear weight), left dense:")
            for name, shape in dense.items():
                count = math.prod(shape)
                lines.append(f"{name:<{width}}  {'x'.join(map(str, shape)):<18} {count:>10} "
                             f"{count:>10} {1.0:>8.4f}")
        return "\n".join(lines)

    def effective(self, model: nn.Module, input_shape: tuple[int, ...]) -> Masks:
        """The kept weights that lie on some path from the input (one example shaped
        ``input_shape``) to the output of ``model`` under these masks (Vysogorets and Kempe,
        JMLR 2023): its ``sparsity`` is the effective sparsity, its ``layers()`` the effective
        density per layer. Kept weights on no such path count as pruned. Raises
        :class:`ntksap.effective.UntraceableModelError` for a model it cannot follow; see
        :mod:`ntksap.effective`."""
        from .effective import effective_masks  # it imports this module

        self.check(model)
        return Masks(effective_masks(model, self, input_shape), {**self.meta, "effective": True})

    # Checks, apply, remove, export
    def check(self, model: nn.Module) -> None:
        """Raise :class:`MaskMismatchError` unless every mask names a layer of ``model`` with the
        same weight shape and, for masks that carry their model's fingerprint
        (``meta["fingerprint"]``, every prunable layer's name and weight shape, recorded by
        :func:`ntksap.prune`), unless ``model`` has exactly those prunable layers: masks made
        for ResNet-20 do not pass on a ResNet-32, whose extra layers would stay dense."""
        modules = dict(model.named_modules())
        problems = _fingerprint_problems(self.meta.get("fingerprint"), model)
        for name, m in self._masks.items():
            module = modules.get(name)
            if module is None or not isinstance(module, PRUNABLE_TYPES):
                problems.append(f"no prunable layer {name!r} in the model")
            elif tuple(raw_weight(module).shape) != tuple(m.shape):
                problems.append(f"layer {name!r} has weight shape "
                                f"{tuple(raw_weight(module).shape)}, mask has {tuple(m.shape)}")
        if problems:
            made_for = self.meta.get("model")
            origin = f" (the masks were made for model {made_for!r})" if made_for else ""
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            raise MaskMismatchError(
                f"masks do not match {type(model).__name__}{origin}: {shown}. "
                "Load masks made for this model definition (same architecture and num_classes)"
            )

    def apply(self, model: nn.Module) -> nn.Module:
        """Mask ``model`` in place (registering or updating a parametrization per layer), zero
        the stored weights of pruned entries, and return the model."""
        self.check(model)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, m in self._masks.items():
                module = modules[name]
                weight = raw_weight(module)
                mask = m.to(device=weight.device, dtype=weight.dtype)
                existing = _weight_mask(module)
                if existing is None:
                    parametrize.register_parametrization(module, "weight", WeightMask(mask),
                                                         unsafe=True)
                else:
                    existing.mask.copy_(mask)
                raw_weight(module).mul_(mask)
        return model

    @staticmethod
    def plain_copy(model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` with the masks baked into plain weight parameters;
        ``model`` and its parametrizations are left as they are.

        ``copy.deepcopy`` of a parametrized module shares the module's parametrized class with
        the original, and removing a parametrization deletes the ``weight`` property from that
        class, which would break the original. Each copied module gets its own class first."""
        clone = copy.deepcopy(model)
        for module in clone.modules():
            if _weight_mask(module) is not None:
                cls = type(module)
                own = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
                module.__class__ = type(cls.__name__, cls.__bases__, own)
        return Masks.remove(clone)

    @staticmethod
    def remove(model: nn.Module) -> nn.Module:
        """Remove the mask parametrizations, leaving the masked weights as plain parameters."""
        for module in model.modules():
            if _weight_mask(module) is not None:
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return model

    @staticmethod
    def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
        """A plain state dict with the masks baked into the weights, loadable into the original
        (unmasked) model definition. ``model`` is left as it is."""
        rename = {}
        for name, module in model.named_modules():
            if _weight_mask(module) is not None:
                prefix = f"{name}." if name else ""
                rename[f"{prefix}parametrizations.weight.original"] = (f"{prefix}weight", module)
        state = {}
        for key, value in model.state_dict().items():
            if key in rename:
                new_key, module = rename[key]
                state[new_key] = module.weight.detach().clone()
            elif ".parametrizations.weight." in f".{key}":
                continue  # the mask buffer itself
            else:
                state[key] = value
        return state

    def shuffled(self, generator: torch.Generator) -> Masks:
        """Layerwise shuffle (sanity check): each layer keeps its count, positions are permuted."""
        out = {}
        for name, m in self._masks.items():
            flat = m.flatten()
            perm = torch.randperm(flat.numel(), generator=generator)
            out[name] = flat[perm].view_as(m)
        return Masks(out, {**self.meta, "shuffled": True})

    # Files
    def save(self, path: str | os.PathLike) -> None:
        """Write the masks and their metadata to one file, atomically."""
        payload = {"format": FILE_FORMAT, "meta": self.meta,
                   "shapes": {n: list(m.shape) for n, m in self._masks.items()},
                   "masks": {n: m.cpu() for n, m in self._masks.items()}}
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, model: nn.Module | None = None) -> Masks:
        """Read a mask file; with ``model``, check that it matches (names and shapes)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise MaskMismatchError(f"cannot read {str(path)!r} as an ntksap mask file "
                                    f"({type(err).__name__}); write one with `ntksap prune "
                                    "--out` or Masks.save") from err
        if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
            raise MaskMismatchError(f"{str(path)!r} is not an ntksap mask file "
                                    "(write one with `ntksap prune --out` or Masks.save)")
        _check_payload(payload, path)
        masks = cls(payload["masks"], payload.get("meta"))
        if model is not None:
            masks.check(model)
        return masks


def _check_payload(payload: dict[str, Any], path: Path) -> None:
    """A mask file's payload, beyond its format tag: ``masks`` a non-empty mapping of layer
    names to non-empty tensors of 0/1 (or bool), the same shapes as ``shapes`` records, and
    ``meta`` a mapping. :class:`MaskMismatchError` names the first problem."""
    masks, meta, shapes = payload.get("masks"), payload.get("meta"), payload.get("shapes")

    def bad(problem: str) -> MaskMismatchError:
        return MaskMismatchError(f"{str(path)!r} is a damaged ntksap mask file: {problem}; "
                                 "write it again with `ntksap prune --out` or Masks.save")

    if not isinstance(masks, dict) or not masks:
        raise bad("it holds no masks (its 'masks' entry is missing, empty or not a mapping)")
    if meta is not None and not isinstance(meta, dict):
        raise bad("its 'meta' entry is not a mapping")
    for name, mask in masks.items():
        if not isinstance(name, str) or not isinstance(mask, torch.Tensor):
            raise bad(f"layer {name!r} has no mask tensor")
        if mask.numel() == 0:
            raise bad(f"layer {name!r} has an empty mask")
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise bad(f"layer {name!r} has mask values other than 0 and 1")
        if isinstance(shapes, dict) and name in shapes and list(mask.shape) != list(
                shapes[name]):
            raise bad(f"layer {name!r} has a mask of shape {list(mask.shape)}, but the file "
                      f"records {shapes[name]}")


def fingerprint(model: nn.Module) -> dict[str, list[int]]:
    """Every prunable layer of ``model`` (no filter) by name, with its weight's shape: what
    masks record of the model they were made for."""
    try:
        layers = prunable_layers(model)
    except NoPrunableLayersError:
        return {}
    return {name: list(raw_weight(module).shape) for name, module in layers.items()}


def _fingerprint_problems(recorded: Any, model: nn.Module) -> list[str]:
    """How ``model``'s prunable layers differ from a recorded fingerprint (none recorded:
    masks from before fingerprints, or made by hand)."""
    if not isinstance(recorded, dict):
        return []
    actual = fingerprint(model)
    problems = [f"the model has a prunable layer {name!r} the masks' model did not have"
                for name in actual if name not in recorded]
    problems += [f"the masks' model had a prunable layer {name!r} this model lacks"
                 for name in recorded if name not in actual]
    problems += [f"layer {name!r} has weight shape {tuple(actual[name])}, the masks' model "
                 f"had {tuple(recorded[name])}" for name in actual
                 if name in recorded and list(recorded[name]) != actual[name]]
    return problems[:1]  # the first difference; the per-mask checks follow


def measured_sparsity(model: nn.Module, layer_filter: LayerFilter | None = None) -> float:
    """Fraction of exactly-zero entries in the (effective) prunable weights of ``model``."""
    zeros = total = 0
    with torch.no_grad():
        for module in prunable_layers(model, layer_filter).values():
            w = module.weight
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total
