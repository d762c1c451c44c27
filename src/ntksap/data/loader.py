"""``TensorLoader``: shuffled, augmented, normalized batches from uint8 tensors on a device."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .sampling import AUGMENT, seeded_generator, shard_indices, subset_indices
from .stats import normalizer
from .tensors import ImageTensors

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def take_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for a uint8 tensor, copying rows as wide words (much faster on CPU)."""
    row = x[0].numel() if len(x) else 0
    for dtype, width in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2)):
        if row % width == 0 and x.is_contiguous() and x.dtype == torch.uint8 and row:
            wide = x.view(len(x), row).view(dtype).index_select(0, idx)
            return wide.view(torch.uint8).view(len(idx), *x.shape[1:])
    return x[idx]


class TensorLoader:
    """Iterate ``(x, y)`` batches: ``x`` normalized ``(B, C, H, W)`` in the default dtype at
    construction (float32 unless set otherwise, e.g. float64 in exactness tests), ``y`` int64.

    The uint8 images move to ``device`` once; indexing, ``augment`` and normalization run
    there on whole batches. Batches depend only on ``(seed, epoch, rank)``: the shuffle is a
    permutation seeded by ``(seed, epoch)`` and sharded ``perm[rank::world_size]``, and
    augmentation draws from a generator seeded by ``(seed, epoch, rank)``. The epoch advances
    by one after each complete pass; ``set_epoch`` sets it (e.g. when resuming).
    ``subset`` keeps ``n`` examples, chosen once from ``seed`` (``balanced_subset``: the
    same number per class).
    """

    def __init__(self, data: ImageTensors, batch_size: int, *, device: torch.device | str = "cpu",
                 augment: Augment | None = None, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1, subset: int | None = None,
                 balanced_subset: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not data.mean:
            raise ValueError("TensorLoader needs data with normalization mean/std")
        if subset is not None:
            data = data.select(subset_indices(data.y, subset, seed, data.num_classes,
                                              balanced_subset))
        self.device = torch.device(device)
        self.data = data.to(self.device)
        self.batch_size, self.augment, self.shuffle = batch_size, augment, shuffle
        self.seed, self.drop_last, self.channels_last = seed, drop_last, channels_last
        self.rank, self.world_size = rank, world_size
        self.dtype = torch.get_default_dtype()
        self.scale, self.shift = normalizer(data.mean, data.std, self.device, self.dtype,
                                             data.x.dim())
        self.epoch = 0
        shard_indices(1, shuffle=False, rank=rank, world_size=world_size)  # validate rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's example indices for the current epoch, in batch order."""
        return shard_indices(len(self.data), shuffle=self.shuffle, seed=self.seed,
                             epoch=self.epoch, rank=self.rank, world_size=self.world_size,
                             drop_last=self.drop_last)

    def __len__(self) -> int:
        total, w = len(self.data), self.world_size
        n = total // w if self.drop_last else len(range(self.rank, total, w))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices().to(self.device)
        g = seeded_generator(self.seed, AUGMENT, self.epoch, self.rank)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = take_rows(self.data.x, idx)
            if self.augment is not None:
                x = self.augment(x, g)
            x = torch.addcmul(self.shift, x.to(self.dtype), self.scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.data.y[idx]
        self.epoch += 1
