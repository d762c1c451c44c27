"""The pruning engine, shared by every method: the schedule over T rounds, exact-k selection,
monotone masks, scoring on a private copy, and the sanity-check transforms."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import (
    InputShapeError,
    LayerCollapseError,
    MissingDataError,
    NonFiniteScoreError,
    NtksapError,
)
from .init import KAIMING, check_init, initialize_
from .interop import is_torch_pruned
from .layers import dense_weights, raw_weight
from .masks import LayerFilter, Masks, fingerprint, prunable_layers
from .methods import Method, ScoreContext, ScoringNet, check_options, method_class
from .methods.base import PRUNING_BATCH_SIZE
from .selection import SCOPES, select

SCHEDULES = ("exponential", "linear")
TRANSFORMS = ("shuffle", "reinit", "invert")


def density_schedule(density: float, rounds: int, schedule: str = "exponential") -> list[float]:
    """Density after each round t = 1..T: d^(t/T) (exponential) or 1 - (1 - d) t / T."""
    if schedule == "exponential":
        return [density ** (t / rounds) for t in range(1, rounds + 1)]
    if schedule == "linear":
        return [1 - (1 - density) * t / rounds for t in range(1, rounds + 1)]
    raise NtksapError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def removed_counts(total: int, sparsity: float, rounds: int, schedule: str) -> list[int]:
    """Weights removed after each round; the last is exactly round(sparsity * total)."""
    counts = [round((1 - d) * total) for d in density_schedule(1 - sparsity, rounds, schedule)]
    counts[-1] = round(sparsity * total)
    return counts


def check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not (
            0.0 <= float(sparsity) < 1.0):
        raise NtksapError(
            f"sparsity must be a number in [0, 1), the fraction of weights removed (e.g. 0.982); "
            f"got {sparsity!r}. For a density d, pass sparsity = 1 - d")
    return float(sparsity)


def make_method(method: str | Method, options: dict[str, Any]) -> Method:
    """The method ``method`` built with ``options``: names and types checked by
    :func:`ntksap.methods.check_options`, values by the method's ``__post_init__``."""
    if isinstance(method, Method):
        if options:
            raise NtksapError("pass options to the method's constructor, not to prune(), when "
                              "giving a Method instance")
        return method
    return method_class(method)(**check_options(method, options))


def as_batches(data: Any, device: torch.device, batch_size: int = PRUNING_BATCH_SIZE,
               dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """A pruning set as a list of (x, y) batches on ``device``, floating inputs in ``dtype``:
    from None, one (x, y) pair of tensors (cut into batches of ``batch_size``, the last one
    smaller, as a DataLoader without drop_last does), or any iterable of (x, y) batches such
    as a DataLoader (used as it comes)."""
    if data is None:
        return None
    if isinstance(data, tuple | list) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        data = list(zip(data[0].split(batch_size), data[1].split(batch_size), strict=True))
    if not isinstance(data, Iterable):
        raise MissingDataError(f"data must be (x, y) tensors or an iterable of (x, y) batches; "
                               f"got {type(data).__name__}")
    batches = [(_as_input(x, device, dtype), y.to(device)) for x, y, *_ in data]
    return batches or None


def _as_input(x: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and x.is_floating_point():
        return x.to(device=device, dtype=dtype)
    return x.to(device)


def prune(model: nn.Module, method: str | Method, sparsity: float, *,
          rounds: int | None = None, schedule: str = "exponential", scope: str = "global",
          input_shape: tuple[int, ...] | None = None, data: Any = None,
          batch_size: int = PRUNING_BATCH_SIZE, seed: int = 0,
          transform: str | None = None, layer_filter: LayerFilter | None = None,
          allow_layer_collapse: bool = True, device: str | torch.device | None = None,
          channels_last: bool | None = None, progress: bool = False,
          on_round: Callable[[int, Masks], None] | None = None, init: str = KAIMING,
          **options: Any) -> Masks:
    """Prune ``model`` at initialization and return its :class:`Masks` (``masks.apply(model)``
    masks it).

    Scores are computed on a private copy, so the weights and BatchNorm statistics of ``model``
    are untouched, except with ``transform="reinit"``, which re-draws them on purpose, and
    for a method that sets the weights to train from (NTT with ``start_from="transferred"``,
    its default: the learned weights are written into ``model``; ``meta["start_weights"]``
    says "method", else "initial"). If ``model`` is already masked, its masks are the
    starting point. What a method reports besides scores (NTT's ``mask_updates``) is in
    ``masks.meta`` too.

    Args:
        method: a registered name (``ntksap.METHODS``) or a Method instance.
        sparsity: fraction of the prunable weights to remove, in [0, 1); exactly
            round(sparsity * N) are removed.
        rounds: T; default the method's own (NTK-SAP 20, SynFlow 100, Iterative SNIP 20, one-shot
            methods 1). After round t the density is d^(t/T) (``schedule="exponential"``) or
            linear in t.
        scope: "global" (one threshold over all layers), "layerwise" (same density per layer)
            or "erk".
        input_shape: one example's shape, e.g. (3, 32, 32); default: taken from ``data``
            (random and magnitude, which never run the network, need neither).
        data: the pruning set, (x, y) tensors or an iterable of (x, y) batches such as a
            DataLoader; required by the data-needing methods (snip, iter_snip, grasp, force).
            Floating inputs are cast to the model's dtype.
        batch_size: the pruning set's batch size, default 256 (reference section 3; CIFAR-10's
            100 images are one batch). (x, y) tensors are cut into batches of this size (an
            iterable of batches is used as it comes); the methods sum their gradients over the
            batches (SNIP, Iterative SNIP, FORCE, GraSP), and NTK-SAP makes one draw per batch
            per repeat, drawing its Gaussian inputs in batches of this size when no data is
            given. Each batch is one BatchNorm batch.
        seed: seeds every random draw of the scoring and the tie-breaking: same seed, same mask.
        transform: sanity checks (Frankle et al. 2021): "shuffle" (permute each layer's mask,
            keeping its count), "reinit" (keep the mask, re-draw ``model``'s weights), "invert"
            (prune the highest scores instead of the lowest).
        layer_filter: ``f(name, module) -> bool`` choosing which Conv/Linear layers are
            prunable, e.g. ``ntksap.exclude_layers("fc")``.
        allow_layer_collapse: when False, a layer left with no weight raises LayerCollapseError.
        channels_last: score in channels_last memory format. Default: for image inputs on
            CUDA only. On CPU, PyTorch's train-mode BatchNorm in channels_last is about 200x
            less precise in float32, which changes a few tenths of a percent of SNIP's and
            GraSP's kept weights; the default contiguous layout matches the reference
            procedure exactly (benchmarks/RESULTS.md has the speed trade-off).
        on_round: called as ``on_round(t, masks)`` after each round.
        init: how ``model`` was initialized (``ntksap.init.INITS``; default Kaiming-normal):
            the scheme the "reinit" transform re-draws the weights with.
        **options: the method's hyper-parameters, e.g. ``repeats=5, eps=0.01`` for NTK-SAP.
    """
    start = time.perf_counter()
    check_init(init)
    if is_torch_pruned(model):
        raise NtksapError(
            f"{type(model).__name__} is pruned with torch.nn.utils.prune, whose masks ntksap "
            "does not score through: read them with ntksap.from_torch_prune(model), remove "
            "torch's pruning (torch.nn.utils.prune.remove on each layer), then apply the masks "
            "(masks.apply(model)) and prune that model")
    scorer, plan = _validate(model, method, sparsity, rounds, schedule, scope, transform,
                             layer_filter, options)
    dense = dense_weights(model)
    if dense:
        warnings.warn(_dense_warning(dense), stacklevel=2)
    net, ctx = _prepare(model, scorer, plan.start_masks, input_shape, data, batch_size,
                        layer_filter, device, channels_last, seed)
    alive = _run_rounds(scorer, net, ctx, plan, seed, progress, on_round)
    masks, collapsed = _finish(model, alive, plan, seed, allow_layer_collapse, init)
    masks.meta.update(**ctx.findings.record, start_weights=_start(model, ctx, plan))
    masks.meta.update(
        method=scorer.name, sparsity=plan.sparsity, rounds=plan.rounds, schedule=schedule,
        scope=scope, seed=seed, init=init, transform=transform,
        input_shape=list(ctx.input_shape),
        batch_size=ctx.batch_size, channels_last=net.channels_last,
        options=dataclasses.asdict(scorer) if dataclasses.is_dataclass(scorer) else {},
        model=type(model).__name__, fingerprint=fingerprint(model),
        collapsed_layers=collapsed, dense_weights=dense, seconds=time.perf_counter() - start)
    return masks


def _dense_warning(dense: dict[str, list[int]]) -> str:
    """One line naming the weights that no method prunes (:func:`ntksap.layers.dense_weights`)
    and how many they are."""
    count = sum(math.prod(shape) for shape in dense.values())
    names = ", ".join(list(dense)[:4]) + (f" and {len(dense) - 4} more" if len(dense) > 4 else "")
    return (f"{len(dense)} weight tensor(s) of this model are no Conv/Linear weight and stay "
            f"dense ({count:,} weights; the sparsity counts only the prunable layers): {names}")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A validated pruning request: the target, the schedule of removals and the masks it
    starts from."""

    sparsity: float
    rounds: int
    scope: str
    transform: str | None
    start_masks: Masks
    total: int
    removals: list[int]  # weights removed in all after each round

    @property
    def densities(self) -> list[float]:
        return [1 - r / self.total for r in self.removals]


def _validate(model: nn.Module, method: str | Method, sparsity: float, rounds: int | None,
              schedule: str, scope: str, transform: str | None,
              layer_filter: LayerFilter | None, options: dict[str, Any]
              ) -> tuple[Method, _Plan]:
    """Check the request and plan its rounds (before anything is computed)."""
    sparsity = check_sparsity(sparsity)
    scorer = make_method(method, options)
    rounds = scorer.default_rounds if rounds is None else int(rounds)
    if rounds < 1:
        raise NtksapError(f"rounds must be at least 1; got {rounds}")
    if scope not in SCOPES:
        raise NtksapError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if transform is not None and transform not in TRANSFORMS:
        raise NtksapError(f"unknown transform {transform!r}; choose one of "
                          f"{', '.join(TRANSFORMS)}")
    start_masks = Masks.of(model, layer_filter)
    total = start_masks.total
    removals = removed_counts(total, sparsity, rounds, schedule)
    if start_masks.remaining < total - removals[-1]:
        raise NtksapError(f"the model is already pruned to sparsity {start_masks.sparsity:.4f}, "
                          f"beyond the requested {sparsity}; ask for a higher sparsity")
    removals = [max(r, total - start_masks.remaining) for r in removals]
    return scorer, _Plan(sparsity, rounds, scope, transform, start_masks, total, removals)


def _run_rounds(scorer: Method, net: ScoringNet, ctx: ScoreContext, plan: _Plan, seed: int,
                progress: bool, on_round: Callable[[int, Masks], None] | None
                ) -> dict[str, torch.Tensor]:
    """Score and select ``plan.rounds`` times; the surviving weights, on the scoring device."""
    device = ctx.generator.device
    tie_breaker = torch.Generator().manual_seed(seed)
    alive = {n: m.to(device) for n, m in plan.start_masks.items()}
    densities = plan.densities
    with torch.random.fork_rng(devices=_cuda_indices(device)):
        torch.manual_seed(seed)
        bar = tqdm(range(1, plan.rounds + 1), desc=f"{scorer.name}", unit="round",
                   disable=not progress, leave=False)
        for t in bar:
            net.set_masks(alive)
            ctx = dataclasses.replace(ctx, round=t, rounds=plan.rounds, density=densities[t - 1])
            alive = _round(scorer, net, ctx, alive, plan, plan.total - plan.removals[t - 1],
                           tie_breaker)
            bar.set_postfix(density=f"{densities[t - 1]:.4f}")
            if on_round is not None:
                on_round(t, Masks({n: m.cpu() for n, m in alive.items()}))
    return alive


def _round(scorer: Method, net: ScoringNet, ctx: ScoreContext, alive: dict[str, torch.Tensor],
           plan: _Plan, keep: int, tie_breaker: torch.Generator) -> dict[str, torch.Tensor]:
    """One round: score, then keep exactly ``keep`` weights (within ``alive`` for a monotone
    method)."""
    scores = _checked_scores(scorer, net, ctx)
    if plan.transform == "invert":
        scores = {n: -s for n, s in scores.items()}
    caps = None
    if scorer.monotone:
        scores = {n: s.masked_fill(~alive[n], -math.inf) for n, s in scores.items()}
        caps = {n: int(m.sum()) for n, m in alive.items()}
    return select(scores, keep, plan.scope, tie_breaker, caps)


def _finish(model: nn.Module, alive: dict[str, torch.Tensor], plan: _Plan, seed: int,
            allow_layer_collapse: bool, init: str) -> tuple[Masks, list[str]]:
    """The final masks on the CPU, after the shuffle or reinit transform, and the layers they
    leave empty (an error unless layer collapse is allowed)."""
    masks = Masks({n: m.cpu() for n, m in alive.items()})
    if plan.transform == "shuffle":
        masks = masks.shuffled(torch.Generator().manual_seed(seed))
    elif plan.transform == "reinit":
        reinitialize(model, seed, init)
    collapsed = [r["name"] for r in masks.layers() if r["remaining"] == 0]
    if collapsed and not allow_layer_collapse:
        raise LayerCollapseError(
            f"layers left with no weight at sparsity {plan.sparsity}: {', '.join(collapsed)}; "
            "lower the sparsity, use scope='layerwise' or 'erk', or allow layer collapse")
    return masks, collapsed


def score(model: nn.Module, method: str | Method, *, input_shape: tuple[int, ...] | None = None,
           data: Any = None, batch_size: int = PRUNING_BATCH_SIZE, seed: int = 0,
           layer_filter: LayerFilter | None = None, device: str | torch.device | None = None,
           channels_last: bool | None = None, **options: Any) -> dict[str, torch.Tensor]:
    """One round of ``method``'s scores for the prunable layers of ``model`` at its current
    masks (all ones if unmasked), computed on a private copy as :func:`prune` does."""
    scorer = make_method(method, options)
    net, ctx = _prepare(model, scorer, Masks.of(model, layer_filter), input_shape, data,
                        batch_size, layer_filter, device, channels_last, seed)
    with torch.random.fork_rng(devices=_cuda_indices(ctx.generator.device)):
        torch.manual_seed(seed)
        return _checked_scores(scorer, net, ctx)


def _prepare(model: nn.Module, scorer: Method, start_masks: Masks,
             input_shape: tuple[int, ...] | None, data: Any, batch_size: int,
             layer_filter: LayerFilter | None, device: str | torch.device | None,
             channels_last: bool | None, seed: int) -> tuple[ScoringNet, ScoreContext]:
    """Check the inputs and build the scoring copy and the first round's context."""
    layers = prunable_layers(model, layer_filter)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NtksapError(f"batch_size must be a positive integer (the pruning set's batch "
                          f"size, default {PRUNING_BATCH_SIZE}); got {batch_size!r}")
    device = torch.device(device) if device is not None else _model_device(model)
    dtype = next(iter(layers.values())).weight.dtype
    batches = as_batches(data, device, batch_size, dtype)
    if scorer.needs_data and not batches:
        raise MissingDataError(
            f"method {scorer.name!r} needs a pruning set (real data with labels): pass "
            "data=(x, y) or a DataLoader to ntksap.prune, or --dataset on the command line; "
            "the data-free methods are random, magnitude, synflow and ntksap")
    if batches:
        shape = tuple(batches[0][0].shape[1:])
        if input_shape is not None and tuple(input_shape) != shape:
            raise InputShapeError(
                f"the pruning data's examples have shape {shape}, but input_shape is "
                f"{tuple(input_shape)}: give data of the model's input shape (e.g. CIFAR "
                "images for a CIFAR model, MNIST for an MNIST one)")
        input_shape = shape
    if input_shape is None and scorer.needs_inputs:
        raise NtksapError(f"method {scorer.name!r} runs the network: give input_shape (one "
                          "example's shape, e.g. (3, 32, 32)) or data")
    input_shape = tuple(int(s) for s in input_shape or ())
    if channels_last is None:
        channels_last = default_channels_last(input_shape, device)
    net = _scoring_copy(model, start_masks, layers, device, channels_last)
    # the forward check needs a shape; methods without a forward pass may go without one
    num_outputs = _check_input_shape(net, input_shape, device) if input_shape else 0
    net.model.train(scorer.train_mode)
    ctx = ScoreContext(round=1, rounds=1, density=1.0, input_shape=input_shape,
                       num_outputs=num_outputs, data=batches,
                       generator=torch.Generator(device).manual_seed(seed),
                       batch_size=batch_size)
    return net, ctx


def default_channels_last(input_shape: tuple[int, ...], device: torch.device) -> bool:
    """Score image inputs in channels_last on CUDA only: on CPU, PyTorch's train-mode
    BatchNorm is about 200x less precise in float32 in that layout, enough to change SNIP's
    and GraSP's masks, while the contiguous layout matches the reference procedure."""
    return len(input_shape) == 3 and device.type == "cuda"


def _cuda_indices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def reinitialize(model: nn.Module, seed: int, init: str = KAIMING) -> nn.Module:
    """The "reinit" sanity check's fresh weights: a new draw of the scheme ``init`` (default
    Kaiming-normal) from ``seed + 1``."""
    return initialize_(model, init, torch.Generator(_model_device(model)).manual_seed(seed + 1))


def _start(model: nn.Module, ctx: ScoreContext, plan: _Plan) -> str:
    """Write the weights the method set to train from into ``model`` (not after "reinit",
    which re-draws them); "method" if it did, else "initial"."""
    if ctx.findings.start_weights is None or plan.transform == "reinit":
        return "initial"
    set_parameters(model, ctx.findings.start_weights)
    return "method"


def set_parameters(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy ``values`` (by the plain ``named_parameters`` name, e.g. ``fc.weight``) into
    ``model``; a masked layer's weight goes into its stored original."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, value in values.items():
            owner, _, attr = key.rpartition(".")
            module = modules[owner]
            target = raw_weight(module) if attr == "weight" else getattr(module, attr)
            target.copy_(value)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _scoring_copy(model: nn.Module, masks: Masks, layers: dict[str, nn.Module],
                  device: torch.device, channels_last: bool) -> ScoringNet:
    """A deep copy with plain parameters that require no grad, on ``device``."""
    clone = Masks.plain_copy(model).to(device)
    if channels_last:
        clone = clone.to(memory_format=torch.channels_last)
    for p in clone.parameters():
        p.requires_grad_(False)
    modules = dict(clone.named_modules())
    return ScoringNet(clone, {n: modules[n] for n in layers},
                      {n: m.to(device) for n, m in masks.items()}, channels_last)


def _check_input_shape(net: ScoringNet, input_shape: tuple[int, ...],
                       device: torch.device) -> int:
    """Run two zero inputs through the copy in eval mode; return the number of outputs."""
    net.model.eval()
    try:
        with torch.no_grad():
            out = net.forward(torch.zeros((2, *input_shape), dtype=net.dtype, device=device))
    except (RuntimeError, ValueError, IndexError) as err:
        raise InputShapeError(
            f"the model cannot take inputs of shape {input_shape} (one example, no batch "
            f"dimension): {str(err).splitlines()[0]}. Pass the input_shape the model expects, "
            "e.g. (3, 32, 32) for CIFAR") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise InputShapeError(f"the model must return logits of shape (batch, k); it returned "
                              f"{getattr(out, 'shape', type(out).__name__)}")
    return out.shape[1]


def _checked_scores(scorer: Method, net: ScoringNet, ctx: ScoreContext
                    ) -> dict[str, torch.Tensor]:
    scores = scorer.scores(net, ctx)
    for name, mask in net.masks.items():
        s = scores.get(name)
        if s is None or s.shape != mask.shape:
            raise NtksapError(f"method {scorer.name!r} returned no score of shape "
                              f"{tuple(mask.shape)} for layer {name!r}")
        if not torch.isfinite(s).all():
            raise NonFiniteScoreError(
                f"method {scorer.name!r} gave non-finite scores (NaN or inf) in layer {name!r} "
                f"in round {ctx.round}; check the model's initialization and inputs (for "
                "SynFlow on very deep networks, score in float64)")
    return {n: scores[n].detach().double() for n in net.masks}
