"""Decode many small images into one uint8 ``(N, C, H, W)`` tensor with a thread pool.

torchvision's decoders (libjpeg-turbo, libpng) release the GIL, so threads decode in parallel
while the main thread streams the archive; PIL is the fallback for other formats.
"""

from __future__ import annotations

import io
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .errors import CorruptDataError
from .tree import FileTree, Payload

CHUNK = 256
T = TypeVar("T")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def _torchvision_decoder() -> Callable[..., torch.Tensor] | None:
    """torchvision's C++ decoder op (libjpeg-turbo/libpng/...), called without its Python
    wrapper, which since 0.29 warns on every call (deprecated for TorchCodec). ``None`` when
    absent: PIL decodes everything then."""
    try:
        import torchvision.io  # noqa: F401 - loads the image extension

        return torch.ops.image.decode_image
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover
        return None


_DECODE = _torchvision_decoder()
_UNCHANGED = 0  # torchvision ImageReadMode.UNCHANGED


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _pil_decode(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
        out = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        return out.view(im.height, im.width, -1).permute(2, 0, 1)


def decode_one(data: bytes, where: str) -> torch.Tensor:
    """A ``(1 or 3, H, W)`` uint8 image; alpha is dropped. ``where`` names it in errors."""
    try:
        if _DECODE is None:
            raise RuntimeError("no torchvision decoder")
        img = _DECODE(torch.frombuffer(bytearray(data), dtype=torch.uint8), _UNCHANGED, False)
        if img.dtype != torch.uint8:  # 16-bit PNG
            img = (img.to(torch.int32) >> 8).to(torch.uint8)
    except RuntimeError:
        try:
            img = _pil_decode(data)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise CorruptDataError(
                f"cannot decode image {where}: {err}; replace or delete that file") from err
    return img[:3] if img.shape[0] >= 3 else img[:1]


def _read(payload: Payload) -> bytes:
    if isinstance(payload, Path):
        try:
            return payload.read_bytes()
        except OSError as err:
            raise CorruptDataError(f"cannot read {payload}: {err}") from err
    return payload


def _fit(img: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    if img.shape[0] != channels:
        img = (img.expand(3, -1, -1) if channels == 3
               else (img.float() * _LUMA).sum(0, keepdim=True).round().to(torch.uint8))
    if tuple(img.shape[1:]) != size:
        img = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True,
                            align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return img


def _decode_into(buffer: torch.Tensor, tree: FileTree, items: list[tuple[int, str, Payload]]
                 ) -> tuple[int, bool]:
    """Decode ``items`` into their rows of ``buffer``: ``(count, all greyscale)``."""
    channels, size = buffer.shape[1], tuple(buffer.shape[2:])
    grey = True
    for i, name, payload in items:
        img = decode_one(_read(payload), tree.describe(name))
        grey = grey and img.shape[0] == 1
        buffer[i].copy_(_fit(img, channels, size))  # small copies: no intra-op thread wake-ups
    return len(items), grey


def decode_images(tree: FileTree, names: Sequence[str], *, channels: int | None = None,
                  workers: int | None = None, progress: bool = True,
                  desc: str = "decoding") -> torch.Tensor:
    """Decode ``names`` of ``tree`` into a uint8 ``(N, C, H, W)`` tensor.

    Every image is resized (rarely needed) to the size of the first one read (``names[0]`` for
    a directory, the first in archive order for an archive). ``channels=None`` gives
    1 channel when all images are greyscale, else 3 (greyscale images are repeated to RGB).
    """
    if not names:
        raise ValueError("decode_images needs at least one image")
    workers = workers or default_workers()
    stream = ((i, names[i], payload) for i, payload in tree.payloads(names))
    first = next(stream, None)
    if first is None:
        raise CorruptDataError(f"{tree.path}: none of the listed images could be read")
    img = decode_one(_read(first[2]), tree.describe(first[1]))  # sets size and channels
    buffer = torch.empty(len(names), channels or 3, *img.shape[1:], dtype=torch.uint8)
    all_grey, done = img.shape[0] == 1, 1
    buffer[first[0]] = _fit(img, buffer.shape[1], tuple(buffer.shape[2:]))
    pending: deque[Future[tuple[int, bool]]] = deque()
    bar = tqdm(total=len(names), initial=1, desc=desc, unit="img", file=sys.stderr,
               disable=not progress, mininterval=0.5, dynamic_ncols=True)

    def collect(future: Future[tuple[int, bool]]) -> None:
        nonlocal all_grey, done
        count, grey = future.result()
        all_grey, done = all_grey and grey, done + count
        bar.update(count)

    with ThreadPoolExecutor(workers) as pool:
        try:
            for chunk in _chunks(stream, CHUNK):
                pending.append(pool.submit(_decode_into, buffer, tree, chunk))
                while len(pending) > 4 * workers:
                    collect(pending.popleft())
            while pending:
                collect(pending.popleft())
        finally:
            for future in pending:
                future.cancel()
            bar.close()
    if done != len(names):
        raise CorruptDataError(f"{tree.path}: {len(names) - done} listed images could not be "
                               "read; the archive changed while reading, try again")
    return buffer[:, :1].clone() if channels is None and all_grey else buffer


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
