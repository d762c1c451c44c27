"""Batched augmentation on the tensors' device. Random parameters are drawn on the CPU from the
given generator (so results do not depend on the device), then applied to the whole batch at once.

Input: uint8 ``(B, C, H, W)``; output: uint8 or float in ``[0, 255]`` units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _flips(batch: int, enabled: bool, g: torch.Generator) -> torch.Tensor:
    flips = torch.rand(batch, generator=g) < 0.5
    return flips if enabled else torch.zeros_like(flips)


@dataclass(frozen=True)
class RandomCropFlip:
    """Zero-pad by ``padding``, crop back to ``H x W`` at a random offset, flip with p = 0.5."""

    padding: int = 4
    flip: bool = True

    def params(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``(top, left, flipped)`` offsets into the padded images."""
        top = torch.randint(0, 2 * self.padding + 1, (batch,), generator=g)
        left = torch.randint(0, 2 * self.padding + 1, (batch,), generator=g)
        return top, left, _flips(batch, self.flip, g)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return size

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.params(x.shape[0], g))

    def draw(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The random parameters ``__call__`` draws for the batch ``x``."""
        return self.params(x.shape[0], g)

    def apply(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Crop and flip ``x`` with drawn ``params`` (several batches' params concatenated
        apply to those batches concatenated)."""
        b, c, h, w = x.shape
        p = self.padding
        top, left, flipped = (t.to(x.device, non_blocking=True) for t in params)
        padded = F.pad(x, (p, p, p, p)) if p else x
        wp = w + 2 * p
        ar_h = torch.arange(h, device=x.device)
        ar_w = torch.arange(w, device=x.device)
        rows = top[:, None] + ar_h  # (B, H)
        cols = left[:, None] + torch.where(flipped[:, None], w - 1 - ar_w, ar_w)  # (B, W)
        index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
        return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


@dataclass(frozen=True)
class RandomResizedCropFlip:
    """torchvision's RandomResizedCrop (area ``scale``, aspect ``ratio``, 10 tries, then a
    central crop) + flip, as one bilinear ``grid_sample`` over the batch; it samples the same
    points as cropping then ``interpolate(..., align_corners=False)`` without antialiasing."""

    size: int = 64
    scale: tuple[float, float] = (0.1, 1.0)
    ratio: tuple[float, float] = (0.8, 1.25)
    flip: bool = True
    tries: int = 10

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.size, self.size

    def params(self, batch: int, height: int, width: int, g: torch.Generator
               ) -> tuple[torch.Tensor, ...]:
        """``(top, left, h, w, flipped)`` integer boxes, one per image."""
        area = torch.empty(batch, self.tries).uniform_(*self.scale, generator=g) * height * width
        log_r = torch.empty(batch, self.tries).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g)
        aspect = log_r.exp()
        w = (area * aspect).sqrt().round().long()
        h = (area / aspect).sqrt().round().long()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.long().argmax(dim=1, keepdim=True)
        w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
        # fallback when no try fits: the largest central crop with a clamped aspect ratio
        in_ratio = width / height
        fw, fh = width, height
        if in_ratio < self.ratio[0]:
            fh = round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw = round(height * self.ratio[1])
        found = ok.any(dim=1)
        w = torch.where(found, w, fw)
        h = torch.where(found, h, fh)
        top = (torch.rand(batch, generator=g) * (height - h + 1)).floor().long()
        left = (torch.rand(batch, generator=g) * (width - w + 1)).floor().long()
        top = torch.where(found, top, (height - fh) // 2)
        left = torch.where(found, left, (width - fw) // 2)
        return top, left, h, w, _flips(batch, self.flip, g)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x, g))

    def draw(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The random parameters ``__call__`` draws for the batch ``x``."""
        return self.params(x.shape[0], x.shape[2], x.shape[3], g)

    def apply(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Crop, resize and flip ``x`` with drawn ``params`` (several batches' params
        concatenated apply to those batches concatenated)."""
        b, c, height, width = x.shape
        top, left, h, w, flipped = (t.to(x.device, non_blocking=True) for t in params)
        steps = (torch.arange(self.size, device=x.device) + 0.5) / self.size  # pixel centres

        def coords(start: torch.Tensor, length: torch.Tensor, full: int) -> torch.Tensor:
            # crop-then-resize sampling (half-pixel centres, clamped inside the crop), as
            # grid_sample's normalized coordinates (align_corners=False)
            src = start[:, None] + (steps * length[:, None] - 0.5).clamp_min(0)
            src = torch.minimum(src, (start + length - 1)[:, None].float())
            return (2 * src + 1) / full - 1

        xs = coords(left, w, width)
        xs = torch.where(flipped[:, None], xs.flip(1), xs)
        ys = coords(top, h, height)
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
        return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)
