"""The built-in data sets, one module each: every module of this package that defines
``DATASET`` (a :class:`~ntksap.data.spec.BuiltinDataset`) is one. Adding a data set is adding
its module; :data:`BUILTINS` lists them in :data:`ORDER`, then the others by name."""

from __future__ import annotations

import importlib
import pkgutil

from ..spec import BuiltinDataset

# the order in which the built-in data sets are listed (help texts, error messages)
ORDER = ("cifar10", "cifar100", "tinyimagenet", "imagenet", "mnist", "folder", "synthetic")


def _discover() -> dict[str, BuiltinDataset]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        dataset = getattr(module, "DATASET", None)
        if isinstance(dataset, BuiltinDataset):
            found[dataset.name] = dataset
    first = [n for n in ORDER if n in found]
    return {n: found[n] for n in first + sorted(set(found) - set(first))}


BUILTINS: dict[str, BuiltinDataset] = _discover()

__all__ = ["BUILTINS", "ORDER"]
