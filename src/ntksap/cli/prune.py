"""``ntksap prune``: prune a registered model and write its mask file."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from ..cost import cost, format_count
from ..effective import UntraceableModelError
from ..engine import SCHEDULES, TRANSFORMS, check_sparsity, make_method, prune
from ..errors import ConfigError
from ..init import INITS, KAIMING
from ..masks import Masks, exclude_layers
from ..methods import METHODS
from ..methods.base import PRUNING_BATCH_SIZE
from ..models import MODELS, build_model
from ..models import input_shape as model_input_shape
from ..runs.checks import check_device
from ..selection import SCOPES
from ..train.cliargs import parse_options
from .helpformat import DefaultsFormatter


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model at initialization and save its masks",
                       formatter_class=DefaultsFormatter)
    p.add_argument("--model", required=True, metavar="MODEL",
                   help=f"model: {', '.join(sorted(MODELS))}, timm:NAME, MODULE:FACTORY or "
                        "path/to/file.py:FACTORY (a callable returning an nn.Module)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--method", required=True, metavar="METHOD",
                   help=f"pruning method: {', '.join(METHODS)}")
    p.add_argument("--sparsity", type=float, required=True,
                   help="fraction of prunable weights removed, in [0, 1)")
    p.add_argument("--rounds", type=int, default=None,
                   help="T, rounds of the schedule (default: the method's own)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an option of the method (its dataclass field), e.g. eps=0.001; "
                        "repeatable; the value is read as YAML (0.001, 5, true, none)")
    p.add_argument("--repeats", type=int, default=None,
                   help="NTK-SAP: R draws per round (shorthand for --option repeats=R)")
    p.add_argument("--eps", type=float, default=None,
                   help="NTK-SAP: perturbation std (default 0.01; --option eps=...)")
    p.add_argument("--samples", type=int, default=None,
                   help="NTK-SAP: Gaussian inputs per repeat (default 10 x classes; "
                        "--option samples=...)")
    p.add_argument("--schedule", choices=SCHEDULES, default="exponential")
    p.add_argument("--scope", choices=SCOPES, default="global")
    p.add_argument("--transform", choices=TRANSFORMS, default=None,
                   help="sanity check applied to the result")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave layers matching this name pattern dense (repeatable)")
    p.add_argument("--forbid-layer-collapse", action="store_true",
                   help="fail when a layer is left with no weight")
    p.add_argument("--input-shape", type=int, nargs="+", default=None,
                   help="one example's shape (default: the model's, e.g. 3 32 32)")
    p.add_argument("--dataset", default=None,
                   help="pruning set for the data-needing methods: cifar10, ..., or your own "
                        "(MODULE:FACTORY, path/to/file.py:FACTORY, a registered name)")
    p.add_argument("--data-dir", default=None, help="where the dataset lies")
    p.add_argument("--batch-size", type=int, default=PRUNING_BATCH_SIZE,
                   help="pruning-set batch size (reference: 256); the data-needing methods "
                        "sum their gradients over the batches, NTK-SAP makes one draw per "
                        "batch per repeat")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=sorted(INITS), default=KAIMING,
                   help="how the weights that are scored are drawn (see ntksap.init); "
                        "--transform reinit re-draws them the same way")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="mask file to write")
    p.add_argument("--json", action="store_true", help="print one JSON object, no table")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    options = method_options(args)
    device = _check(args, options)
    model = build_model(args.model, args.num_classes, seed=args.seed,
                        init=args.init).to(device)
    input_shape = model_input_shape(args.model, args.input_shape)
    data = _pruning_set(args) if args.dataset else None
    start = time.perf_counter()
    masks = prune(
        model, args.method, args.sparsity, rounds=args.rounds, schedule=args.schedule,
        scope=args.scope, input_shape=input_shape, data=data, batch_size=args.batch_size,
        seed=args.seed,
        transform=args.transform,
        layer_filter=exclude_layers(*args.exclude) if args.exclude else None,
        allow_layer_collapse=not args.forbid_layer_collapse, device=device,
        progress=not args.no_progress, init=args.init,
        **options)
    seconds = time.perf_counter() - start
    masks.meta.update(model=args.model, num_classes=args.num_classes)
    if args.out:
        masks.save(args.out)
    effective, why = _effective(masks, model, input_shape)
    counts = cost(model, masks, input_shape, effective)
    flops = {r["name"]: r for r in counts["layers"]}
    if args.json:
        on_path = {r["name"]: r["density"] for r in effective.layers()} if effective else {}
        print(json.dumps({
            "method": args.method, "model": args.model, "sparsity": args.sparsity,
            "rounds": masks.meta["rounds"], "seed": args.seed, "total": masks.total,
            "remaining": masks.remaining, "density": masks.density, "seconds": seconds,
            "effective_sparsity": effective.sparsity if effective else None,
            "out": args.out, "collapsed_layers": masks.meta["collapsed_layers"],
            "start_weights": masks.meta["start_weights"],
            **{k: masks.meta.get(k) for k in METHODS[args.method].reports},
            "params": counts["params"], "flops": counts["flops"],
            "layers": [{"name": r["name"], "shape": r["shape"], "density": r["density"],
                        "effective_density": on_path.get(r["name"]),
                        "remaining": r["remaining"],
                        "flops": {k: flops[r["name"]][k] for k in ("dense", "sparse",
                                                                   "effective")}}
                       for r in masks.layers()],
        }))
    else:
        print(masks.table(effective, {n: r["sparse"] for n, r in flops.items()}))
        print(f"\n{args.method}: kept {masks.remaining} of {masks.total} weights "
              f"(sparsity {masks.sparsity:.4f}"
              + (f", effective sparsity {effective.sparsity:.4f}" if effective else "")
              + f") in {seconds:.1f} s" + (f"; masks written to {args.out}" if args.out else ""))
        print("effective: kept weights on no input-output path count as pruned" if effective
              else f"effective sparsity not computed: {why}")
        p, f = counts["params"], counts["flops"]
        print(f"parameters: dense {format_count(p['dense'])}, sparse {format_count(p['sparse'])}"
              f", effective {format_count(p['effective'])}; multiply-adds per example (Conv/"
              f"Linear): dense {format_count(f['dense'])}, sparse {format_count(f['sparse'])}"
              f", effective {format_count(f['effective'])}")
    return 0


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method's options from ``--option NAME=VALUE`` and the shorthand flags
    (``--repeats``, ``--eps``, ``--samples``) that are given."""
    return parse_options(args.option, repeats=args.repeats, eps=args.eps, samples=args.samples)


def _effective(masks: Masks, model: torch.nn.Module, input_shape: tuple[int, ...]
               ) -> tuple[Masks | None, str]:
    """The masks' effective part (kept weights on some input-output path), or None and why
    the model's paths cannot be followed."""
    try:
        return masks.effective(model, input_shape), ""
    except UntraceableModelError as err:
        return None, str(err)


def _check(args: argparse.Namespace, options: dict[str, Any]) -> torch.device:
    """Refuse bad flags before any work: the device, the class count, the method, its
    options, the sparsity and rounds, and an --out that is a folder. Returns the device."""
    device = check_device(args.device)
    if args.num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1 (the model's logits); got "
                          f"{args.num_classes}")
    make_method(args.method, options)  # unknown method or option, option out of range
    check_sparsity(args.sparsity)
    if args.rounds is not None and args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1 (T, the pruning rounds); got {args.rounds}; "
                          "leave it out for the method's own")
    if args.out:
        _check_writable(Path(args.out))
    return device


def _check_writable(out: Path) -> None:
    """``out`` must be a file path whose folder exists or can be made, and is writable."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the mask file's path, e.g. "
                          f"--out {out / rundir.MASKS}")
    folder = out.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write --out {out}: {folder} is not a folder you may write "
                          "in; choose another path")


def _pruning_set(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import load_dataset

    bundle = load_dataset(args.dataset, args.data_dir)
    return bundle.pruning_set(seed=args.seed)
