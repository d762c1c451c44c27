"""The lock that keeps two processes out of one run directory."""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from .. import rundir
from ..atomic import is_disk_full
from ..errors import (
    ConfigError,
    RunLockedError,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Create ``directory`` and hold an exclusive lock on ``directory/.lock`` (``flock``)
    while the block runs.

    A second process asking for the same run does not wait: it gets a :class:`RunLockedError`
    at once, naming the holder's pid and host (waiting would only end in reading the finished
    run, which rerunning afterwards does too). The kernel drops the lock when its holder
    exits, even when killed, so an interrupted run resumes. A filesystem without ``flock``
    (some network mounts; Windows has no ``fcntl``) leaves the run unlocked, with a warning."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise
        raise ConfigError(f"cannot create the run directory {directory} ({err.strerror}); "
                          "choose an --out-dir where you may write") from err
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = rundir.lock_path(directory)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(
                f"the run {directory} is in use by {holder}: the same run is already going "
                "on; wait for it to end, then run the command again to read its result (or "
                f"resume it). If that process is gone (its machine died), delete {path}"
            ) from None
        except OSError as err:  # no flock on this filesystem
            warnings.warn(f"cannot lock {path} ({err}); running without the lock that keeps "
                          "two processes from working in the same run", stacklevel=3)
            unlocked = True
        else:
            unlocked = False
        if unlocked:
            yield
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)  # no stale holder left to read
            fcntl.flock(handle, fcntl.LOCK_UN)
