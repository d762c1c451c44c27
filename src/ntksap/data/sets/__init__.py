"""The built-in data sets, one module each (adding one: a module with its
:class:`~ntksap.data.spec.BuiltinDataset` and one line here)."""

from ..spec import BuiltinDataset
from . import cifar10, cifar100, folder, imagenet, mnist, synthetic, tinyimagenet

BUILTINS: dict[str, BuiltinDataset] = {m.DATASET.name: m.DATASET for m in (
    cifar10, cifar100, tinyimagenet, imagenet, mnist, folder, synthetic)}

__all__ = ["BUILTINS"]
