"""``dynamics``: the kernel prediction of training against actual gradient descent.

For the squared loss L = 1/2 ||u||^2 with residual u = f(X) - y on the training set, gradient
flow with a fixed kernel K gives u(t) = exp(-K t) u(0) (reference section 7): each
eigen-direction of K decays at the rate of its eigenvalue. A wide two-layer network in NTK
parameterization, f(x) = (1/sqrt(m)) sum_j a_j sigma(w_j x + b_j), trained by gradient descent
with step eta follows it at times t = eta x step; off the training set the kernel predicts
f_t(x) = f_0(x) - K(x, X) K^{-1} (I - exp(-K t)) u(0).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..ntk import empirical_ntk
from ..ntk.plots import new_figure, save_figure
from .common import LabResult, check_options, eigh_desc, gradient_descent, output_dir
from .nets import TwoLayer


def dynamics(out_dir: str | os.PathLike | None = None, *, width: int = 10_000,
             points: int = 20, activation: str = "tanh", steps: int = 4000,
             lr_scale: float = 0.05, test_points: int = 200, seed: int = 0,
             progress: bool = False) -> LabResult:
    """Train ``TwoLayer(width)`` on ``points`` samples of sin(pi x) on [-1, 1] with step
    ``lr_scale / lambda_max(K)`` and compare with the kernel prediction; figure
    ``dynamics.png`` in ``out_dir``. ``summary["max_relative_deviation"]`` is
    max_t ||u_GD(t) - u_kernel(t)|| / ||u(0)||; ``..._linearized`` compares with the
    discrete-time linear model (I - eta K)^step u(0) instead, which leaves only the change of
    the kernel during training (it shrinks as the width grows)."""
    check_options(out_dir, {"width": width, "points": points, "steps": steps,
                            "test_points": test_points}, {"lr_scale": lr_scale})
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((points, 1), generator=g) * 2 - 1).sort(dim=0).values
    y = torch.sin(math.pi * x)
    grid = torch.linspace(-1, 1, test_points).unsqueeze(1)
    net = TwoLayer(width, 1, activation, seed=seed)

    both = empirical_ntk(net, torch.cat([x, grid])).double()
    kernel, cross = both[:points, :points], both[points:, :points]
    eigs, vectors = eigh_desc(kernel)
    with torch.no_grad():
        u0 = (net(x) - y).double().squeeze(1)
        f0_grid = net(grid).double().squeeze(1)
    lr = lr_scale / float(eigs[0])
    times = lr * torch.arange(steps + 1, dtype=torch.float64)
    coeffs = vectors.T @ u0  # u(0) in the eigenbasis
    decay = torch.exp(-times[:, None] * eigs.clamp_min(0)[None, :])  # (T, n)
    u_kernel = (decay * coeffs) @ vectors.T  # (T, n)
    steps_t = torch.arange(steps + 1, dtype=torch.float64)[:, None]
    u_linear = ((1 - lr * eigs)[None, :].pow(steps_t) * coeffs) @ vectors.T  # (I - eta K)^s

    u_gd = torch.empty_like(u_kernel)
    snapshots = sorted({0, steps // 10, steps})
    f_gd: dict[int, torch.Tensor] = {}

    def record(step: int, model: torch.nn.Module) -> None:
        with torch.no_grad():
            u_gd[step] = (model(x) - y).double().squeeze(1)
            if step in snapshots:
                f_gd[step] = model(grid).double().squeeze(1)

    gradient_descent(net, x, y, lr, steps, record, progress, "dynamics: GD")

    def kernel_function(t: float) -> torch.Tensor:
        """f_t on the grid: f_0 - K(x, X) V diag((1 - e^{-lambda t}) / lambda) V^T u(0)."""
        lam = eigs.clamp_min(1e-12 * float(eigs[0]))
        gain = -torch.expm1(-lam * t) / lam
        return f0_grid - cross @ (vectors @ (gain * coeffs))

    f_kernel = {s: kernel_function(float(times[s])) for s in snapshots}
    norm0 = float(u0.norm())
    deviation = (u_gd - u_kernel).norm(dim=1) / norm0
    scale = max(float(f.abs().max()) for f in f_kernel.values())
    summary = {
        "width": width, "points": points, "activation": activation, "steps": steps,
        "lr": lr, "t_final": float(times[-1]), "lambda_max": float(eigs[0]),
        "lambda_min": float(eigs[-1]),
        "max_relative_deviation": float(deviation.max()),
        "max_relative_deviation_linearized": float(
            ((u_gd - u_linear).norm(dim=1) / norm0).max()),
        "final_loss_gd": 0.5 * float(u_gd[-1].pow(2).sum()),
        "final_loss_kernel": 0.5 * float(u_kernel[-1].pow(2).sum()),
        "test_max_relative_deviation": max(float((f_gd[s] - f_kernel[s]).abs().max())
                                           for s in snapshots) / scale,
    }
    result = LabResult("dynamics", summary, {
        "times": times, "u_gd": u_gd, "u_kernel": u_kernel, "eigenvalues": eigs,
        "eigenvectors": vectors,
        "x": x, "y": y, "grid": grid, "f_gd": f_gd, "f_kernel": f_kernel})
    folder = output_dir(out_dir)
    if folder is not None:
        result.figure = _figure(result, folder / "dynamics.png")
    return result


def _figure(result: LabResult, path: Path) -> Path:
    a, s = result.arrays, result.summary
    fig, (ax_loss, ax_modes, ax_fn) = new_figure(3, 1, size=(5.0, 4.0))
    t = a["times"].numpy()
    ax_loss.semilogy(t, 0.5 * a["u_gd"].pow(2).sum(1).numpy(), label="gradient descent")
    ax_loss.semilogy(t, 0.5 * a["u_kernel"].pow(2).sum(1).numpy(), "--",
                     label="kernel: u(t) = exp(-Kt) u(0)")
    ax_loss.set_xlabel("time t = learning rate x step")
    ax_loss.set_ylabel("training loss 1/2 ||u(t)||^2")
    ax_loss.set_title(f"width {s['width']}: max deviation "
                      f"{100 * s['max_relative_deviation']:.2f}% of ||u(0)||")
    ax_loss.legend(fontsize="small")

    eigs = a["eigenvalues"]
    vectors = a["eigenvectors"]
    for i in [j for j in (0, 1, 2, 3, 5) if j < len(eigs)]:
        line, = ax_modes.semilogy(t, (a["u_gd"] @ vectors[:, i]).abs().numpy(),
                                  label=f"i = {i + 1}, lambda = {float(eigs[i]):.3g}")
        ax_modes.semilogy(t, (a["u_kernel"] @ vectors[:, i]).abs().numpy(), "--",
                          color=line.get_color())
    ax_modes.set_ylim(bottom=1e-5 * float(a["u_kernel"][0].norm()))
    ax_modes.set_xlabel("time t")
    ax_modes.set_ylabel("|v_i . u(t)|  (solid GD, dashed kernel)")
    ax_modes.set_title("eigen-directions decay at rate lambda_i")
    ax_modes.legend(fontsize="x-small")

    grid = a["grid"].squeeze(1).numpy()
    ax_fn.plot(grid, torch.sin(math.pi * a["grid"]).squeeze(1).numpy(), color="0.6",
               linewidth=3, alpha=0.5, label="target sin(pi x)")
    ax_fn.plot(a["x"].squeeze(1).numpy(), a["y"].squeeze(1).numpy(), "ko", markersize=4,
               label="training points")
    for step, f in a["f_gd"].items():
        line, = ax_fn.plot(grid, f.numpy(), label=f"t = {float(a['times'][step]):.3g}")
        ax_fn.plot(grid, a["f_kernel"][step].numpy(), "--", color=line.get_color())
    ax_fn.set_xlabel("x")
    ax_fn.set_ylabel("f_t(x)  (solid GD, dashed kernel)")
    ax_fn.set_title("the function during training")
    ax_fn.legend(fontsize="x-small")
    return save_figure(fig, path)

