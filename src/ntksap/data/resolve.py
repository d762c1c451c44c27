"""Where a named dataset's files are: torchvision's format, an image folder or an archive."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root
from .errors import DatasetNotFoundError
from .sets import BUILTINS
from .torchvision_format import has_torchvision_files
from .tree import is_archive


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
    spec = BUILTINS[name]
    folder = spec.torchvision.folder if spec.torchvision else None
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if root.is_file():
        return Source("tree", root)
    if root.is_dir():
        if has_torchvision_files(name, root):
            return Source("torchvision", root)
        if is_tree_root(root):
            return Source("tree", root)
        for candidate in spec.candidates:
            path = root / candidate
            if (path.is_dir() and is_tree_root(path)) or (path.is_file() and is_archive(path)):
                return Source("tree", path)
    if download and folder:
        return Source("download", root)
    looked = ([f"{folder}/ (torchvision's format)"] if folder else []) + [
        "train/ + test/ (or val/) image folders", *spec.candidates]
    where = (f"no {name} dataset in {root} (looked for: {', '.join(looked)})" if root.is_dir()
             else f"{name}: the data directory {root} does not exist")
    if folder:
        fix = (f"pass --download (download=True) to fetch it into {root}, or point the data "
               "directory at a copy")
    else:
        fix = f"--download cannot fetch {name}: {spec.manual}"
    raise DatasetNotFoundError(f"{where}; {fix}")
