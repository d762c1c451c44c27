"""How much each pruned network of a sweep scales its logits at initialization.

For every finished run directory of one seed under RUNS (``ntksap sweep``'s ``out_dir``), the
network is rebuilt from the run's recorded theta_0 (``init.pt``) and masks, and the standard
deviation of its logits over the first N test images is measured (no training). Prints a
Markdown table, method x sparsity, of that scale divided by the dense network's (the run of
method ``dense`` with the same seed and preset). Used on docs/results/mnist.md to show why
GraSP's 90 % LeNet-5-Caffe mask diverges at the learning rate every other mask trains at.

    python docs/results/scripts/init_output_scale.py runs-mnist/mnist-lenet5-short \
        --data-dir ../shared/datasets --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ntksap import rundir
from ntksap.data.bundle import load_dataset
from ntksap.data.stats import normalizer
from ntksap.models import build_model


def logit_scale(directory: Path, config: dict, x: torch.Tensor) -> float:
    """Std of the logits of a run's theta_0, masked as the run was, on ``x``."""
    model = build_model(config["model"], num_classes=config["num_classes"], seed=config["seed"])
    model.load_state_dict(torch.load(rundir.initial_weights(directory), weights_only=True))
    if rundir.existing_masks(directory) is not None:
        rundir.load_masks(directory, model).apply(model)
    model.eval()
    with torch.no_grad():
        return model(x).std().item()


def main(argv: list[str] | None = None) -> dict[str, dict[float, float]]:
    """Print the table; returns the ratios, by method and sparsity."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a preset's folder of run directories")
    parser.add_argument("--data-dir", default=None, help="where the sweep's data lies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scales: dict[str, dict[float, float]] = {}
    x = None
    for directory in sorted(args.runs.iterdir()):
        record = rundir.read_record(directory) if rundir.has_config(directory) else None
        config = (record or {}).get("config", {})
        if config.get("seed") != args.seed or not rundir.summary_path(directory).exists():
            continue
        if x is None:
            test = load_dataset(config["dataset"], args.data_dir, progress=False).test
            scale, shift = normalizer(test.mean, test.std, "cpu")
            x = test.x[:args.images].float() * scale + shift
        scales.setdefault(config["method"], {})[config["sparsity"]] = logit_scale(
            directory, config, x)
    dense = scales.pop("dense", {}).get(0.0)
    if dense is None:
        raise SystemExit(f"no finished dense run of seed {args.seed} under {args.runs}")
    columns = sorted({s for row in scales.values() for s in row})
    print(f"Logit std at initialization / dense network's ({dense:.3g}), seed {args.seed}, "
          f"{args.images} test images\n")
    print("| method | " + " | ".join(f"{100 * c:g} %" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    ratios = {method: {c: v / dense for c, v in row.items()}
              for method, row in sorted(scales.items())}
    for method, row in ratios.items():
        print(f"| {method} | " + " | ".join(
            f"{row[c]:.3g}" if c in row else "" for c in columns) + " |")
    return ratios


if __name__ == "__main__":
    main()
