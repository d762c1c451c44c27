"""``torch.distributed`` helpers for :func:`ntksap.train.train` (no-ops when not distributed).

Masked models under DDP: the masks are buffers of the weight parametrizations and the gradient
flows to each parametrization's ``original`` parameter, which DDP all-reduces like any other
parameter. DDP is built with ``broadcast_buffers=False`` so that the (weight-sized) mask
buffers are not re-sent every step; instead :func:`broadcast_state` sends every parameter and
buffer from rank 0 once before training (same initial weights and masks everywhere) and
:func:`broadcast_buffers` sends the buffers after each epoch, which makes the BatchNorm running
statistics on every rank equal to rank 0's (what per-step buffer broadcasting would give too).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def rank_and_world(distributed: bool) -> tuple[int, int]:
    """(rank, world size); (0, 1) unless ``distributed`` and the process group is up."""
    if distributed:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("train(distributed=True) needs torch.distributed initialized "
                               "first (dist.init_process_group, e.g. under torchrun)")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_state(model: nn.Module) -> None:
    """Copy every parameter and buffer (masks included) of rank 0 to all ranks."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def broadcast_buffers(model: nn.Module) -> None:
    """Copy every buffer (BatchNorm statistics, masks) of rank 0 to all ranks."""
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (see the module docstring)."""
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               broadcast_buffers=False)


def sum_over_ranks(values: list[float], device: torch.device, distributed: bool) -> list[float]:
    """Element-wise sum of ``values`` across ranks (float64)."""
    if not distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(obj: Any, distributed: bool) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not distributed:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier(distributed: bool) -> None:
    if distributed:
        dist.barrier()
