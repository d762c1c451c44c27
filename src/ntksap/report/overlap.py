"""The report's mask-overlap heatmap: the Jaccard overlap of the kept weights between the
method variants of one setting at one sparsity (:mod:`ntksap.analysis`).

One mask per variant: the seed that most variants share at that sparsity (the lowest on a
tie), so that the masks score the same initialization; variants without it are left out.
The sparsity is the one asked for (within 0.1 percentage point), or by default the highest
sparsity at which at least two variants left masks.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..analysis import compare_masks, overlap_heatmap
from ..errors import ConfigError, MaskMismatchError
from ..masks import Masks
from ..ntk.plots import new_figure
from ..runners import is_baseline
from .records import Point

TOLERANCE = 1e-3  # a fraction: 0.1 percentage point


@dataclass
class Overlap:
    """The heatmap of one setting: its PNG and what it shows."""

    png: bytes
    sparsity: float
    seed: int
    labels: list[str]


def check_sparsity(sparsity: float | None) -> None:
    """Refuse a sparsity for the heatmap outside [0, 1) (a fraction, e.g. 0.982)."""
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(
            sparsity, int | float) or not 0 <= sparsity < 1):
        raise ConfigError(f"the overlap heatmap's sparsity must be a fraction in [0, 1), e.g. "
                          f"0.982 for 98.2 %; got {sparsity!r}")


def overlap_figure(points: list[Point], labels: dict[str, str],
                   sparsity: float | None = None) -> Overlap | None:
    """The heatmap of ``points`` (one setting's finished runs; ``labels`` their variant
    labels by key), or None when fewer than two variants have masks at that sparsity."""
    with_masks = [p for p in points if not is_baseline(p.method) and p.masks_path is not None]
    chosen = _sparsity(with_masks, labels, sparsity)
    if chosen is None:
        return None
    here = [p for p in with_masks if abs(p.sparsity - chosen) <= TOLERANCE]
    count = Counter(seed for _, seed in {(labels[p.key], p.seed) for p in here})
    seed = min(count, key=lambda s: (-count[s], s))
    picked: dict[str, Point] = {}
    for p in sorted(here, key=lambda p: p.key):
        if p.seed == seed:
            picked.setdefault(labels[p.key], p)
    if len(picked) < 2:
        return None
    try:
        masks = {label: Masks.load(p.masks_path) for label, p in picked.items()}
        matrix = compare_masks(masks).matrix()
    except (MaskMismatchError, FileNotFoundError):
        return None  # masks of different networks, or a file gone: nothing to compare
    return Overlap(_draw(list(masks), matrix, chosen, seed), chosen, seed, list(masks))


def _sparsity(points: list[Point], labels: dict[str, str], wanted: float | None
              ) -> float | None:
    variants: dict[float, set[str]] = {}
    for p in points:
        variants.setdefault(p.sparsity, set()).add(labels[p.key])
    if wanted is not None:
        near = [s for s in variants if abs(s - wanted) <= TOLERANCE]
        return max(near, key=lambda s: len(variants[s])) if near else None
    enough = [s for s, names in variants.items() if len(names) >= 2]
    return max(enough) if enough else None


def _draw(labels: list[str], matrix: np.ndarray, sparsity: float, seed: int) -> bytes:
    size = 1.2 + 0.55 * len(labels)
    fig, (ax,) = new_figure(size=(size + 1.2, size))
    overlap_heatmap(ax, labels, matrix)
    ax.set_title(f"overlap of kept weights at sparsity {100 * sparsity:.2f} % (seed {seed})",
                 fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
