"""CIFAR-10/100 and MNIST in torchvision's on-disk format; downloads through torchvision."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from .errors import CorruptDataError, DatasetDownloadError
from .tensors import ImageTensors

# name -> (folder under root, train files, test files, meta file, label key, names key)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels",
                 "fine_label_names"),
}
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "mnist": "MNIST"}
_CLASSES = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "mnist": datasets.MNIST}


def has_torchvision_files(name: str, root: Path) -> bool:
    return name in FOLDERS and (root / FOLDERS[name]).is_dir()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except FileNotFoundError as err:
        raise CorruptDataError(f"{path} is missing from the {path.parent} dataset folder; "
                               "delete that folder and download again (--download)") from err
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise CorruptDataError(f"cannot read {path}: {err}; delete {path.parent} and "
                               "download again (--download)") from err


def read_cifar(name: str, root: Path) -> tuple[ImageTensors, ImageTensors]:
    """CIFAR splits from ``root/cifar-10-batches-py`` (or ``cifar-100-python``) pickles."""
    folder, train_files, test_files, meta, label_key, names_key = CIFAR[name]
    base = root / folder
    classes = list(_unpickle(base / meta)[names_key])

    def split(files: list[str]) -> ImageTensors:
        xs, ys = [], []
        for file in files:
            batch = _unpickle(base / file)
            try:
                xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[label_key], dtype=np.int64))
            except (KeyError, ValueError) as err:
                raise CorruptDataError(f"{base / file} is not a CIFAR batch ({err}); delete "
                                       f"{base} and download again (--download)") from err
        return ImageTensors(torch.from_numpy(np.concatenate(xs)),
                            torch.from_numpy(np.concatenate(ys)), classes)

    return split(train_files), split(test_files)


def read_mnist(root: Path) -> tuple[ImageTensors, ImageTensors]:
    """MNIST from torchvision's ``root/MNIST/raw`` files."""
    splits = []
    for train in (True, False):
        try:
            ds = datasets.MNIST(str(root), train=train, download=False)
        except RuntimeError as err:
            raise CorruptDataError(f"cannot read MNIST in {root / 'MNIST'}: {err}; delete it "
                                   "and download again (--download)") from err
        splits.append(ImageTensors(ds.data[:, None].contiguous(), ds.targets.long(),
                                   [str(i) for i in range(10)]))
    return splits[0], splits[1]


def download(name: str, root: Path) -> None:
    """Fetch ``name`` into ``root`` with torchvision; a clear error when that fails."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            _CLASSES[name](str(root), train=train, download=True)
    except Exception as err:  # urllib, HTTP, checksum and file errors alike
        raise DatasetDownloadError(
            f"downloading {name} into {root} failed: {err}; check the internet connection, or "
            f"put torchvision's {FOLDERS[name]} folder (or an image folder) in {root} "
            "and run again without --download") from err
