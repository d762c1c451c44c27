"""Rows of the logit Jacobian J, one per (input, logit), computed a block at a time.

For inputs x_1..x_n and k logits, row (i, c) (index i * k + c, input-major) is the gradient of
logit c of example i with respect to the selected parameters (see :mod:`.params`). BatchNorm
layers are evaluated in eval form with the statistics of the whole input batch, recorded once
by a no-grad train-mode pass (as NTK-SAP scores, reference sections 3 and 7); no gradient flows
through the statistics, so each example's logits depend on that example only and J has no
cross-example terms. Dropout and other train-only behaviour are off (eval mode).

Two backends give the same rows:

- ``"structured"`` (Conv2d, Linear and BatchNorm parameters): one batched forward per chunk,
  one backward per logit to the layers' outputs, each followed by that logit's per-example
  weight gradients as batched products of the output gradients with the (unfolded, cached)
  layer inputs, written straight into J;
- ``"func"`` (any model): ``torch.func.vmap`` over inputs of ``jacrev`` over logits.

``"auto"`` takes the structured one when every selected parameter belongs to a supported layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ..batchnorm import BatchStatistics, batch_statistics
from ..errors import ConfigError, OutputShapeError
from .params import Column, has_shared_parameters, select_columns

JACOBIAN_BACKENDS = ("auto", "structured", "func")


def _structured_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear | _BatchNorm):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1
            and module.padding_mode == "zeros"
            and (not isinstance(module.padding, str) or module.padding == "valid"))


def structured_supported(model: nn.Module, columns: Sequence[Column]) -> bool:
    """Whether the structured backend can take these columns."""
    return (not has_shared_parameters(model)
            and all(_structured_layer(c.module) and not c.other_parametrization
                    and c.attr in ("weight", "bias") for c in columns))


@dataclass
class _Call:
    """One call of a hooked layer during a forward pass."""

    inp: torch.Tensor
    out: torch.Tensor
    version: int
    stats: tuple[torch.Tensor, torch.Tensor] | None = None


class _InplaceOutput(Exception):
    pass


class JacobianRows:
    """Blocks of J's rows for a fixed model, input batch and parameter selection.

    Made by :func:`jacobian_rows`, which sets up the batch statistics. J's columns are kept in
    groups (a large weight alone, small parameters together), one 2-D tensor per group, so
    per-example weight gradients are written in place. A block of ``inputs`` x ``logits`` has
    its rows logit-major: row j * len(inputs) + i is logit j of input i (``blocks`` gives the
    matching global indices i * k + c). Logit-major blocks let each logit's backward pass
    write its per-example gradients straight into J, with no stacking over logits.
    """

    GROUP_MIN = 4096  # parameters with fewer entries share a group

    def __init__(self, model: nn.Module, inputs: torch.Tensor, columns: list[Column],
                 logits: torch.Tensor, num_outputs: int, stats: BatchStatistics,
                 backend: str) -> None:
        self.model, self.inputs, self.columns = model, inputs, columns
        self.logits, self.num_outputs, self.stats, self.backend = (
            logits, num_outputs, stats, backend)
        self.num_params = sum(c.size for c in columns)
        self.by_module: dict[nn.Module, dict[str, int]] = {}  # module -> attr -> column index
        for index, col in enumerate(columns):
            self.by_module.setdefault(col.module, {})[col.attr] = index
        self.groups: list[int] = []  # the width of each group
        self.place: list[tuple[int, int]] = []  # each column's (group, offset)
        small = None
        for c in columns:
            if c.size >= self.GROUP_MIN:
                self.place.append((len(self.groups), 0))
                self.groups.append(c.size)
            else:
                if small is None:
                    small = len(self.groups)
                    self.groups.append(0)
                self.place.append((small, self.groups[small]))
                self.groups[small] += c.size
        self.dtype = columns[0].param.dtype
        self.itemsize = torch.empty((), dtype=self.dtype).element_size()
        self._clone_outputs = False
        self._activation_bytes: tuple[int, int, int] | None = None

    @property
    def n(self) -> int:
        return len(self.inputs)

    @property
    def k(self) -> int:
        return len(self.logits)

    # ----- memory
    def work_bytes(self, inputs: int, logits: int) -> int:
        """Estimated working memory for a block of ``inputs`` x ``logits`` rows, besides the
        block itself (activations, output gradients, per-layer temporaries)."""
        saved, outputs, unfolded = self.activation_bytes()
        biggest = max(c.param.numel() for c in self.columns) * self.itemsize
        if self.backend == "structured":
            # graph, one logit's output gradients, cached normalized and unfolded inputs
            per_input = saved + 3 * outputs + unfolded
            return int(1.25 * inputs * (per_input + 2 * biggest))
        row = self.num_params * self.itemsize
        return int(1.25 * inputs * (saved + logits * (saved + 2 * row + biggest)))

    def activation_bytes(self) -> tuple[int, int, int]:
        """Bytes per example: saved for backward, hooked layer outputs, unfolded inputs (all
        convolutions: they are cached across logits)."""
        if self._activation_bytes is None:
            saved: dict[int, int] = {}

            def pack(t: torch.Tensor) -> torch.Tensor:
                saved[t.data_ptr()] = t.numel() * t.element_size()
                return t

            def measure(batch: int) -> tuple[int, int, int]:
                saved.clear()
                calls: dict[nn.Module, list[_Call]] = {}
                probe = self.inputs[:1].expand(batch, *self.inputs.shape[1:])
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    self._forward(probe, calls)
                outputs = sum(c.out.numel() * c.out.element_size()
                              for cs in calls.values() for c in cs)
                unfolded = sum(_unfold_bytes(m, c) for m, cs in calls.items() for c in cs)
                return sum(saved.values()), outputs, unfolded

            one, two = measure(1), measure(2)  # the difference leaves out the parameters
            self._activation_bytes = (max(two[0] - one[0], 0), two[1] - one[1], one[2])
        return self._activation_bytes

    # ----- rows
    def empty(self, rows: int) -> list[torch.Tensor]:
        """Storage for ``rows`` rows of J: one (rows, width) tensor per column group."""
        return [torch.empty((rows, w), dtype=self.dtype, device=self.inputs.device)
                for w in self.groups]

    def block(self, inputs: slice, logits: torch.Tensor | None = None,
              out: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """J's rows for ``self.inputs[inputs]`` and the logit positions ``logits`` (indices
        into ``self.logits``; default all), logit-major, one tensor per column group (written
        into ``out`` when given)."""
        x = self.inputs[inputs]
        positions = (torch.arange(self.k, device=self.logits.device) if logits is None
                     else logits)
        which = self.logits[positions]
        if out is None:
            out = self.empty(len(x) * len(which))
        if self.backend == "structured":
            try:
                return self._structured(x, which, out)
            except _InplaceOutput:
                self._clone_outputs = True  # a layer's output is modified in place: copy it
                return self._structured(x, which, out)
        return self._func(x, which, out)

    def _target(self, out: list[torch.Tensor], index: int, rows: slice) -> torch.Tensor:
        group, offset = self.place[index]
        return out[group][rows, offset:offset + self.columns[index].size]

    def _forward(self, x: torch.Tensor, calls: dict[nn.Module, list[_Call]]) -> torch.Tensor:
        modules = {c.module for c in self.columns} if self.backend == "structured" else set()
        clone = self._clone_outputs

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            stats = None
            if isinstance(module, _BatchNorm):  # the statistics this call was replayed with
                stats = self.stats.last_replayed()
            calls.setdefault(module, []).append(
                _Call(args[0].detach(), output, output._version, stats))
            return output.clone() if clone else None  # the network goes on with a copy

        handles = [m.register_forward_hook(hook) for m in modules]
        try:
            self.stats.set_mode("replay")
            x = x.detach()
            if x.is_floating_point():  # every layer output in the graph, even frozen layers
                x.requires_grad_(True)
            with torch.enable_grad():
                return self.model(x)
        finally:
            for h in handles:
                h.remove()

    def _structured(self, x: torch.Tensor, which: torch.Tensor, out: list[torch.Tensor]
                    ) -> list[torch.Tensor]:
        calls: dict[nn.Module, list[_Call]] = {}
        y = self._forward(x, calls)
        if any(c.out._version != c.version for cs in calls.values() for c in cs):
            raise _InplaceOutput
        flat = [(m, c) for m, cs in calls.items() for c in cs]
        by_module = self.by_module
        cache: dict[int, dict[str, torch.Tensor]] = {}  # unfolded inputs, normalized inputs
        n = len(x)
        for j, logit in enumerate(which.tolist()):  # one backward pass per logit, all inputs
            got = torch.autograd.grad(y[:, logit].sum(), [c.out for _, c in flat],
                                      retain_graph=j < len(which) - 1, allow_unused=True)
            rows = slice(j * n, (j + 1) * n)  # logit-major: this logit's rows, input order
            done: set[int] = set()
            for number, ((module, call), g) in enumerate(zip(flat, got, strict=True)):
                if g is None:
                    continue
                targets = {}
                for attr, index in by_module[module].items():
                    target = self._target(out, index, rows)
                    direct = (self.columns[index].kept is None and index not in done
                              and target.is_contiguous())
                    targets[attr] = target if direct else None
                for attr, pe in _layer_grads(module, call, g, targets,
                                             cache.setdefault(number, {})).items():
                    index = by_module[module][attr]
                    col, target = self.columns[index], self._target(out, index, rows)
                    if col.kept is not None:
                        pe = pe.index_select(1, col.kept)
                    if index in done:
                        target.add_(pe)
                    elif pe.data_ptr() != target.data_ptr():
                        target.copy_(pe)
                    done.add(index)
            del got
            for index in range(len(self.columns)):
                if index not in done:  # the layer took no part in this logit's graph
                    self._target(out, index, rows).zero_()
        del y
        return out

    def _func(self, x: torch.Tensor, which: torch.Tensor, out: list[torch.Tensor]
              ) -> list[torch.Tensor]:
        chosen = {c.name: c.param.detach() for c in self.columns}

        def logits_of(params: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            self.stats.set_mode("replay")
            return functional_call(self.model, params, (xi.unsqueeze(0),))[0, which]

        with torch.no_grad():  # no graph to the parameters left out of ``chosen``
            jac = vmap(jacrev(logits_of), in_dims=(None, 0))(chosen, x.detach())
        rows = slice(0, len(x) * len(which))
        for index, col in enumerate(self.columns):  # (inputs, logits, ...) to logit-major
            g = jac.pop(col.name).transpose(0, 1).reshape(len(x) * len(which), -1)
            if col.kept is not None:
                g = g.index_select(1, col.kept)
            self._target(out, index, rows).copy_(g)
        return out

    def blocks(self, inputs_per_chunk: int, logits_per_chunk: int
               ) -> Iterator[tuple[torch.Tensor, slice, torch.Tensor]]:
        """(global row indices, input slice, logit positions) of each block, in order."""
        device = self.inputs.device
        for start in range(0, self.n, inputs_per_chunk):
            rows_in = slice(start, min(start + inputs_per_chunk, self.n))
            for first in range(0, self.k, logits_per_chunk):
                positions = torch.arange(first, min(first + logits_per_chunk, self.k),
                                         device=device)
                idx = (torch.arange(rows_in.start, rows_in.stop, device=device)[None, :]
                       * self.k + positions[:, None]).flatten()
                yield idx, rows_in, positions


def _unfold_bytes(module: nn.Module, call: _Call) -> int:
    if not isinstance(module, nn.Conv2d):
        return 0
    kernel = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    return kernel * call.out.shape[-1] * call.out.shape[-2] * call.inp.element_size()


def _layer_grads(module: nn.Module, call: _Call, g: torch.Tensor,
                 targets: dict[str, torch.Tensor | None], cache: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """Per-example gradients of one logit for one call's parameters named in ``targets``, each
    (inputs, numel); a weight gradient is computed straight into its target when one is given.

    ``g`` is the gradient of the logit (summed over the inputs, which do not interact) with
    respect to the call's output, shaped like it. ``cache`` keeps what the call's logits share
    (the unfolded input of a convolution, the normalized input of a BatchNorm)."""
    n = len(g)
    grads: dict[str, torch.Tensor] = {}
    if isinstance(module, nn.Conv2d):
        flat = g.reshape(n, g.shape[1], -1)
        if "weight" in targets:
            if "columns" not in cache:
                padding = (0, 0) if module.padding == "valid" else module.padding
                cache["columns"] = F.unfold(call.inp, module.kernel_size, module.dilation,
                                            padding, module.stride).transpose(1, 2)
            grads["weight"] = _bmm(flat, cache["columns"], targets["weight"], n)
        if "bias" in targets:
            grads["bias"] = flat.sum(2)
    elif isinstance(module, nn.Linear):
        gout = g.reshape(n, -1, g.shape[-1])
        xin = call.inp.reshape(n, -1, call.inp.shape[-1])
        if "weight" in targets:
            grads["weight"] = _bmm(gout.transpose(1, 2), xin, targets["weight"], n)
        if "bias" in targets:
            grads["bias"] = gout.sum(1)
    elif isinstance(module, _BatchNorm):
        dims = tuple(range(2, g.dim()))
        if "weight" in targets and call.stats is not None:
            if "normalized" not in cache:
                mean, var = call.stats
                shape = (1, -1) + (1,) * (call.inp.dim() - 2)
                cache["normalized"] = ((call.inp - mean.reshape(shape))
                                       * torch.rsqrt(var + module.eps).reshape(shape))
            xhat = cache["normalized"]
            grads["weight"] = (g * xhat).sum(dims) if dims else g * xhat
        if "bias" in targets:
            grads["bias"] = g.sum(dims) if dims else g
    return {attr: grad.reshape(n, -1) for attr, grad in grads.items()}


def _bmm(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor | None, rows: int
         ) -> torch.Tensor:
    """Batched a @ b as (rows, -1), computed into ``target`` when given."""
    if target is None:
        return torch.bmm(a, b).view(rows, -1)
    torch.bmm(a, b, out=target.view(a.shape[0], a.shape[1], b.shape[2]))
    return target


@contextmanager
def jacobian_rows(model: nn.Module, inputs: torch.Tensor, *, params: str = "all",
                  logits: Sequence[int] | None = None, backend: str = "auto",
                  statistics_inputs: torch.Tensor | None = None) -> Iterator[JacobianRows]:
    """Set ``model`` up for Jacobian rows of ``inputs``: eval mode, BatchNorm statistics of
    ``statistics_inputs`` (default: ``inputs``) recorded once, then replayed; restored after.

    Raises :class:`OutputShapeError` unless the model maps a batch (n, ...) to logits (n, k).
    """
    if backend not in JACOBIAN_BACKENDS:
        raise ConfigError(f"backend must be one of {JACOBIAN_BACKENDS}, not {backend!r}")
    if inputs.dim() < 1 or len(inputs) == 0:
        raise OutputShapeError("the NTK needs a non-empty batch of inputs, shaped (n, ...)")
    columns = select_columns(model, params)
    if backend == "auto":
        backend = "structured" if structured_supported(model, columns) else "func"
    elif backend == "structured" and not structured_supported(model, columns):
        raise ConfigError("backend='structured' takes only Conv2d (groups=1), Linear and "
                          "BatchNorm parameters, without tied weights or parametrizations "
                          "other than masks; use backend='func' (any model)")
    training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with batch_statistics(model, "record_train") as stats:
            reference = statistics_inputs if statistics_inputs is not None else inputs
            with torch.no_grad():
                out = model(reference)
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != len(reference):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise OutputShapeError(
                    f"{type(model).__name__} returns {shape} for a batch of {len(reference)} "
                    "inputs; the NTK needs logits shaped (batch, k). Wrap the model so that it "
                    "returns one flat vector of outputs per example (e.g. out.flatten(1), or "
                    "the tensor of a tuple or dict output)")
            num_outputs = out.shape[1]
            chosen = list(range(num_outputs)) if logits is None else list(logits)
            if not chosen or any(not 0 <= c < num_outputs for c in chosen):
                raise OutputShapeError(f"logits must be indices in [0, {num_outputs}) of the "
                                       f"model's {num_outputs} outputs, got {logits}")
            yield JacobianRows(model, inputs, columns,
                               torch.tensor(chosen, device=inputs.device), num_outputs,
                               stats, backend)
    finally:
        for m, mode in training.items():
            m.training = mode
