"""``ntksap ntk``: the NTK spectrum of a model, dense and under each mask file, in one figure.

The model is built with ``--seed`` (the initialization ``ntksap prune --seed`` scores), the
inputs are Gaussian (data-free, as NTK-SAP); each mask is applied to a copy of the same
initialization. Writes ``spectrum.png``, ``spectrum.csv``/``.md`` and ``eigenvalues.csv``.

With ``--runs DIR ...`` it measures run directories instead (``ntksap run`` / ``sweep``): each
run's theta_0, dense and under its mask, written to ``<run>/ntk_spectrum.json`` for
``ntksap report``; runs that already hold the same measurement are skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..masks import Masks
from ..models import MODELS, build_model, model_spec
from ..models import input_shape as model_input_shape
from ..ntk import compare_spectra, mask_label, write_comparison
from ..ntk.compare import DENSE_NETWORK, check_inputs, finite
from ..ntk.memory import DEFAULT_BUDGET, check_kernel_fits, parse_bytes
from ..ntk.params import PARAMS
from ..runs.checks import check_device
from ..runs.spectrum import SPECTRUM_FILE, find_runs, run_spectrum
from .helpformat import DefaultsFormatter, description


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ntk", help="NTK eigenvalue spectra of a dense model and its masks",
                       description=description(__doc__), formatter_class=DefaultsFormatter)
    p.add_argument("--model", metavar="MODEL",
                   help=f"model: {', '.join(sorted(MODELS))}, timm:NAME, MODULE:FACTORY or "
                        "path/to/file.py:FACTORY (not with --runs)")
    p.add_argument("--runs", nargs="+", default=None, metavar="DIR",
                   help="run directories, or folders of them: write each run's "
                        f"{SPECTRUM_FILE} (theta_0, dense and masked) for ntksap report")
    p.add_argument("--force", action="store_true",
                   help="with --runs: measure again runs that already hold a spectrum")
    p.add_argument("--num-classes", type=int, default=10, help="the model's logits k")
    p.add_argument("--inputs", type=int, default=100, help="Gaussian inputs n (K is nk x nk)")
    p.add_argument("--masks", nargs="*", default=[], metavar="FILE",
                   help="mask files made for this model (ntksap prune --out)")
    p.add_argument("--labels", nargs="*", default=None,
                   help="legend labels of the masks (default: method and sparsity)")
    p.add_argument("--out", default=None,
                   help="folder for the figure and the tables (required without --runs)")
    p.add_argument("--params", choices=PARAMS, default="all",
                   help="differentiate all parameters or the prunable weights only")
    p.add_argument("--memory-budget", default=DEFAULT_BUDGET,
                   help="memory for one kernel computation, e.g. 2GiB")
    p.add_argument("--float32-eigenvalues", action="store_true",
                   help="eigenvalues in float32 (default float64)")
    p.add_argument("--input-shape", type=int, nargs="+", default=None,
                   help="one example's shape (default: the model's)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initialization and the inputs (with --runs: the inputs; "
                        "each run keeps its own initialization)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object, no table")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _check(args: argparse.Namespace) -> None:
    """The numeric flags and --out, before anything is built or written."""
    if args.inputs < 1:
        raise ConfigError(f"--inputs must be >= 1 (the number of Gaussian inputs); got "
                          f"{args.inputs}")
    if args.num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1; got {args.num_classes}")
    if args.input_shape is not None and any(size < 1 for size in args.input_shape):
        raise ConfigError(f"--input-shape needs sizes >= 1, e.g. 3 32 32; got "
                          f"{' '.join(map(str, args.input_shape))}")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out!r} is a file; give a folder (created if missing)")
    args.device = check_device(args.device)  # a missing GPU: one line, before any work


def run(args: argparse.Namespace) -> int:
    budget = parse_bytes(args.memory_budget)
    _check(args)
    if args.runs is not None:
        return _runs(args, budget)
    if args.model is None or args.out is None:
        raise ConfigError("ntksap ntk needs --model and --out (or --runs DIR ... to measure "
                          "run directories)")
    if args.labels is not None and len(args.labels) != len(args.masks):
        raise ConfigError(f"{len(args.labels)} labels for {len(args.masks)} mask files; give "
                          "one label per mask file, or none")
    check_kernel_fits(args.inputs, args.num_classes, 4, budget)  # before drawing anything
    model = build_model(args.model, args.num_classes, seed=args.seed).to(args.device)
    own = model_spec(args.model).input_shape
    shape = model_input_shape(args.model, args.input_shape)
    if args.input_shape:
        check_inputs(model, args.inputs, shape, args.device, expected=own)
    masks: dict[str, Masks] = {}
    for i, path in enumerate(args.masks):
        m = Masks.load(path, model)
        label = args.labels[i] if args.labels else mask_label(m, Path(path).stem)
        while label in masks or label == DENSE_NETWORK:
            label += "'"
        masks[label] = m
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


def _runs(args: argparse.Namespace, budget: int) -> int:
    if args.model or args.masks or args.labels or args.input_shape:
        raise ConfigError("--runs takes each run's model, mask and input shape from its "
                          "directory; drop --model, --masks, --labels and --input-shape")
    directories = find_runs(args.runs)
    results = []
    for directory in tqdm(directories, desc="NTK spectra of runs", unit="run",
                          disable=args.no_progress or len(directories) < 2):
        record = run_spectrum(directory, inputs=args.inputs, input_seed=args.seed,
                              params=args.params, float64=not args.float32_eigenvalues,
                              memory_budget=budget, device=args.device, force=args.force,
                              progress=not args.no_progress)
        results.append({"run_dir": str(directory), "file": str(directory / SPECTRUM_FILE),
                        "skipped": bool(record.get("skipped")), "method": record["method"],
                        "sparsity": record["sparsity"], **record["summary"]})
    if args.json:
        print(json.dumps({"inputs": args.inputs, "input_seed": args.seed,
                          "params": args.params, "runs": results}))
        return 0
    for r in results:
        state = "kept" if r["skipped"] else "wrote"
        print(f"{state} {r['file']}: {r['method']} {100 * r['sparsity']:.1f}%, "
              f"trace {r['trace']:.4g}, log distance to dense "
              f"{r['log_distance_to_dense']:.3g}")
    return 0
