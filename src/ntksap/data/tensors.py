"""Small-image datasets held as one uint8 tensor, decoded once and cached."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..atomic import atomic_torch_save
from ..errors import DiskFullError
from .cache import cache_path, cache_root, file_lock, load_cached
from .decode import decode_images
from .layout import scan_layout
from .stats import channel_stats
from .tree import FileTree

FORMAT = "ntksap-images/1"


@dataclass
class ImageTensors:
    """One split: ``x`` uint8 ``(N, C, H, W)``, ``y`` int64 ``(N,)`` labels, and the
    per-channel ``mean``/``std`` (in [0, 1] units) that normalize it."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def select(self, indices: torch.Tensor) -> ImageTensors:
        return replace(self, x=self.x[indices], y=self.y[indices])

    def to(self, device: torch.device | str) -> ImageTensors:
        return replace(self, x=self.x.to(device), y=self.y.to(device))


def images_from_tree(tree: FileTree, *, limit_per_class: int | None = None,
                     channels: int | None = None, cache_dir: str | Path | None = None,
                     workers: int | None = None, progress: bool = True,
                     ) -> tuple[ImageTensors, ImageTensors, str]:
    """``(train, test, layout kind)`` of an image folder / Tiny-ImageNet tree, via the cache.

    The cache file's key is the tree's fingerprint (path, size, mtime) plus the options; it is
    written atomically, under a lock, and never inside the source.
    """
    root = cache_root(cache_dir)
    path = cache_path(root, tree.path.name, FORMAT, tree.fingerprint(), limit_per_class, channels)
    cached = load_cached(path)
    if cached is None:
        with file_lock(path.with_suffix(".lock")):
            cached = load_cached(path)  # another process may have built it meanwhile
            if cached is None:
                cached = _decode(tree, limit_per_class, channels, workers, progress)
                _store(cached, path, progress)
    classes, stats = list(cached["classes"]), (tuple(cached["mean"]), tuple(cached["std"]))
    return (ImageTensors(cached["train_x"], cached["train_y"], classes, *stats),
            ImageTensors(cached["test_x"], cached["test_y"], classes, *stats), cached["kind"])


def _decode(tree: FileTree, limit: int | None, channels: int | None, workers: int | None,
            progress: bool) -> dict[str, object]:
    layout = scan_layout(tree, limit)
    names = [name for name, _ in layout.train + layout.test]
    x = decode_images(tree, names, channels=channels, workers=workers, progress=progress,
                      desc=f"decoding {tree.path.name}")
    y = torch.tensor([label for _, label in layout.train + layout.test], dtype=torch.int64)
    n = len(layout.train)
    mean, std = channel_stats(x[:n])
    return {"format": FORMAT, "source": str(tree.path), "kind": layout.kind,
            "classes": layout.classes, "mean": list(mean), "std": list(std),
            "train_x": x[:n], "train_y": y[:n], "test_x": x[n:], "test_y": y[n:]}


def _store(obj: dict[str, object], path: Path, progress: bool) -> None:
    try:
        atomic_torch_save(obj, path)
    except (OSError, DiskFullError) as err:
        warnings.warn(f"could not write the dataset cache {path}: {err}; the images will be "
                      "decoded again next run (set NTKSAP_CACHE to a writable directory)",
                      stacklevel=3)
        return
    if progress:
        print(f"ntksap: cached decoded images in {path}", file=sys.stderr)
