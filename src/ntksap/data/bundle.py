"""``load_dataset``: one entry point returning a :class:`DatasetBundle`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import NtksapError, UnknownNameError
from . import torchvision_format as tvf
from .augment import RandomCropFlip, RandomResizedCropFlip
from .decode import decode_one
from .errors import DatasetNotFoundError, DatasetShapeError
from .loader import Augment, TensorLoader
from .pruning import pruning_set
from .resolve import Source, locate
from .sampling import balanced_indices, holdout_indices
from .sets import BUILTINS
from .stats import NORMALIZATION
from .streaming import StreamLoader, folder_datasets
from .synthetic import synthetic_splits
from .tensors import ImageTensors, images_from_tree
from .tree import FileTree, open_tree
from .user import BUILTIN_NAMES, TargetSubset, is_user_dataset, load_user_splits

DATASETS = BUILTIN_NAMES
# each built-in data set's classes and image shape (channels, height, width), where fixed
NUM_CLASSES = {n: d.num_classes for n, d in BUILTINS.items() if d.num_classes}
IMAGE_SHAPES = {n: d.image_shape for n, d in BUILTINS.items() if d.image_shape}
SMALL_MAX = 64  # images up to this size are held in memory as one tensor
Loader = TensorLoader | StreamLoader


@dataclass
class DatasetBundle:
    """A dataset's metadata, its splits, and factories for its loaders and pruning set.

    Small images: ``train``/``test`` are :class:`ImageTensors` served by :class:`TensorLoader`
    (batched augmentation on the device). Large images: ImageFolders served by a DataLoader.
    """

    name: str
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: ImageTensors | Dataset
    test: ImageTensors | Dataset
    source: Path
    augment: Augment | None = None
    prune_data: ImageTensors | Dataset | None = None
    val: ImageTensors | Dataset | None = None  # held out of the training set (``hold_out``)
    workers: int | None = None  # DataLoader workers of streamed splits (None: as many as fit)
    _moved: dict[tuple[str, str], ImageTensors] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, ImageTensors)

    def _on(self, split: str, device: torch.device | str) -> ImageTensors:
        key = (split, str(torch.device(device)))
        if key not in self._moved:  # one copy per device, shared by all loaders
            self._moved[key] = getattr(self, split).to(device)
        return self._moved[key]

    def train_loader(self, batch_size: int, device: torch.device | str = "cpu", seed: int = 0,
                     *, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                     augment: bool = True, channels_last: bool = False,
                     subset: int | None = None, balanced_subset: bool = False,
                     workers: int | None = None) -> Loader:
        """Shuffled, augmented training batches; call ``set_epoch(epoch)`` when resuming."""
        common = dict(device=device, shuffle=True, seed=seed, drop_last=drop_last,
                      channels_last=channels_last, rank=rank, world_size=world_size,
                      subset=subset, balanced_subset=balanced_subset)
        if self.in_memory:
            return TensorLoader(self._on("train", device), batch_size,
                                augment=self.augment if augment else None, **common)
        data = self.train if augment or self.prune_data is None else self.prune_data
        return StreamLoader(data, batch_size, workers=self._workers(workers),
                            num_classes=self.num_classes, **common)

    def _workers(self, workers: int | None) -> int | None:
        return self.workers if workers is None else workers

    def test_loader(self, batch_size: int, device: torch.device | str = "cpu", *,
                    rank: int = 0, world_size: int = 1, channels_last: bool = False,
                    workers: int | None = None) -> Loader:
        """Test batches in order, no augmentation; ranks get disjoint interleaved shards."""
        common = dict(device=device, channels_last=channels_last, rank=rank,
                      world_size=world_size)
        if self.in_memory:
            return TensorLoader(self._on("test", device), batch_size, **common)
        return StreamLoader(self.test, batch_size, workers=self._workers(workers), **common)

    def hold_out(self, fraction: float, seed: int = 0) -> DatasetBundle:
        """This bundle with ``int(fraction * len(train))`` training images, drawn uniformly by
        a permutation seeded by ``seed``, moved to ``val`` (a validation split): training, the
        pruning set and ``val_loader`` then use disjoint images; the test split is unchanged.
        A streamed split's validation images are read without augmentation (from the
        pruning-set view of the training images when the bundle has one)."""
        kept, held = holdout_indices(len(self.train), fraction, seed)
        if self.in_memory:
            return replace(self, train=self.train.select(kept), val=self.train.select(held),
                           _moved={})
        plain = self.train if self.prune_data is None else self.prune_data
        return replace(self, train=TargetSubset(self.train, kept.tolist()),
                       prune_data=TargetSubset(plain, kept.tolist()),
                       val=TargetSubset(plain, held.tolist()), _moved={})

    def unnormalized(self) -> DatasetBundle:
        """This bundle with inputs fed as pixels scaled to [0, 1] (mean 0, std 1 for every
        channel) instead of normalized by the data set's statistics; in-memory sets only."""
        if not self.in_memory:
            raise NtksapError(f"the {self.name} data stream from disk with their own "
                              "normalization; keep normalize_inputs on for them")
        zero, one = (0.0,) * self.input_shape[0], (1.0,) * self.input_shape[0]
        return replace(self, mean=zero, std=one, _moved={},
                       train=replace(self.train, mean=zero, std=one),
                       test=replace(self.test, mean=zero, std=one),
                       val=None if self.val is None else replace(self.val, mean=zero, std=one))

    def val_loader(self, batch_size: int, device: torch.device | str = "cpu") -> Loader:
        """Validation batches in order, no augmentation (needs :meth:`hold_out` first)."""
        if self.val is None:
            raise NtksapError(f"the {self.name} bundle has no validation split; call "
                              "hold_out(fraction) first")
        if isinstance(self.val, ImageTensors):
            return TensorLoader(self._on("val", device), batch_size, device=device)
        return StreamLoader(self.val, batch_size, device=device, workers=self._workers(None))

    def check_pruning_set(self, per_class: int = 10) -> None:
        """Refuse (:class:`NtksapError`) a training set with fewer than ``per_class``
        examples of some class, from the labels alone (before anything is written)."""
        data = self.train if self.prune_data is None else self.prune_data
        labels = data.y if isinstance(data, ImageTensors) else getattr(data, "targets", None)
        if labels is not None:
            balanced_indices(torch.as_tensor(labels), per_class, 0, self.num_classes,
                             "pruning set")

    def pruning_set(self, per_class: int = 10, seed: int = 0,
                    device: torch.device | str = "cpu", workers: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_class x num_classes`` training examples, class-balanced, not augmented."""
        data = self.train if self.prune_data is None else self.prune_data
        return pruning_set(data, per_class, seed, num_classes=self.num_classes, device=device,
                           workers=self._workers(workers))


def _augment(kind: str, name: str, size: tuple[int, int], padding: int) -> Augment | None:
    own = BUILTINS[name].augmentation if name in BUILTINS else "auto"
    if kind == "auto":
        kind = (own if own != "auto" else
                "crop" if max(size) <= 32 or size[0] != size[1] else "resized_crop")
    choices: dict[str, Augment | None] = {
        "none": None, "crop": RandomCropFlip(padding),
        "resized_crop": RandomResizedCropFlip(size[0]), "flip": RandomCropFlip(0)}
    if kind not in choices:
        raise UnknownNameError("augmentation", kind, [*choices, "auto"])
    return choices[kind]


def _limit(data: ImageTensors, limit: int | None) -> ImageTensors:
    if limit is None:
        return data
    keep = torch.cat([(data.y == c).nonzero().flatten()[:limit] for c in range(data.num_classes)])
    return data.select(keep.sort().values)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False, *,
                 cache_dir: str | Path | None = None, limit_per_class: int | None = None,
                 workers: int | None = None, progress: bool = True, augment: str = "auto",
                 padding: int = 4, in_memory: bool | None = None, like: str = "cifar10",
                 num_classes: int = 10, shape: tuple[int, ...] | None = None) -> DatasetBundle:
    """Load ``cifar10``, ``cifar100``, ``tinyimagenet``, ``imagenet``, ``mnist``, ``folder``
    or ``synthetic`` (10 learnable CIFAR-shaped classes made from a seed, for smoke tests).

    ``data_dir`` holds the dataset (torchvision's format, an image folder or an archive) or is
    itself the folder/archive; ``None`` means ``$NTKSAP_DATA``, else ``data/`` in the cache root.
    ``download`` lets torchvision fetch CIFAR/MNIST. Small images are decoded once into
    ``cache_dir`` (default ``$NTKSAP_CACHE`` or ``~/.cache/ntksap``). ``limit_per_class`` keeps
    the first n images of each class (quick runs, tests). ``augment``: auto, crop (pad by
    ``padding`` + flip), resized_crop (+ flip), flip, none. ``in_memory`` overrides the
    small-image (<= 64 px) test for ``folder``. ``like`` and ``num_classes`` shape the
    ``synthetic`` data: the image shape and augmentation of dataset ``like`` (cifar10,
    cifar100, tinyimagenet, mnist; 3 x 32 x 32 for any other), or ``shape`` (channels,
    height, width) when given, and that many classes; other datasets ignore them.

    ``name`` may also name a user's data set (``MODULE:FACTORY``, ``path/to/file.py:FACTORY``
    or a registered name; :mod:`ntksap.data.user`), loaded as its factory makes it
    (``limit_per_class`` applies; the data options above do not).
    """
    if is_user_dataset(name):
        return _user_bundle(name, limit_per_class)
    name = name.lower()
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, [*DATASETS, "MODULE:FACTORY",
                                                 "path/to/file.py:FACTORY"])
    if name == "synthetic":  # learnable classes shaped like dataset `like`, no files
        shape = tuple(shape) if shape else IMAGE_SHAPES.get(like, IMAGE_SHAPES["cifar10"])
        train, test = synthetic_splits(num_classes, shape,
                                       train_per_class=limit_per_class or 100,
                                       test_per_class=max(10, (limit_per_class or 100) // 5))
        image = len(shape) == 3
        return DatasetBundle(name, train.classes, tuple(train.x.shape[1:]), train.mean,
                             train.std, train, test, Path("<synthetic>"),
                             _augment(augment, like, tuple(train.x.shape[2:]), padding)
                             if image else None)
    if name == "folder" and data_dir is None:
        raise DatasetNotFoundError("the folder dataset needs a path: an image folder "
                                   "(train/<class>/*, test/<class>/*) or an archive of one")
    source = (locate(name, data_dir, download) if name != "folder"
              else Source("tree", Path(data_dir).expanduser()))  # type: ignore[arg-type]
    if source.kind == "download":
        tvf.download(name, source.path)
        source = replace(source, kind="torchvision")
    tree = open_tree(source.path) if source.kind == "tree" else None
    spec = BUILTINS[name]
    if spec.streamed or (name == "folder" and not _small(tree, in_memory)):
        return _large_bundle(name, tree, cache_dir, limit_per_class)  # type: ignore[arg-type]
    if tree is None:
        train, test = tvf.read(spec, source.path)
        train, test = _limit(train, limit_per_class), _limit(test, limit_per_class)
    else:
        channels = spec.channels
        train, test, _ = images_from_tree(tree, limit_per_class=limit_per_class,
                                          channels=channels, cache_dir=cache_dir,
                                          workers=workers, progress=progress)
    if name in NUM_CLASSES and len(train.classes) != NUM_CLASSES[name]:
        raise DatasetNotFoundError(
            f"{source.path} has {len(train.classes)} classes, {name} has {NUM_CLASSES[name]}; "
            "load other image folders with the name 'folder'")
    if name in IMAGE_SHAPES:
        check_image_shape(train, IMAGE_SHAPES[name], name, source.path)
    mean, std = NORMALIZATION.get(name, (train.mean, train.std))
    train, test = replace(train, mean=mean, std=std), replace(test, mean=mean, std=std)
    size = tuple(train.x.shape[2:])
    return DatasetBundle(name, train.classes, tuple(train.x.shape[1:]), mean, std, train, test,
                         source.path, _augment(augment, name, size, padding))


def _user_bundle(name: str, limit_per_class: int | None) -> DatasetBundle:
    """A user's data set, streamed in this process (no DataLoader workers: see
    :mod:`ntksap.data.user`), without augmentation."""
    splits = load_user_splits(name, limit_per_class)
    return DatasetBundle(name, splits.classes, splits.input_shape, splits.mean,  # type: ignore[arg-type]
                         splits.std, splits.train, splits.test, Path(name), workers=0)


def describe_images(data: ImageTensors) -> str:
    """``"3 x 32 x 32"``, or ``"greyscale 28 x 28"`` for colour images whose channels are all
    equal (greyscale files read as RGB)."""
    channels, height, width = data.x.shape[1:]
    return (f"greyscale {height} x {width}" if _greyscale(data)
            else f"{channels} x {height} x {width}")


def check_image_shape(data: ImageTensors, expected: tuple[int, ...], what: str,
                      source: Path | str) -> None:
    """Refuse images of another size, or greyscale images where ``expected`` is colour:
    :class:`DatasetShapeError` naming both shapes."""
    if tuple(data.x.shape[1:]) == tuple(expected) and not _greyscale(data):
        return
    wanted = " x ".join(map(str, expected))
    raise DatasetShapeError(
        f"the images at {source} are {describe_images(data)}, but {what} images are {wanted} "
        f"(channels x height x width); point the data directory at a copy of {what}, or "
        "choose the preset (or dataset) that matches these images")


def _greyscale(data: ImageTensors, sample: int = 1000) -> bool:
    """Colour images whose first ``sample`` images have equal channels everywhere."""
    x = data.x[:sample]
    return x.shape[1] == 3 and len(x) > 0 and bool((x[:, 0] == x[:, 1]).all()
                                                   and (x[:, 1] == x[:, 2]).all())


def _small(tree: FileTree | None, in_memory: bool | None) -> bool:
    if in_memory is not None:
        return in_memory
    if tree is None:  # torchvision's CIFAR/MNIST files
        return True
    name, data = tree.first_image()
    return max(decode_one(data, tree.describe(name)).shape[1:]) <= SMALL_MAX


def _large_bundle(name: str, tree: FileTree | None, cache_dir: str | Path | None,
                  limit: int | None) -> DatasetBundle:
    if tree is None:
        raise DatasetNotFoundError(f"{name} needs an image folder (train/ and val/)")
    mean, std = NORMALIZATION["imagenet"]
    train, test, prune = folder_datasets(tree, mean, std, cache_dir=cache_dir,
                                         limit_per_class=limit)
    return DatasetBundle(name, list(train.classes), (3, 224, 224), mean, std, train, test,
                         tree.path, prune_data=prune)
