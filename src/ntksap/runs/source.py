"""What a run records about the code and packages that made it."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _git(*args: str) -> str | None:
    """A git command's output in this package's folder, or None (no git, not a checkout)."""
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_state() -> dict[str, Any]:
    """The git commit of the code and whether tracked files differed from it
    (``git_dirty``; None outside a git checkout). Read once, when this module is imported
    (:data:`CODE`): a long process (a sweep) records the code it runs, not a commit made
    after it started."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit or None,
            "git_dirty": None if status is None else bool(status)}

CODE = code_state()


def provenance() -> dict[str, Any]:
    """Package versions, and the git commit of the code this process runs and whether its
    tracked files were changed from it (:data:`CODE`)."""
    versions = {"python": platform.python_version()}
    for package in ("ntksap", "torch", "torchvision", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"versions": versions, **CODE}
