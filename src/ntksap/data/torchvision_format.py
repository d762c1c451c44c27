"""CIFAR-10/100 and MNIST in torchvision's on-disk format; downloads through torchvision."""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets

from .errors import CorruptDataError, DatasetDownloadError
from .sets import BUILTINS
from .spec import BuiltinDataset, TorchvisionFormat
from .tensors import ImageTensors


def has_torchvision_files(name: str, root: Path) -> bool:
    spec = BUILTINS.get(name)
    return bool(spec and spec.torchvision and (root / spec.torchvision.folder).is_dir())


def read(spec: BuiltinDataset, root: Path) -> tuple[ImageTensors, ImageTensors]:
    """The splits of ``spec``'s torchvision copy in ``root``."""
    if spec.torchvision is None:
        raise CorruptDataError(f"{spec.name} has no torchvision format")
    return (read_mnist(root) if spec.torchvision.reader == "mnist"
            else read_cifar(spec.name, root))


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR's files hold: dicts, lists, strings, numbers and NumPy arrays
    and scalars. Any other global (``os.system``, ``builtins.eval``...) is refused before it is
    looked up, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a CIFAR file never holds (only NumPy "
                "arrays, lists, strings and numbers); refused without loading it")
        return found


def _numpy_core() -> Any:
    try:
        from numpy import _core  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy import core as _core
    return _core


_ALLOWED: dict[tuple[str, str], Any] = {
    **{(f"{package}.{module}", name): getattr(getattr(_numpy_core(), module), name)
       for package in ("numpy.core", "numpy._core")
       for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                            ("numeric", "_frombuffer"))},  # _frombuffer: protocol 5
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 with protocol 2
}


def _unpickle(path: Path) -> dict:
    fix = f"delete {path.parent} and download again (--download)"
    try:
        with open(path, "rb") as handle:
            content = _CifarUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError as err:
        raise CorruptDataError(f"{path} is missing from the {path.parent} dataset folder; "
                               f"{fix}") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as err:
        raise CorruptDataError(f"cannot read {path}: {err}; {fix}") from err
    if not isinstance(content, dict):
        raise CorruptDataError(f"{path} holds a {type(content).__name__}, not the dict of a "
                               f"CIFAR file; {fix}")
    return content


def _class_names(path: Path, key: str) -> list[str]:
    names = _unpickle(path).get(key)
    if not isinstance(names, list | tuple) or not all(
            isinstance(n, str | bytes) for n in names):
        raise CorruptDataError(f"{path} has no list of class names under {key!r}; delete "
                               f"{path.parent} and download again (--download)")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 3, 32, 32) uint8, labels (n,) int64)`` of one CIFAR batch file."""
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    problem = _batch_problem(data, labels, label_key, num_classes)
    if problem:
        raise CorruptDataError(f"{path} is not a CIFAR batch: {problem}; delete {path.parent} "
                               "and download again (--download)")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _batch_problem(data: Any, labels: Any, label_key: str, num_classes: int) -> str | None:
    """What is wrong with a batch's ``data`` (uint8, (n, 3072)) and labels (n integers in
    [0, num_classes)), or None."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
        found = (f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else f"a {type(data).__name__}")
        return f"'data' must be a uint8 array of shape (n, 3072); it is {found}"
    try:
        values = np.asarray(labels)
    except (ValueError, TypeError):
        values = np.asarray(None)
    if (values.dtype.kind not in "iu" or values.shape != (len(data),)
            or (values.size and not 0 <= values.min() <= values.max() < num_classes)):
        return (f"{label_key!r} must be {len(data)} integers in [0, {num_classes}); it is a "
                f"{type(labels).__name__} of {values.size} {values.dtype} values")
    return None


def read_cifar(name: str, root: Path) -> tuple[ImageTensors, ImageTensors]:
    """CIFAR splits from ``root/cifar-10-batches-py`` (or ``cifar-100-python``) pickles, read
    with an unpickler that admits only arrays, lists, strings and numbers."""
    form = BUILTINS[name].torchvision
    base = root / form.folder
    classes = _class_names(base / form.meta_file, form.names_key)

    def split(files: tuple[str, ...]) -> ImageTensors:
        xs, ys = zip(*(_cifar_batch(base / file, form.label_key, len(classes))
                       for file in files), strict=True)
        return ImageTensors(torch.from_numpy(np.concatenate(xs)),
                            torch.from_numpy(np.concatenate(ys)), classes)

    return split(form.train_files), split(form.test_files)


def read_mnist(root: Path) -> tuple[ImageTensors, ImageTensors]:
    """MNIST from torchvision's ``root/MNIST/raw`` files."""
    splits = []
    for train in (True, False):
        try:
            ds = datasets.MNIST(str(root), train=train, download=False)
        except (RuntimeError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as err:
            # torn raw files, or legacy processed/*.pt files that hold something else
            raise CorruptDataError(f"cannot read MNIST in {root / 'MNIST'}: {err}; delete it "
                                   "and download again (--download)") from err
        splits.append(ImageTensors(ds.data[:, None].contiguous(), ds.targets.long(),
                                   [str(i) for i in range(10)]))
    return splits[0], splits[1]


def _downloader(form: TorchvisionFormat) -> Any:
    """torchvision's data set class of ``form`` (its constructor downloads)."""
    return getattr(datasets, form.torchvision_class)


def download(name: str, root: Path) -> None:
    """Fetch ``name`` into ``root`` with torchvision; a clear error when that fails."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        form = BUILTINS[name].torchvision
        for train in (True, False):
            _downloader(form)(str(root), train=train, download=True)
    except Exception as err:  # urllib, HTTP, checksum and file errors alike
        raise DatasetDownloadError(
            f"downloading {name} into {root} failed: {err}; check the internet connection, or "
            f"put torchvision's {form.folder} folder (or an image folder) in {root} "
            "and run again without --download") from err
