"""Per-dataset normalization constants (per-channel mean and std of pixels in [0, 1])."""

from __future__ import annotations

import torch

Stats = tuple[tuple[float, ...], tuple[float, ...]]

NORMALIZATION: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307,), (0.3081,)),
}


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
