"""What a pruning method sees: the scoring copy of the model and the round's context.

A method only computes scores (higher = more important, kept first); the engine owns the
schedule, the exact-k selection, monotonicity and the sanity-check transforms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from ..errors import MethodOptionError

Batch = tuple[torch.Tensor, torch.Tensor]

PRUNING_BATCH_SIZE = 256  # the reference's pruning batch size (section 3)


@dataclass
class Findings:
    """What a method reports besides its scores, shared by all rounds of one pruning.

    ``record``: JSON facts the engine adds to the masks' metadata (``Masks.meta``), e.g.
    NTT's ``mask_updates``. ``start_weights``: parameters (by ``named_parameters`` name) the
    pruned network should start training from, e.g. NTT's transferred weights; the engine
    writes them into the user's model and records ``meta["start_weights"] = "method"``."""

    record: dict[str, Any] = field(default_factory=dict)
    start_weights: dict[str, torch.Tensor] | None = None


@dataclass
class ScoreContext:
    """Everything a method may need for one round."""

    round: int  # 1-based
    rounds: int
    density: float  # the density this round prunes to
    input_shape: tuple[int, ...]  # one example, without the batch dimension; () if unknown
    num_outputs: int  # logits per example; 0 if unknown (only for methods without inputs)
    data: list[Batch] | None  # pruning set batches on the scoring device, or None
    generator: torch.Generator  # seeded, on the scoring device
    batch_size: int = PRUNING_BATCH_SIZE  # the pruning set's batch size (inputs drawn too)
    findings: Findings = field(default_factory=Findings)  # the same object in every round


class ScoringNet:
    """A private deep copy of the model (plain parameters, no parametrizations) and the
    current masks as float 0/1 tensors. Methods may change its weights and BatchNorm buffers;
    the user's model never sees it."""

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module],
                 masks: Mapping[str, torch.Tensor], channels_last: bool = False) -> None:
        self.model = model
        self.layers = dict(layers)
        self.channels_last = channels_last
        self.set_masks(masks)

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Use these masks (any dtype) as the current ones, as 0/1 in the weights' dtype."""
        self.masks = {n: m.to(self.layers[n].weight.dtype) for n, m in masks.items()}

    @property
    def names(self) -> list[str]:
        return list(self.layers)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the copy scores in: its prunable weights' (inputs drawn in it too)."""
        return next(iter(self.layers.values())).weight.dtype

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the copy's memory format (channels_last for image batches if chosen)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def weights(self) -> dict[str, torch.Tensor]:
        """The copy's prunable weight parameters, by layer name."""
        return {name: module.weight for name, module in self.layers.items()}

    def mask_leaves(self) -> dict[str, torch.Tensor]:
        """Fresh copies of the masks that require grad, for mask-gradient scores."""
        return {n: m.detach().clone().requires_grad_(True) for n, m in self.masks.items()}

    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """Run the copy with the prunable weights replaced by ``weights`` (default: the copy's
        weights times the current masks). Everything else comes from the copy itself."""
        if weights is None:
            weights = {n: w * self.masks[n] for n, w in self.weights().items()}
        overrides = {f"{name}.weight": w for name, w in weights.items()}
        return functional_call(self.model, overrides, (self.prepare_input(x),))


class Method:
    """Base class of the scoring methods. Subclasses are dataclasses whose fields are the
    method's hyper-parameters (they become ``ntksap.prune`` keyword options)."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False  # True: a pruning set is required
    needs_inputs: ClassVar[bool] = True  # False: scores without a forward pass (no shape)
    default_rounds: ClassVar[int] = 1  # the method's own paper's T
    monotone: ClassVar[bool] = True  # False: pruned weights may come back (FORCE)
    train_mode: ClassVar[bool] = True  # BatchNorm mode of the scoring copy
    reports: ClassVar[tuple[str, ...]] = ()  # the keys it adds to ``Findings.record``

    def scores(self, net: ScoringNet, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def check_options(method: Method, **rules: tuple[bool, str]) -> None:
    """Refuse a method's options out of range (call from ``__post_init__``): ``rules`` maps
    each option to (whether its value is valid, the rule it breaks otherwise)."""
    bad = [f"{name} must be {rule}, got {getattr(method, name)!r}"
           for name, (ok, rule) in rules.items() if not ok]
    if bad:
        raise MethodOptionError(f"method {method.name!r}: option {'; '.join(bad)} (set it "
                                "with its flag or keyword, or leave it out for the default)")


def is_count(value: object, none_ok: bool = False) -> bool:
    """A whole number >= 1 (or None when ``none_ok``)."""
    return (none_ok and value is None) or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def is_positive(value: object) -> bool:
    """A finite number > 0."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 < value < math.inf)


def mask_gradients(net: ScoringNet, loss_fn) -> dict[str, torch.Tensor]:
    """d loss / d mask for every layer, where ``loss_fn(forward)`` builds a scalar loss from
    ``forward(x)`` (the masked network). Equals grad_w * theta at the masked weights."""
    masks = net.mask_leaves()
    weights = net.weights()
    masked = {n: weights[n].detach() * masks[n] for n in masks}
    loss = loss_fn(lambda x: net.forward(x, masked))
    grads = torch.autograd.grad(loss, list(masks.values()))
    return dict(zip(masks, grads, strict=True))
