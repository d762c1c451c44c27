"""Memory budgets of the methods that keep large graphs (ProsPr's unrolled steps, NTT's
differentiable Jacobians): the budget a method may use, and the bytes a graph keeps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..ntk.memory import parse_bytes


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free memory, or the host's available RAM
    (``MemAvailable`` of /proc/meminfo, else free physical pages); None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def budget_bytes(memory_budget: str | int | float | None, device: torch.device) -> int | None:
    """The budget in bytes: as given (e.g. ``"8GiB"``), or by default the free memory of
    ``device``; None when neither is known (no check)."""
    if memory_budget is not None:
        return parse_bytes(memory_budget)
    return available_bytes(device)


class SavedBytes:
    """Bytes of the distinct tensors autograd saved inside :func:`saved_bytes`."""

    def __init__(self) -> None:
        self.sizes: dict[tuple[int, int], int] = {}

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


@contextmanager
def saved_bytes() -> Iterator[SavedBytes]:
    """Count what autograd saves for backward (tensors are kept as they are, not copied)."""
    counter = SavedBytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided and not t.is_meta:
            try:
                key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                counter.sizes[key] = key[1]
            except (RuntimeError, NotImplementedError):  # tensors without plain storage
                pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter
