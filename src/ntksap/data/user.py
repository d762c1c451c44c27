"""A user's own data set: a factory returning ``(train, test)`` torch ``Dataset``s whose items
are ``(image_tensor, label)`` pairs, named by ``MODULE:FACTORY``, ``path/to/file.py:FACTORY``,
a name given to :func:`register_dataset`, or a name that an installed package declares in the
``ntksap.datasets`` entry-point group::

    [project.entry-points."ntksap.datasets"]
    mydata = "my_package.data:make_splits"

What the harness reads from the data (:func:`load_user_splits`), on one pass over the training
set: the number of classes (labels are 0..K-1; names from the set's ``classes`` when it has
them), the shape of one item (every item must have it), and the per-channel mean and standard
deviation that normalize every item (per channel for items of 3 or more dimensions, one value
otherwise), recorded in the run's ``config.json``. ntksap adds no augmentation: a training set
that augments in ``__getitem__`` also augments the pruning batches, which are drawn from it.
Items are read in this process (no DataLoader workers: a file-imported factory's data set need
not pickle).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, UnknownNameError
from ..registry import PluginRegistry
from ..userref import Factory, is_reference, load_factory
from .sets import BUILTINS

ENTRY_POINT_GROUP = "ntksap.datasets"
# the data sets ntksap reads itself (ntksap.data.sets)
BUILTIN_NAMES = tuple(BUILTINS)


@dataclass(frozen=True)
class DatasetSpec:
    """How to make a data set: ``factory()`` returns ``(train, test)``; ``digest`` is the
    sha256 of the user's source file ("" for a registered function's, whose code is the
    caller's)."""

    factory: Callable[[], tuple[Dataset, Dataset]]
    description: str = ""
    digest: str = ""
    origin: Any = field(default=None, compare=False, repr=False)


def register_dataset(name: str, factory: Callable[[], tuple[Dataset, Dataset]], *,
                     description: str = "") -> DatasetSpec:
    """Make ``factory`` (no arguments, returning ``(train, test)`` Datasets of
    ``(tensor, int)`` items) usable as ``--dataset NAME`` and ``dataset: NAME`` in sweeps.
    Registering the same factory twice is harmless; another under a taken name is an
    error (so are the built-in names)."""
    if not isinstance(name, str) or not name or ":" in name or name in BUILTIN_NAMES:
        raise ConfigError(f"register_dataset: the name must be a non-empty string without ':' "
                          f"and not a built-in data set ({', '.join(BUILTIN_NAMES)}); got "
                          f"{name!r}")
    if not callable(factory):
        raise ConfigError(f"register_dataset({name!r}): the factory must be callable")
    spec = DatasetSpec(factory, description or name, origin=factory)
    DATASETS.put_own(name, spec, "register_dataset")  # type: ignore[attr-defined]
    return spec


DATASETS: dict[str, DatasetSpec] = PluginRegistry(
    ENTRY_POINT_GROUP, "data set", lambda name, factory: register_dataset(name, factory))


def is_user_dataset(name: str) -> bool:
    """Whether ``name`` names a user's data set (a reference or a registered name)."""
    return name not in BUILTIN_NAMES and (is_reference(name) or name in DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered name or a ``MODULE:FACTORY`` / ``FILE.py:FACTORY``
    reference."""
    if is_reference(name):
        factory: Factory = load_factory(name, "data set factory")
        return DatasetSpec(factory.function, name, factory.digest, origin=factory.function)
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, [*BUILTIN_NAMES, *DATASETS, "MODULE:FACTORY",
                                                 "path/to/file.py:FACTORY"])
    return DATASETS[name]


@dataclass(frozen=True)
class UserSplits:
    """A user's data set, read once: normalized training and test sets and what was read."""

    train: Dataset
    test: Dataset
    classes: list[str]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_user_splits(name: str, limit_per_class: int | None = None) -> UserSplits:
    """Call the factory of ``name``, check its items and read classes, shape and the
    normalization from the training set (see the module's docstring)."""
    spec = dataset_spec(name)
    return _read(name, spec.digest or str(id(spec.origin)), spec.factory, limit_per_class)


@functools.lru_cache(maxsize=4)
def _read(name: str, _key: str, factory: Callable[[], Any],
          limit_per_class: int | None) -> UserSplits:
    """One pass over the data, cached per process by the factory's code and the limit."""
    splits = factory()
    if not (isinstance(splits, tuple | list) and len(splits) == 2):
        raise ConfigError(f"data set {name!r}: its factory returned {type(splits).__name__}, "
                          "not a pair (train, test) of torch Datasets; return both splits")
    train, test = splits
    labels, shape, mean, std = _scan(name, "training", train)
    num_classes = max(labels) + 1
    _check_item(name, "test", test, shape, num_classes)
    indices = _first_per_class(labels, limit_per_class)
    classes = getattr(train, "classes", None)
    if not (isinstance(classes, Sequence) and len(classes) == num_classes):
        classes = [str(c) for c in range(num_classes)]
    test_labels = None
    if limit_per_class is not None:
        test_labels = [_label(name, "test", test, i, _item(name, "test", test, i)[1])
                       for i in range(len(test))]
    test_indices = (list(range(len(test))) if test_labels is None
                    else _first_per_class(test_labels, limit_per_class))
    return UserSplits(Normalized(train, indices, [labels[i] for i in indices], mean, std),
                      Normalized(test, test_indices, None if test_labels is None else
                                 [test_labels[i] for i in test_indices], mean, std),
                      [str(c) for c in classes], shape, mean, std)


def _item(name: str, split: str, data: Dataset, index: int) -> tuple[torch.Tensor, Any]:
    item = data[index]
    if not (isinstance(item, tuple | list) and len(item) == 2
            and isinstance(item[0], torch.Tensor)):
        raise ConfigError(f"data set {name!r}: item {index} of the {split} set is "
                          f"{_describe(item)}, not (tensor, int); make __getitem__ return an "
                          "image tensor and its class index")
    return item[0], item[1]


def _label(name: str, split: str, data: Dataset, index: int, label: Any) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        label = int(label.item())
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise ConfigError(f"data set {name!r}: item {index} of the {split} set has the label "
                          f"{label!r}, not a class index (an int >= 0)")
    return label


def _scan(name: str, split: str, data: Dataset) -> tuple[list[int], tuple[int, ...],
                                                        tuple[float, ...], tuple[float, ...]]:
    """(labels, item shape, per-channel mean, per-channel std) of every item."""
    try:
        count = len(data)  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"data set {name!r}: the {split} set has no len(); return map-style "
                          "torch Datasets") from err
    if count == 0:
        raise ConfigError(f"data set {name!r}: the {split} set is empty")
    labels: list[int] = []
    shape: tuple[int, ...] = ()
    total = squares = None
    per_channel = 0
    for index in range(count):
        x, y = _item(name, split, data, index)
        if index == 0:
            shape = tuple(x.shape)
            per_channel = shape[0] if len(shape) >= 3 else 1
        elif tuple(x.shape) != shape:
            raise ConfigError(f"data set {name!r}: item {index} of the {split} set has shape "
                              f"{tuple(x.shape)}, item 0 {shape}; give every item one shape")
        labels.append(_label(name, split, data, index, y))
        values = x.detach().double().reshape(per_channel, -1)
        total = values.sum(1) if total is None else total + values.sum(1)
        squares = (values ** 2).sum(1) if squares is None else squares + (values ** 2).sum(1)
    n = count * (values.shape[1])
    mean = total / n
    std = (squares / n - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-8)
    return labels, shape, tuple(mean.tolist()), tuple(std.tolist())


def _check_item(name: str, split: str, data: Dataset, shape: tuple[int, ...],
                num_classes: int) -> None:
    x, y = _item(name, split, data, 0)
    if tuple(x.shape) != shape:
        raise ConfigError(f"data set {name!r}: the {split} set's items have shape "
                          f"{tuple(x.shape)}, the training set's {shape}; give both one shape")
    if _label(name, split, data, 0, y) >= num_classes:
        raise ConfigError(f"data set {name!r}: the {split} set has label {y}, but the training "
                          f"set's labels are 0..{num_classes - 1}")


def _first_per_class(labels: list[int], limit: int | None) -> list[int]:
    if limit is None:
        return list(range(len(labels)))
    seen: dict[int, int] = {}
    keep = []
    for index, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= limit:
            keep.append(index)
    return keep


def _describe(item: Any) -> str:
    if isinstance(item, tuple | list):
        kinds = ", ".join(type(v).__name__ for v in item)
        return f"{_article(type(item).__name__)} of {len(item)} ({kinds})"
    return _article(type(item).__name__)


def _article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class Normalized(Dataset):
    """Items ``indices`` of ``data``, each image normalized by ``mean``/``std`` (per channel)
    as float32; ``targets`` (the labels, when read) serve the pruning set and class-balanced
    subsets."""

    def __init__(self, data: Dataset, indices: list[int], targets: list[int] | None,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.data, self.indices = data, indices
        if targets is not None:
            self.targets = targets
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.data[self.indices[index]]
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.dim() >= 3:  # per channel
            view = (-1, *([1] * (x.dim() - 1)))
            return (x - self.mean.view(view)) / self.std.view(view), int(y)
        return (x - self.mean) / self.std, int(y)


class TargetSubset(Dataset):
    """Items ``indices`` of ``data`` (a map-style set with ``targets``), keeping ``targets``:
    a validation hold-out of a streamed set, and the rest."""

    def __init__(self, data: Dataset, indices: list[int]) -> None:
        self.data, self.indices = data, indices
        targets = getattr(data, "targets", None)
        if targets is not None:
            self.targets = [int(targets[i]) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.data[self.indices[index]]
