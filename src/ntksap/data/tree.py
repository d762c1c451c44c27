"""Files of a dataset under a directory or inside a ``.tar[.gz]`` / ``.zip`` archive.

Archives are read as streams (a gzip tarball has no random access): one pass lists the members
and keeps small text files, a second pass yields the requested members' bytes in archive order.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from .errors import CorruptDataError, DatasetNotFoundError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")
_TEXT_LIMIT = 16 << 20  # text members kept in memory by the listing pass
_BLOB_LIMIT = 2 << 30  # image bytes kept by the listing pass, saving a second pass
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error)

Payload = bytes | Path


def is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


class FileTree:
    """Regular files of a dataset, named by relative POSIX paths."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def names(self) -> list[str]:
        raise NotImplementedError

    def text(self, name: str) -> str:
        raise NotImplementedError

    def payloads(self, names: Sequence[str]) -> Iterator[tuple[int, Payload]]:
        """``(index into names, bytes or file path)`` for every requested name."""
        raise NotImplementedError

    def describe(self, name: str) -> str:
        return str(self.path / name)

    def first_image(self) -> tuple[str, bytes]:
        """Some image of the tree, found cheaply (to probe the image size)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes whenever the files change: the cache key's input."""
        raise NotImplementedError


class DirTree(FileTree):
    def names(self) -> list[str]:
        found = []
        for top, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(top).relative_to(self.path).as_posix()
            prefix = "" if rel == "." else rel + "/"
            found.extend(prefix + f for f in sorted(files) if not f.startswith("."))
        return found

    def text(self, name: str) -> str:
        return (self.path / name).read_text()

    def first_image(self) -> tuple[str, bytes]:
        for top, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if is_image(f):
                    path = Path(top) / f
                    return path.relative_to(self.path).as_posix(), path.read_bytes()
        raise DatasetNotFoundError(f"no image files under {self.path}")

    def payloads(self, names: Sequence[str]) -> Iterator[tuple[int, Payload]]:
        return ((i, self.path / name) for i, name in enumerate(names))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(str(self.path.resolve()).encode())
        for name in self.names():
            st = (self.path / name).stat()
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()


class ArchiveTree(FileTree):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._names: list[str] | None = None
        self._texts: dict[str, bytes] = {}
        self._blobs: dict[str, bytes] | None = {}
        self._zip = path.name.lower().endswith(".zip")

    def describe(self, name: str) -> str:
        return f"{self.path}:{name}"

    def _corrupt(self, err: BaseException) -> CorruptDataError:
        return CorruptDataError(
            f"cannot read archive {self.path}: {err}; it is truncated or corrupt, download or "
            "create it again")

    def names(self) -> list[str]:
        if self._names is None:
            try:
                self._names = self._list()
            except _ARCHIVE_ERRORS as err:
                raise self._corrupt(err) from err
        return self._names

    def _list(self) -> list[str]:
        found = []
        if self._zip:
            with zipfile.ZipFile(self.path) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        found.append(info.filename)
            return found
        kept = 0
        with _open_checked(self.path) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                name = _clean(member.name)
                found.append(name)
                if name.endswith(".txt") and member.size <= _TEXT_LIMIT:
                    self._texts[name] = _read_member(tf, member)
                elif self._blobs is not None and is_image(name):
                    self._blobs[name] = _read_member(tf, member)
                    kept += member.size
                    if kept > _BLOB_LIMIT:  # too big to hold: read again when decoding
                        self._blobs = None
            _check_complete(raw, self.path, tf.offset)
        return found

    def text(self, name: str) -> str:
        self.names()
        if not self._zip:
            return self._texts[name].decode()
        try:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(name).decode()
        except _ARCHIVE_ERRORS as err:
            raise self._corrupt(err) from err

    def first_image(self) -> tuple[str, bytes]:
        names = self.names()  # the listing pass also checks that the archive is whole
        if self._blobs is not None and not self._zip:
            image = next((name for name in names if is_image(name)), None)
            if image is not None:
                return image, self._blobs[image]
        try:
            if self._zip:
                with zipfile.ZipFile(self.path) as zf:
                    for name in zf.namelist():
                        if is_image(name):
                            return name, zf.read(name)
            else:
                with tarfile.open(self.path, "r|*") as tf:
                    for member in tf:
                        if member.isfile() and is_image(member.name):
                            return _clean(member.name), _read_member(tf, member)
        except _ARCHIVE_ERRORS as err:
            raise self._corrupt(err) from err
        raise DatasetNotFoundError(f"no image files in {self.path}")

    def payloads(self, names: Sequence[str]) -> Iterator[tuple[int, Payload]]:
        self.names()
        if self._blobs is not None and not self._zip:
            yield from ((i, self._blobs[name]) for i, name in enumerate(names))
            return
        wanted = {name: i for i, name in enumerate(names)}
        try:
            if self._zip:
                with zipfile.ZipFile(self.path) as zf:
                    for name, i in wanted.items():
                        yield i, zf.read(name)
                return
            with tarfile.open(self.path, "r|*") as tf:
                for member in tf:
                    i = wanted.get(_clean(member.name))
                    if i is not None and member.isfile():
                        yield i, _read_member(tf, member)
        except _ARCHIVE_ERRORS as err:
            raise self._corrupt(err) from err

    def fingerprint(self) -> str:
        st = self.path.stat()
        key = f"{self.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
        return hashlib.sha256(key.encode()).hexdigest()

    def extract(self, dest: Path) -> None:
        """Unpack everything into ``dest`` (an existing empty directory)."""
        try:
            if self._zip:
                with zipfile.ZipFile(self.path) as zf:
                    zf.extractall(dest)
            else:
                with tarfile.open(self.path, "r:*") as tf:
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(dest, filter="data")
                    else:  # pragma: no cover - Python without extraction filters
                        tf.extractall(dest)
        except _ARCHIVE_ERRORS as err:
            raise self._corrupt(err) from err


_MAGIC = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def _open_checked(path: Path) -> IO[bytes]:
    """The archive's decompressed byte stream, by the library that checks its end marker.

    tarfile's own stream reader stops quietly where a truncated archive ends; gzip, bz2 and
    lzma raise ``EOFError`` when the rest of the stream is read (see :func:`_check_complete`).
    """
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener(path, "rb")
    return open(path, "rb")


def _check_complete(raw: IO[bytes], path: Path, end: int) -> None:
    """Read the stream to its end (a cut compressed stream raises there); a plain tar must have
    its end-of-archive zero block at ``end``, where the member listing stopped."""
    while raw.read(1 << 20):
        pass
    if isinstance(raw, io.BufferedReader):
        with open(path, "rb") as f:
            f.seek(end)
            if f.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
                raise tarfile.ReadError(f"no end-of-archive block at byte {end}")


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tf.extractfile(member)
    assert handle is not None  # regular file
    return handle.read()


def open_tree(path: str | Path) -> FileTree:
    """A :class:`FileTree` over a directory or an archive; clear errors otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        return DirTree(path)
    if path.is_file() and is_archive(path):
        return ArchiveTree(path)
    if path.exists():
        raise DatasetNotFoundError(
            f"{path} is neither a directory nor an archive ({', '.join(ARCHIVE_SUFFIXES)}); "
            "point the data directory at an image folder or an archive of one")
    raise DatasetNotFoundError(f"dataset path {path} does not exist; check the data directory")
