"""Where a named dataset's files are: torchvision's format, an image folder or an archive."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root
from .errors import DatasetNotFoundError
from .torchvision_format import FOLDERS, has_torchvision_files
from .tree import is_archive

# names looked for inside the data directory, in order
CANDIDATES: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10-jpeg.tar.gz", "cifar10-jpeg", "cifar10", "cifar10.tar.gz"),
    "cifar100": ("cifar100-jpeg.tar.gz", "cifar100-jpeg", "cifar100", "cifar100.tar.gz"),
    "mnist": ("mnist-png.tar.gz", "mnist-png", "mnist", "mnist.tar.gz"),
    "tinyimagenet": ("tiny-imagenet-200", "tiny-imagenet-200.zip", "tiny-imagenet-200.tar.gz",
                     "tiny-imagenet-200-sample.tar.gz"),
    "imagenet": ("imagenet", "ILSVRC2012", "imagenet.tar.gz"),
}
MANUAL = {
    "tinyimagenet": "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and point the "
                    "data directory at it (the .zip works as is)",
    "imagenet": "get ImageNet from https://image-net.org and arrange it as train/<wnid>/ and "
                "val/<wnid>/ image folders",
}


@dataclass(frozen=True)
class Source:
    kind: str  # "torchvision", "tree" (folder or archive) or "download"
    path: Path


def default_data_dir() -> Path:
    """``$NTKSAP_DATA``, else ``data`` under the cache root."""
    env = os.environ.get("NTKSAP_DATA")
    return Path(env).expanduser() if env else cache_root() / "data"


def is_tree_root(path: Path) -> bool:
    return (path / "train").is_dir() or (path / "wnids.txt").is_file()


def locate(name: str, data_dir: str | Path | None, download: bool) -> Source:
    """The source of dataset ``name`` in ``data_dir``; a clear error when there is none."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if root.is_file():
        return Source("tree", root)
    if root.is_dir():
        if has_torchvision_files(name, root):
            return Source("torchvision", root)
        if is_tree_root(root):
            return Source("tree", root)
        for candidate in CANDIDATES[name]:
            path = root / candidate
            if (path.is_dir() and is_tree_root(path)) or (path.is_file() and is_archive(path)):
                return Source("tree", path)
    if download and name in FOLDERS:
        return Source("download", root)
    looked = ([f"{FOLDERS[name]}/ (torchvision's format)"] if name in FOLDERS else []) + [
        "train/ + test/ (or val/) image folders", *CANDIDATES[name]]
    where = (f"no {name} dataset in {root} (looked for: {', '.join(looked)})" if root.is_dir()
             else f"{name}: the data directory {root} does not exist")
    if name in FOLDERS:
        fix = (f"pass --download (download=True) to fetch it into {root}, or point the data "
               "directory at a copy")
    else:
        fix = f"--download cannot fetch {name}: {MANUAL[name]}"
    raise DatasetNotFoundError(f"{where}; {fix}")
