"""Atomic file writes: a temporary file in the same folder, fsync, then a rename, so a process
killed at any moment leaves either the old file or the new one, never a torn one. A full disk
is a :class:`~ntksap.errors.DiskFullError` naming the file, the old file left as it was."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from .errors import DiskFullError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary binary file, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        _raise_if_disk_full(err, path)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        _raise_if_disk_full(err, path)
        raise
    _remove_abandoned(path)


ABANDONED_AFTER = 3600.0  # seconds: a temporary file this old belongs to a killed write


def _remove_abandoned(path: Path) -> None:
    """After a write of ``path`` succeeded, delete temporaries of earlier writes of it that
    a killed process left (older than :data:`ABANDONED_AFTER`: a write still going on
    elsewhere is never that slow)."""
    now = time.time()
    for stale in path.parent.glob(f".{path.name}.*"):
        try:
            if stale.is_file() and now - stale.stat().st_mtime > ABANDONED_AFTER:
                stale.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to delete: leave it


def remove_stale_temporaries(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that writes of ``names`` in ``folder`` left when their
    process was killed mid-write (``.<name>.<random>``, see :func:`atomic_write`); call it
    only while no other process writes there (a run holds its lock). Returns them."""
    removed = []
    for name in names:
        for path in Path(folder).glob(f".{name}.*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err``, or an error it arose from, is "no space left" (or a full quota).
    torch.save reports a failed write as a RuntimeError whose context is the OSError."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFullError) or (
                isinstance(err, OSError) and err.errno in _NO_SPACE):
            return True
        err = err.__cause__ or err.__context__
    return False


def _raise_if_disk_full(err: BaseException, path: Path) -> None:
    if is_disk_full(err) and not isinstance(err, DiskFullError):
        raise DiskFullError(f"the disk is full: no space left to write {path} (its previous "
                            "version, if any, is intact); free some space and run again",
                            str(path)) from err


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically."""
    atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def atomic_text(path: str | os.PathLike) -> Iterator[io.StringIO]:
    """A text file to write (``csv.writer`` takes it), written to ``path`` atomically when
    the block ends without an error: nothing, not even an empty file, when it fails."""
    buffer = io.StringIO(newline="")
    yield buffer
    write_text_atomic(path, buffer.getvalue())


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig: Any) -> None:
    """``fig.savefig(path, **savefig)`` atomically (the format from the suffix)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    write_bytes_atomic(path, buffer.getvalue())
