"""Large images (ImageNet): a torch ``DataLoader`` with workers and torchvision transforms."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import datasets, transforms

from .cache import cache_path, cache_root
from .decode import default_workers
from .errors import CorruptDataError, DatasetNotFoundError
from .layout import scan_layout
from .sampling import WORKERS, seeded_generator, subset_indices
from .tree import ArchiveTree, DirTree, FileTree


def load_rgb(path: str) -> Image.Image:
    """PIL loader for ImageFolder whose errors name the file."""
    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise CorruptDataError(f"cannot decode image {path}: {err}; replace or delete it") from err


def imagenet_transforms(mean: Sequence[float], std: Sequence[float], size: int = 224,
                        resize: int = 256) -> tuple[transforms.Compose, transforms.Compose]:
    """Train: RandomResizedCrop(size) + flip; test: Resize(resize) + CenterCrop(size)."""
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train = transforms.Compose(
        [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), *tail])
    test = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), *tail])
    return train, test


def image_folder(root: Path, transform: transforms.Compose) -> datasets.ImageFolder:
    return datasets.ImageFolder(str(root), transform=transform, loader=load_rgb)


class StreamLoader:
    """Batches ``(x, y)`` on ``device`` from a map-style dataset of normalized tensors.

    A ``DistributedSampler`` (also for one process) shuffles by ``(seed, epoch)`` and gives
    each rank a disjoint shard (with ``drop_last``; otherwise the last batch is padded with
    repeats, as torch does). With ``workers > 0`` the workers' augmentation is seeded from
    ``(seed, epoch, rank)`` too; ``workers=0`` augments with the global RNG.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, device: torch.device | str = "cpu",
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 workers: int | None = None, subset: int | None = None,
                 balanced_subset: bool = False, num_classes: int = 0) -> None:
        if subset is not None:
            targets = torch.as_tensor(dataset.targets)  # type: ignore[attr-defined]
            dataset = Subset(dataset, subset_indices(targets, subset, seed, num_classes,
                                                     balanced_subset).tolist())
        self.dataset, self.batch_size, self.seed, self.rank = dataset, batch_size, seed, rank
        self.device = torch.device(device)
        self.channels_last, self.drop_last = channels_last, drop_last
        self.workers = default_workers() if workers is None else workers
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                          shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(self.epoch)
        loader = DataLoader(self.dataset, self.batch_size, sampler=self.sampler,
                            num_workers=self.workers, drop_last=self.drop_last,
                            pin_memory=self.device.type == "cuda",
                            generator=seeded_generator(self.seed, WORKERS, self.epoch, self.rank))
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)
        self.epoch += 1


def extracted(tree: ArchiveTree, cache_dir: str | Path | None) -> Path:
    """The archive unpacked once under the cache root (atomically), reused afterwards."""
    dest = cache_path(cache_root(cache_dir), tree.path.name, "extract", tree.fingerprint(),
                      suffix="")
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".tmp"))
        try:
            tree.extract(tmp)
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not a lost race with another process
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _first_per_class(ds: datasets.ImageFolder, limit: int | None) -> datasets.ImageFolder:
    if limit is not None:
        seen: dict[int, int] = {}
        keep = []
        for sample in ds.samples:
            seen[sample[1]] = seen.get(sample[1], 0) + 1
            if seen[sample[1]] <= limit:
                keep.append(sample)
        ds.samples = ds.imgs = keep
        ds.targets = [label for _, label in keep]
    return ds


def folder_datasets(tree: FileTree, mean: Sequence[float], std: Sequence[float], *,
                    cache_dir: str | Path | None = None, limit_per_class: int | None = None
                    ) -> tuple[datasets.ImageFolder, ...]:
    """``(train, test, train without augmentation)`` ImageFolders of a large-image tree."""
    base = extracted(tree, cache_dir) if isinstance(tree, ArchiveTree) else tree.path
    layout = scan_layout(DirTree(base))
    if layout.kind != "folder":
        raise DatasetNotFoundError(f"{tree.path} is in {layout.kind}'s layout, whose small "
                                   "images load in memory; do not force in_memory=False")
    train_tf, test_tf = imagenet_transforms(mean, std)
    root = base / layout.root
    out = [image_folder(root / split, tf) for split, tf in
           (("train", train_tf), (layout.test_dir, test_tf), ("train", test_tf))]
    if out[1].classes != out[0].classes:
        raise DatasetNotFoundError(
            f"{root / layout.test_dir} and {root / 'train'} have different class folders; "
            "give both splits the same classes")
    return tuple(_first_per_class(ds, limit_per_class) for ds in out)
