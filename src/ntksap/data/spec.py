"""What a built-in data set is: one :class:`BuiltinDataset` object per data set, in its own
module of :mod:`ntksap.data.sets` (name, classes, image shape, normalization, augmentation,
where its files are found and how torchvision's copy of it is read and downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class TorchvisionFormat:
    """A data set that torchvision downloads: its folder under the data directory, how its
    files are read (``reader``: "cifar" pickles or "mnist" raw files), torchvision's class
    (the name in ``torchvision.datasets``), and for CIFAR the files and keys of its pickles."""

    folder: str
    reader: Literal["cifar", "mnist"]
    torchvision_class: str
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    meta_file: str = ""
    label_key: str = ""
    names_key: str = ""


@dataclass(frozen=True)
class BuiltinDataset:
    """A data set ntksap reads itself.

    ``num_classes`` and ``image_shape`` (channels, height, width) are checked against the
    files (None: any, e.g. ``folder``); ``normalization`` is the per-channel mean and std in
    [0, 1] units (None: computed from the training images); ``augmentation`` of training
    batches: "crop" (pad 4 + random crop + flip), "resized_crop", "none", or "auto" (crop for
    images up to 32 px or non-square, else resized_crop); ``channels`` decoded from image
    files (1: greyscale; None: as the files are); ``streamed``: large images read from disk
    through a DataLoader (ImageNet), not held in memory; ``candidates``: file and folder names
    looked for inside the data directory, in order; ``manual``: how to get it where
    torchvision cannot download it."""

    name: str
    num_classes: int | None = None
    image_shape: tuple[int, int, int] | None = None
    normalization: Stats | None = None
    augmentation: Literal["crop", "resized_crop", "none", "auto"] = "auto"
    channels: int | None = 3
    streamed: bool = False
    candidates: tuple[str, ...] = ()
    torchvision: TorchvisionFormat | None = None
    manual: str = ""
