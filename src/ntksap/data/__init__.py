"""Datasets: CIFAR-10/100, MNIST, Tiny-ImageNet, ImageNet and any image folder or archive.

``load_dataset(name, data_dir, download)`` returns a :class:`DatasetBundle` with loaders and a
pruning set. Small images (<= 64 px) are decoded once into a cached uint8 tensor and served by
:class:`TensorLoader`, which augments whole batches on the device; large images stream through
a torch DataLoader.
"""

from .augment import RandomCropFlip, RandomResizedCropFlip
from .bundle import DATASETS, DatasetBundle, load_dataset
from .cache import cache_root
from .errors import (
    CorruptDataError,
    DatasetDownloadError,
    DatasetNotFoundError,
    DatasetShapeError,
)
from .layout import Layout, scan_layout
from .loader import TensorLoader
from .pruning import pruning_set
from .sampling import balanced_indices, shard_indices, subset_indices
from .stats import NORMALIZATION, channel_stats
from .streaming import StreamLoader, imagenet_transforms
from .tensors import ImageTensors, images_from_tree
from .tree import open_tree

__all__ = [
    "DATASETS", "NORMALIZATION", "CorruptDataError", "DatasetBundle", "DatasetDownloadError",
    "DatasetNotFoundError", "DatasetShapeError", "ImageTensors", "Layout", "RandomCropFlip",
    "RandomResizedCropFlip",
    "StreamLoader", "TensorLoader", "balanced_indices", "cache_root", "channel_stats",
    "imagenet_transforms", "images_from_tree", "load_dataset", "open_tree", "pruning_set",
    "scan_layout", "shard_indices", "subset_indices",
]
