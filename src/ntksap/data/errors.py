"""Dataset errors: each names the path involved and how to fix the problem."""

from __future__ import annotations

from ..errors import MissingDataError


class DatasetNotFoundError(MissingDataError):
    """The dataset's files are not where we looked (and downloading is off or impossible)."""


class DatasetDownloadError(MissingDataError):
    """``--download`` was asked for but the download failed."""


class CorruptDataError(MissingDataError):
    """An archive, image or array file exists but cannot be read."""


class DatasetShapeError(MissingDataError):
    """The images are readable but of another size or colour than the dataset's or preset's."""


__all__ = ["CorruptDataError", "DatasetDownloadError", "DatasetNotFoundError",
           "DatasetShapeError", "MissingDataError"]
