"""The decoded-image cache: ``$NTKSAP_CACHE`` or ``~/.cache/ntksap``, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, atomic writes still
    fcntl = None  # type: ignore[assignment]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$NTKSAP_CACHE``, else ``~/.cache/ntksap``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("NTKSAP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ntksap"


def cache_path(root: Path, label: str, *key: object, suffix: str = ".pt") -> Path:
    """A file under ``root/datasets`` named by ``label`` and a hash of ``key``."""
    digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60]
    return root / "datasets" / f"{slug}-{digest}{suffix}"


def load_cached(path: Path) -> dict[str, Any] | None:
    """The cached object, or None when absent or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # a damaged cache file is rebuilt, never fatal
        return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so that concurrent processes (DDP ranks) decode a dataset only once."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
