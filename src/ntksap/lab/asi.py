"""``asi``: fitting sin(4x) from 10 points with a wide network, with and without a zero
initial output.

Training in the kernel regime only changes the function inside the span of the kernel at the
training points, so a large random initial output (initialization std 10) stays in the test
predictions. Four variants of the same network (reference section 7):

- ``plain``: no trick;
- ``asi``: antisymmetrical initialization, h = (sqrt(2)/2)(f(theta) - f(theta')), theta' = theta
  at initialization: zero initial output and the same kernel;
- ``doubling``: last hidden layer duplicated with negated output weights: zero initial output,
  but a different (smaller) kernel;
- ``rnd``: the plain network at twice the width (every hidden layer), for a comparison at a
  similar parameter count.

All four train by full-batch gradient descent with the same step, ``lr_scale /
lambda_max(K)`` of the plain network's kernel (which ASI shares).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..ntk import empirical_ntk
from ..ntk.plots import new_figure, save_figure
from .common import LabResult, check_options, gradient_descent, output_dir
from .nets import ASI, DeepNTK, doubled

VARIANTS = ("plain", "asi", "doubling", "rnd")


def build_variants(widths: Sequence[int], std: float = 10.0, activation: str = "tanh",
                   seed: int = 0, variants: Sequence[str] = VARIANTS) -> dict[str, nn.Module]:
    """The networks of the experiment at initialization, by variant name."""
    plain = DeepNTK(widths, std, activation=activation, seed=seed)
    wide = [widths[0], *(2 * w for w in widths[1:-1]), widths[-1]]
    make = {"plain": lambda: plain, "asi": lambda: ASI(DeepNTK(widths, std,
                                                               activation=activation,
                                                               seed=seed)),
            "doubling": lambda: doubled(plain),
            "rnd": lambda: DeepNTK(wide, std, activation=activation, seed=seed + 1)}
    return {v: make[v]() for v in variants}


def asi(out_dir: str | os.PathLike | None = None, *, widths: Sequence[int] = (1, 5000, 5000, 1),
        std: float = 10.0, activation: str = "tanh", train_points: int = 10,
        test_points: int = 201, steps: int = 1000, lr_scale: float = 0.5, log_every: int = 20,
        variants: Sequence[str] = VARIANTS, check_kernel: bool = True, seed: int = 0,
        device: str | torch.device = "cpu", progress: bool = False) -> LabResult:
    """Fit sin(4x) on [-1, 1] from ``train_points`` evenly spaced points with each variant;
    test outputs on ``test_points`` points and loss curves. With ``check_kernel`` the summary
    also reports how far ASI's kernel is from the plain network's (relative, should be
    rounding) and the doubling trick's (not small). Figure ``asi.png`` in ``out_dir``."""
    if len(widths) < 2 or widths[0] != 1 or widths[-1] != 1:
        raise ConfigError(f"--widths runs from the input to the output of a 1-D function: it "
                          f"must start and end with 1, e.g. 1 5000 5000 1; got "
                          f"{' '.join(map(str, widths))}")
    check_options(out_dir, {"train_points": train_points, "test_points": test_points,
                            "steps": steps, "log_every": log_every, "widths": min(widths)},
                  {"std": std, "lr_scale": lr_scale})
    if not variants:
        raise ConfigError(f"--variants needs at least one of {', '.join(VARIANTS)}")
    device = torch.device(device)
    x = torch.linspace(-1, 1, train_points, device=device).unsqueeze(1)
    y = torch.sin(4 * x)
    grid = torch.linspace(-1, 1, test_points, device=device).unsqueeze(1)
    target = torch.sin(4 * grid)
    nets = {v: n.to(device) for v, n in build_variants(widths, std, activation, seed,
                                                       variants).items()}
    reference = (nets["plain"] if "plain" in nets
                 else DeepNTK(widths, std, activation=activation, seed=seed).to(device))
    kernel = empirical_ntk(reference, x).double()
    lam_max = float(torch.linalg.eigvalsh(kernel)[-1])
    lr = lr_scale / lam_max
    summary: dict = {"widths": list(widths), "std": std, "activation": activation,
                     "train_points": train_points, "steps": steps, "lr": lr,
                     "lambda_max": lam_max}
    if check_kernel:
        scale = float(kernel.abs().max())
        for v in ("asi", "doubling"):
            if v in nets:
                other = empirical_ntk(nets[v], x).double()
                summary[f"{v}_kernel_max_rel_diff"] = float((other - kernel).abs().max()) / scale
    arrays: dict = {"x": x.cpu(), "y": y.cpu(), "grid": grid.cpu(), "target": target.cpu()}
    results: dict = {}
    for name, net in nets.items():
        with torch.no_grad():
            initial = net(grid).squeeze(1).cpu()
        test_steps, test_losses = [], []

        def record(step: int, model: nn.Module, logged: list[int] = test_steps,
                   losses: list[float] = test_losses) -> None:
            if step % log_every == 0 or step == steps:
                with torch.no_grad():
                    logged.append(step)
                    losses.append(0.5 * float((model(grid) - target).pow(2).mean()))

        train = gradient_descent(net, x, y, lr, steps, record, progress, f"asi: {name}")
        with torch.no_grad():
            final = net(grid).squeeze(1).cpu()
        results[name] = {"initial": initial, "final": final, "train_loss": train,
                         "test_steps": test_steps, "test_loss": test_losses}
        summary[name] = {
            "parameters": sum(p.numel() for p in net.parameters()),
            "initial_max_abs_output": float(initial.abs().max()),
            "final_train_loss": float(train[-1]),
            "final_test_mse": 2 * test_losses[-1],
        }
    arrays["variants"] = results
    result = LabResult("asi", summary, arrays)
    folder = output_dir(out_dir)
    if folder is not None:
        result.figure = _figure(result, folder / "asi.png")
    return result


LABELS = {"plain": "no trick", "asi": "ASI", "doubling": "doubling trick",
          "rnd": "RND (2x width)"}


def _figure(result: LabResult, path: Path) -> Path:
    a, s = result.arrays, result.summary
    fig, (ax_init, ax_fit, ax_loss) = new_figure(3, 1, size=(5.0, 4.0))
    grid = a["grid"].squeeze(1).numpy()
    for ax in (ax_init, ax_fit):
        ax.plot(grid, a["target"].squeeze(1).numpy(), color="0.6", linewidth=3, alpha=0.5,
                label="target sin(4x)")
        ax.plot(a["x"].squeeze(1).numpy(), a["y"].squeeze(1).numpy(), "ko", markersize=4,
                label="training points")
        ax.set_xlabel("x")
    for name, r in a["variants"].items():
        ax_init.plot(grid, r["initial"].numpy(), label=LABELS[name])
        ax_fit.plot(grid, r["final"].numpy(), label=f"{LABELS[name]}: test MSE "
                                                    f"{s[name]['final_test_mse']:.3g}")
        line, = ax_loss.semilogy(r["train_loss"].numpy(), label=f"{LABELS[name]} (train)")
        ax_loss.semilogy(r["test_steps"], r["test_loss"], "--", color=line.get_color())
    widths = "-".join(map(str, s["widths"]))
    ax_init.set_title(f"initial outputs ({widths}, std {s['std']:g})")
    ax_init.set_ylabel("f_0(x)")
    ax_init.legend(fontsize="x-small")
    ax_fit.set_title(f"after {s['steps']} steps of gradient descent")
    ax_fit.set_ylabel("f(x)")
    lo, hi = float(a["target"].min()), float(a["target"].max())
    ax_fit.set_ylim(lo - 1.5, hi + 1.5)
    ax_fit.legend(fontsize="x-small")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (solid: train 1/2 sum, dashed: test 1/2 mean)")
    ax_loss.set_title("loss curves")
    ax_loss.legend(fontsize="x-small")
    return save_figure(fig, path)
