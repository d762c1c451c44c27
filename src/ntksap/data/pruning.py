"""The pruning set: a seeded, class-balanced sample of the training data, without augmentation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .decode import default_workers
from .sampling import balanced_indices
from .stats import normalizer
from .tensors import ImageTensors


def pruning_set(dataset: ImageTensors | Dataset, per_class: int = 10, seed: int = 0, *,
                num_classes: int | None = None, device: torch.device | str = "cpu",
                workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` examples of every class (``10 x classes`` by default) as normalized
    ``(x, y)`` tensors in a seeded shuffled order. :func:`ntksap.prune` cuts them into batches
    of its ``batch_size`` (256, the reference's pruning batch size; CIFAR-10's 100 images are
    one batch, CIFAR-100's 1,000 four), and the methods accumulate their scores over them.

    ``dataset`` is an :class:`ImageTensors` (normalized with its mean/std) or a map-style
    dataset with ``targets`` whose items are already normalized ``(tensor, label)`` pairs
    (read by a DataLoader with ``workers`` processes).
    """
    if isinstance(dataset, ImageTensors):
        idx = balanced_indices(dataset.y, per_class, seed, dataset.num_classes, "pruning set")
        scale, shift = normalizer(dataset.mean, dataset.std, device, ndim=dataset.x.dim())
        x = torch.addcmul(shift, dataset.x[idx].to(device).float(), scale)
        return x, dataset.y[idx].to(device)
    targets = torch.as_tensor(dataset.targets)  # type: ignore[attr-defined]
    classes = num_classes if num_classes is not None else int(targets.max()) + 1
    idx = balanced_indices(targets, per_class, seed, classes, "pruning set")
    loader = DataLoader(Subset(dataset, idx.tolist()), batch_size=256,
                        num_workers=default_workers() if workers is None else workers)
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs).to(device), torch.cat(ys).long().to(device)
