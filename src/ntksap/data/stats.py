"""Per-dataset normalization constants (per-channel mean and std of pixels in [0, 1])."""

from __future__ import annotations

import torch

from .sets import BUILTINS
from .spec import Stats

# each built-in data set's per-channel mean and std, in [0, 1] units (ntksap.data.sets)
NORMALIZATION: dict[str, Stats] = {n: d.normalization for n, d in BUILTINS.items()
                                   if d.normalization}


def channel_stats(x: torch.Tensor) -> Stats:
    """Exact per-channel mean and std (in [0, 1] units) of a uint8 ``(N, C, H, W)`` tensor."""
    values = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = x[:, c].reshape(-1).bincount(minlength=256).to(torch.float64)
        m = (counts * values).sum() / counts.sum()
        mean.append(float(m))
        std.append(float(((counts * (values - m) ** 2).sum() / counts.sum()).sqrt()))
    return tuple(mean), tuple(std)


def normalizer(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str,
               dtype: torch.dtype = torch.float32, ndim: int = 4
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``x * scale + shift == (x / 255 - mean) / std``, shaped
    ``(1, C, 1, 1)`` (``ndim`` dimensions: batch, channel, then ones), for pixels ``x`` in
    ``[0, 255]``."""
    view = (1, -1, *([1] * (ndim - 2)))
    m = torch.tensor(mean, dtype=dtype).view(view)
    s = torch.tensor(std, dtype=dtype).view(view)
    return (1 / (255 * s)).to(device), (-m / s).to(device)
