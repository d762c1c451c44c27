"""``ntksap ntk``: the NTK spectrum of a model, dense and under each mask file, in one figure.

The model is built with ``--seed`` (the initialization ``ntksap prune --seed`` scores), the
inputs are Gaussian (data-free, as NTK-SAP); each mask is applied to a copy of the same
initialization. Writes ``spectrum.png``, ``spectrum.csv``/``.md`` and ``eigenvalues.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..masks import Masks
from ..models import MODELS, build_model, model_spec
from ..ntk import compare_spectra, mask_label, write_comparison
from ..ntk.compare import DENSE
from ..ntk.memory import DEFAULT_BUDGET, parse_bytes
from ..ntk.params import PARAMS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ntk", help="NTK eigenvalue spectra of a dense model and its masks",
                       description=__doc__.splitlines()[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(MODELS), metavar="MODEL",
                   help=f"model name: {', '.join(sorted(MODELS))}")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--inputs", type=int, default=100, help="Gaussian inputs n (K is nk x nk)")
    p.add_argument("--masks", nargs="*", default=[], metavar="FILE",
                   help="mask files made for this model (ntksap prune --out)")
    p.add_argument("--labels", nargs="*", default=None,
                   help="legend labels of the masks (default: method and sparsity)")
    p.add_argument("--out", required=True, help="folder for the figure and the tables")
    p.add_argument("--params", choices=PARAMS, default="all",
                   help="differentiate all parameters or the prunable weights only")
    p.add_argument("--memory-budget", default=DEFAULT_BUDGET,
                   help="memory for one kernel computation, e.g. 2GiB")
    p.add_argument("--float32-eigenvalues", action="store_true",
                   help="eigenvalues in float32 (default float64)")
    p.add_argument("--input-shape", type=int, nargs="+", default=None,
                   help="one example's shape (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seeds the initialization and inputs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object, no table")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    budget = parse_bytes(args.memory_budget)
    if args.labels is not None and len(args.labels) != len(args.masks):
        raise ConfigError(f"{len(args.labels)} labels for {len(args.masks)} mask files; give "
                          "one label per mask file, or none")
    model = build_model(args.model, args.num_classes, seed=args.seed).to(args.device)
    masks: dict[str, Masks] = {}
    for i, path in enumerate(args.masks):
        m = Masks.load(path, model)
        label = args.labels[i] if args.labels else mask_label(m, Path(path).stem)
        while label in masks or label == DENSE:
            label += "'"
        masks[label] = m
    shape = tuple(args.input_shape or model_spec(args.model).input_shape)
    generator = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn((args.inputs, *shape), generator=generator).to(args.device)
    start = time.perf_counter()
    comparison = compare_spectra(model, masks, inputs, params=args.params,
                                 float64=not args.float32_eigenvalues, memory_budget=budget,
                                 progress=not args.no_progress)
    title = (f"{args.model}: NTK spectra, {args.inputs} Gaussian inputs x "
             f"{args.num_classes} logits")
    files = write_comparison(comparison, args.out, title)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"model": args.model, "inputs": args.inputs,
                          "kernel_size": args.inputs * args.num_classes, "params": args.params,
                          "seed": args.seed, "seconds": seconds, **files,
                          "rows": [finite(r) for r in comparison.rows]}))
        return 0
    print(Path(files["table_md"]).read_text(), end="")
    print(f"\nfigure {files['figure']}, tables {files['table_csv']} and {files['table_md']}, "
          f"eigenvalues {files['eigenvalues']} ({seconds:.1f} s)")
    return 0


def finite(row: dict[str, Any]) -> dict[str, Any]:
    """A table row for JSON: infinite or NaN numbers (a singular kernel's condition number)
    become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in row.items()}
