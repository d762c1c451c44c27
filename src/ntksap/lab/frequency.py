"""``frequency``: the eigenvectors of the NTK of a two-layer ReLU network on 1-D inputs, and
their number of zero crossings against the eigenvalue index.

Directions of large eigenvalues are learned first (reference section 7) and they are the
low-frequency ones: the eigenvector of the i-th largest eigenvalue, read as a function of x,
crosses zero about i - 1 times, so smaller eigenvalues oscillate more (frequency principle).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError
from ..ntk import empirical_ntk
from ..ntk.plots import new_figure, save_figure
from .common import LabResult, check_options, eigh_desc, output_dir
from .nets import TwoLayer


def zero_crossings(vector: torch.Tensor, tol: float = 1e-9) -> int:
    """Sign changes along a vector (entries below ``tol`` x its largest magnitude skipped)."""
    v = vector[vector.abs() > tol * float(vector.abs().max())]
    return int((torch.sign(v[1:]) != torch.sign(v[:-1])).sum())


def frequency(out_dir: str | os.PathLike | None = None, *, points: int = 3000,
              width: int = 2000, indices: int = 60, shown: tuple[int, ...] = (1, 2, 3, 5, 10),
              seed: int = 0, progress: bool = False) -> LabResult:
    """The NTK of ``TwoLayer(width, activation="relu")`` on ``points`` evenly spaced inputs in
    [-1, 1]; zero crossings of the eigenvectors of the ``indices`` largest eigenvalues, and the
    Spearman rank correlation between crossings and index (``summary["spearman"]``). Figure
    ``frequency.png`` in ``out_dir``."""
    check_options(out_dir, {"points": points, "width": width, "indices": indices,
                            "shown": min(shown, default=1)})
    for name, value in (("points", points), ("indices", indices)):
        if value < 3:
            raise ConfigError(f"--{name} must be >= 3: the rank correlation of zero crossings "
                              f"and eigenvalue index needs at least 3 eigenvectors; got {value}")
    x = torch.linspace(-1, 1, points).unsqueeze(1)
    net = TwoLayer(width, 1, "relu", seed=seed)
    kernel = empirical_ntk(net, x, progress=progress)
    eigs, vectors = eigh_desc(kernel)
    del kernel
    count = min(indices, points)
    crossings = torch.tensor([zero_crossings(vectors[:, i]) for i in range(count)])
    summary = {
        "points": points, "width": width, "indices": count,
        "spearman": _spearman(torch.arange(count).double(), crossings.double()),
        "crossings_first": crossings[:10].tolist(),
        "lambda_max": float(eigs[0]), "lambda_at_indices": float(eigs[count - 1]),
    }
    result = LabResult("frequency", summary, {
        "x": x, "eigenvalues": eigs[:count], "eigenvectors": vectors[:, :count],
        "crossings": crossings, "shown": [i for i in shown if i <= count]})
    folder = output_dir(out_dir)
    if folder is not None:
        result.figure = _figure(result, folder / "frequency.png")
    return result


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation; None (undefined) when either side is constant."""
    def ranks(v: torch.Tensor) -> torch.Tensor:  # average ranks of ties
        order = v.argsort()
        r = torch.empty_like(v)
        r[order] = torch.arange(len(v), dtype=v.dtype)
        for value in v.unique():
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else None


def _figure(result: LabResult, path: Path) -> Path:
    a, s = result.arrays, result.summary
    fig, (ax_vec, ax_cross) = new_figure(2, 1, size=(6.0, 4.5))
    x = a["x"].squeeze(1).numpy()
    for offset, i in enumerate(a["shown"]):
        v = a["eigenvectors"][:, i - 1]
        v = v / v.abs().max()
        ax_vec.plot(x, (v - 2.2 * offset).numpy(),
                    label=f"i = {i}: lambda = {float(a['eigenvalues'][i - 1]):.3g}, "
                          f"{int(a['crossings'][i - 1])} crossings")
    ax_vec.set_yticks([])
    ax_vec.set_xlabel("x")
    ax_vec.set_ylabel("eigenvector v_i(x), scaled and shifted")
    ax_vec.set_title(f"NTK eigenvectors, two-layer ReLU net (width {s['width']}, "
                     f"{s['points']} inputs)")
    ax_vec.legend(fontsize="x-small", loc="lower left")

    index = torch.arange(1, s["indices"] + 1).numpy()
    ax_cross.plot(index, a["crossings"].numpy(), "o-", markersize=3, color="C0")
    ax_cross.plot(index, index - 1, ":", color="0.5", label="i - 1")
    ax_cross.set_xlabel("eigenvalue index i (largest first)")
    ax_cross.set_ylabel("zero crossings of v_i", color="C0")
    rho = "undefined" if s["spearman"] is None else f"{s['spearman']:.3f}"
    ax_cross.set_title(f"smaller eigenvalues oscillate more (Spearman {rho})")
    ax_cross.legend(fontsize="small", loc="upper left")
    twin = ax_cross.twinx()
    twin.semilogy(index, a["eigenvalues"].numpy(), color="C3")
    twin.set_ylabel("eigenvalue lambda_i", color="C3")
    return save_figure(fig, path)
