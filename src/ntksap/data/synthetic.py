"""A small learnable synthetic image dataset, for smoke tests and benchmarks without data."""

from __future__ import annotations

import torch

from .tensors import ImageTensors


def synthetic_splits(num_classes: int = 10, shape: tuple[int, int, int] = (3, 32, 32),
                     train_per_class: int = 100, test_per_class: int = 20, seed: int = 0
                     ) -> tuple[ImageTensors, ImageTensors]:
    """uint8 images: per class a fixed random colour plus a fixed random pattern (from
    ``seed``), plus pixel noise, so even a network that pools globally learns the classes
    quickly; same arguments, same data."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand((num_classes, shape[0], *([1] * (len(shape) - 1))), generator=g)
    patterns = torch.rand((num_classes, *shape), generator=g)
    templates = 48 + 120 * colours + 40 * patterns
    classes = [f"class{c}" for c in range(num_classes)]

    def split(per_class: int) -> ImageTensors:
        y = torch.arange(num_classes).repeat_interleave(per_class)
        noise = torch.randn((len(y), *shape), generator=g) * 40
        x = (templates[y] + noise).clamp(0, 255).to(torch.uint8)
        return ImageTensors(x, y, classes, (0.5,) * shape[0], (0.25,) * shape[0])

    return split(train_per_class), split(test_per_class)
