"""A pack's training batches: every network's own stream, gathered and augmented in one go.

Network ``m`` sees exactly the batches its separate run's :class:`TensorLoader` yields (its
shuffle seeded by its seed and the epoch, its augmentation drawn from its own generator), but
the M networks' rows are gathered, cropped, flipped and normalized as one batch of ``M*B``
images, a handful of kernels per step instead of M times as many (what keeps a GPU busy). The
batch comes out in the pack's layout: ``x`` ``[B, M*C, H, W]`` (network ``m`` in channel
block ``m``), ``y`` ``[B, M]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..data.loader import TensorLoader, take_rows
from ..data.sampling import AUGMENT, seeded_generator


def can_gather(loaders: Sequence[Any]) -> bool:
    """Whether ``loaders`` are in-memory loaders over one dataset with one recipe (then
    :class:`PackLoader` serves them); else the pack zips them."""
    first = loaders[0]
    return all(isinstance(loader, TensorLoader) for loader in loaders) and all(
        _same(loader.data.x, first.data.x) and _same(loader.data.y, first.data.y)
        and loader.batch_size == first.batch_size
        and loader.augment == first.augment and loader.drop_last == first.drop_last
        and loader.dtype == first.dtype and loader.channels_last == first.channels_last
        and loader.world_size == 1 for loader in loaders) and (
        first.augment is None or hasattr(first.augment, "draw"))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.data_ptr() == b.data_ptr() and a.shape == b.shape


class PackLoader:
    """The batches of M :class:`TensorLoader` (see :func:`can_gather`), stacked."""

    def __init__(self, loaders: Sequence[TensorLoader]) -> None:
        if not can_gather(loaders):
            raise ValueError("PackLoader needs in-memory loaders over one dataset and recipe")
        self.loaders = list(loaders)
        self.first = loaders[0]

    def __len__(self) -> int:
        return len(self.first)

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch)

    def shared(self) -> bool:
        """Whether every network has the same stream (same seed and epoch: ``shared_stream``
        runs): then one batch is drawn and given to all."""
        return len({(loader.seed, loader.epoch) for loader in self.loaders}) == 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        first, size = self.first, len(self.loaders)
        streams = self.loaders[:1] if self.shared() else self.loaders
        copies = size // len(streams)
        orders = torch.stack([loader.indices() for loader in streams]).to(first.device)
        generators = [seeded_generator(loader.seed, AUGMENT, loader.epoch, loader.rank)
                      for loader in streams]
        batch = first.batch_size
        stop = orders.shape[1] - orders.shape[1] % batch if first.drop_last else orders.shape[1]
        for start in range(0, stop, batch):
            idx = orders[:, start:start + batch]  # [M, B]
            b = idx.shape[1]
            x = take_rows(first.data.x, idx.reshape(-1))  # [M*B, C, H, W]
            if first.augment is not None:
                x = self._augment(x, generators, b)
            x = torch.addcmul(first.shift, x.to(first.dtype), first.scale)
            x = x.reshape(len(streams), b, *x.shape[1:]).transpose(0, 1).reshape(
                b, -1, *x.shape[2:])  # network m's images in channel block m
            if copies > 1:  # one shared stream: every network the same batch
                x = torch.cat([x] * copies, 1)
            if first.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, first.data.y[idx].T.repeat(1, copies)
        for loader in self.loaders:
            loader.set_epoch(loader.epoch + 1)

    def _augment(self, x: torch.Tensor, generators: list[torch.Generator], b: int
                 ) -> torch.Tensor:
        """Each network's parameters from its own generator (as its loader draws them), applied
        to all M*B images at once."""
        augment = self.first.augment
        parts = [augment.draw(x[m * b:(m + 1) * b], g) for m, g in enumerate(generators)]
        return augment.apply(x, tuple(torch.cat(p) for p in zip(*parts, strict=True)))


class ZippedLoader:
    """Any M loaders (e.g. streamed from disk) side by side, stacked in the pack's layout."""

    def __init__(self, loaders: Sequence[Any]) -> None:
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.loaders, strict=True):
            yield (torch.cat([b[0] for b in batches], 1),
                   torch.stack([b[1] for b in batches], 1))


def pack_stream(loaders: Sequence[Any]) -> PackLoader | ZippedLoader:
    """The pack's training batches from its networks' loaders."""
    return PackLoader(loaders) if can_gather(loaders) else ZippedLoader(loaders)
