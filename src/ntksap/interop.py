"""The ways into and out of ntksap's masks: a pruned model's saved state dict, and the
ecosystem's mask format, :mod:`torch.nn.utils.prune`.

- :func:`load_pruned` loads a state dict saved from a pruned model (``model.state_dict()``
  of a model masked by :meth:`Masks.apply`, or a plain one with the masks baked in) into a
  fresh instance of its class, masks included.
- :func:`to_torch_prune` masks a model the ``torch.nn.utils.prune`` way
  (``weight_orig`` parameter, ``weight_mask`` buffer, forward pre-hook);
  :func:`from_torch_prune` reads such a model's masks as :class:`Masks`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .errors import MaskMismatchError
from .layers import PRUNABLE_TYPES, prunable_layers
from .masks import Masks

MASK_SUFFIX = ".parametrizations.weight.0.mask"  # a Masks.apply mask in a state dict
ORIGINAL_SUFFIX = ".parametrizations.weight.original"


def load_pruned(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Masks:
    """Load ``state_dict`` into ``model`` (a fresh instance of the pruned model's class) and
    mask it as the saved model was; returns the masks.

    A state dict of a masked model (keys ``<layer>.parametrizations.weight.original`` and
    ``...weight.0.mask``) gives its masks; a plain one (``<layer>.weight``, e.g. from
    :meth:`Masks.export_state_dict`) gives masks from its zeros: a prunable weight that is
    exactly 0 counts as pruned. Keys that match no layer of ``model`` are a
    :class:`MaskMismatchError` naming the first (via ``load_state_dict``'s strict check)."""
    masked = {key[:-len(MASK_SUFFIX)]: value for key, value in state_dict.items()
              if key.endswith(MASK_SUFFIX)}
    if masked:
        masks = Masks(masked)
        masks.apply(model)
        _load(model, state_dict)
        return masks
    _load(model, state_dict)
    masks = Masks({name: module.weight.detach() != 0
                   for name, module in prunable_layers(model).items()})
    masks.apply(model)
    return masks


def _load(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise MaskMismatchError(
            f"the state dict does not fit {type(model).__name__}: "
            f"{' '.join(line.strip() for line in first[:3])[:400]}; load it into an instance "
            "of the class it was saved from (same architecture and num_classes)") from err


def to_torch_prune(model: nn.Module, masks: Masks) -> nn.Module:
    """Mask ``model`` in place with ``torch.nn.utils.prune.custom_from_mask`` (the format of
    torch's pruning utilities and of the tools built on them); returns ``model``. ``model``
    must not carry ntksap's own masks (use a plain model, or :meth:`Masks.plain_copy`)."""
    masks.check(model)
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules[name]
        torch_prune.custom_from_mask(module, "weight",
                                     mask.to(device=module.weight.device))
    return model


def from_torch_prune(model: nn.Module) -> Masks:
    """The masks of a model pruned with ``torch.nn.utils.prune`` (every Conv/Linear layer
    whose weight has a ``weight_mask`` buffer; the others kept whole), as :class:`Masks`.
    ``from_torch_prune(to_torch_prune(model, masks)) == masks``."""
    masks = {}
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES):
            continue
        mask = getattr(module, "weight_mask", None)
        masks[name] = (mask.detach().bool() if isinstance(mask, torch.Tensor)
                       else torch.ones_like(module.weight, dtype=torch.bool))
    return Masks(masks)


def is_torch_pruned(model: nn.Module) -> bool:
    """Whether some layer of ``model`` is pruned with ``torch.nn.utils.prune``."""
    return torch_prune.is_pruned(model)


__all__ = ["from_torch_prune", "is_torch_pruned", "load_pruned", "to_torch_prune"]
