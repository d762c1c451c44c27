"""``ntksap compare-masks A.pt B.pt ...``: how much the masks agree (Jaccard overlap of the kept
weights per layer and in total, for every pair), their per-layer densities side by side, the
layer-wise shape of each (density against depth) and, with --model, the NTK spectrum distance
of each masked network to the dense one, in one table and one figure.

The NTK part runs only when --model is given: the model is built from the seed and the
initialization scheme the mask files record (those ``ntksap prune --seed/--init`` scored;
masks of different seeds are refused, or --seed builds every network from one seed), each
mask applied to a copy of it, on --inputs Gaussian inputs drawn from that seed (as
``ntksap ntk``). Each pair's overlap is shown beside the overlap two random masks with its
per-layer kept counts would have (the overlap expected by chance). --out DIR writes
masks.png, masks.md, masks.csv and pairs.csv; --json prints one object with ``masks``,
``pairs`` (each with ``a``, ``b``, ``jaccard``, ``random_jaccard`` and per-layer ``layers``
rows) and ``layers``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..analysis import check_same_layers, compare_masks, write_comparison
from ..errors import ConfigError
from ..init import KAIMING
from ..masks import Masks
from ..models import MODELS, build_model
from ..models import input_shape as model_input_shape
from ..ntk import mask_label
from ..runs.checks import check_device

DEFAULT_INPUTS = 100


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare-masks", help="overlap, per-layer density and NTK distance of "
                       "several masks", description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("masks", nargs="+", metavar="MASK", help="mask files (ntksap prune --out), "
                   "at least two, made for one model")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one label per mask file (default: method and sparsity)")
    p.add_argument("--model", metavar="MODEL", default=None,
                   help="the masks' model, for the NTK spectrum distance to dense (left out: "
                        f"no NTK): {', '.join(sorted(MODELS))}, timm:NAME, MODULE:FACTORY or "
                        "path/to/file.py:FACTORY")
    p.add_argument("--num-classes", type=int, default=10, help="with --model")
    p.add_argument("--seed", type=int, default=None,
                   help="with --model: the initialization's seed and the Gaussian inputs' "
                        "(default: the seed the mask files record; they must agree)")
    p.add_argument("--inputs", type=int, default=None,
                   help=f"with --model: Gaussian inputs of the NTK (default {DEFAULT_INPUTS})")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for masks.png, masks.md, masks.csv and pairs.csv")
    p.add_argument("--json", action="store_true", help="print one JSON object, no table")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    _check(args)
    masks: dict[str, Masks] = {}
    for i, path in enumerate(args.masks):
        m = Masks.load(path)
        label = args.labels[i] if args.labels else mask_label(m, Path(path).stem)
        while label in masks:
            label += "'"
        masks[label] = m
    check_same_layers(masks)
    model = inputs = None
    if args.model:
        seed = args.seed if args.seed is not None else recorded(masks, "seed", 0)
        init = recorded(masks, "init", KAIMING)
        model = build_model(args.model, args.num_classes, seed=seed, init=init).to(args.device)
        for m in masks.values():
            m.check(model)
        shape = model_input_shape(args.model)
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.randn((args.inputs or DEFAULT_INPUTS, *shape),
                             generator=generator).to(args.device)
    comparison = compare_masks(masks, model=model, inputs=inputs,
                               progress=not args.no_progress)
    if args.out:
        write_comparison(comparison, args.out, title=f"{len(masks)} masks"
                         + (f" of {args.model}" if args.model else ""))
    if args.json:
        print(json.dumps(comparison.to_json()))
        return 0
    _print(comparison)
    if args.out:
        print(f"\nfigure {comparison.files['figure']}, tables {comparison.files['table_md']}, "
              f"{comparison.files['layers_csv']} and {comparison.files['pairs_csv']}")
    return 0


def recorded(masks: dict[str, Masks], key: str, default: Any) -> Any:
    """The ``key`` every mask file records (``seed``, ``init``: the weights they were scored
    on, which their NTKs are compared on); ``default`` when none records it; a
    :class:`ConfigError` when they differ."""
    values = {label: m.meta[key] for label, m in masks.items() if key in m.meta}
    if len(set(values.values())) > 1:
        listed = ", ".join(f"{label}: {value}" for label, value in values.items())
        fix = ("give --seed S to build every network from seed S" if key == "seed" else
               "compare masks scored on one initialization scheme")
        raise ConfigError(f"the masks were scored on different initializations ({key} "
                          f"{listed}); compare masks of one {key}, or {fix}")
    return next(iter(values.values()), default)


def _check(args: argparse.Namespace) -> None:
    """Refuse bad flags before reading or writing anything."""
    if len(args.masks) < 2:
        raise ConfigError("compare-masks needs at least two mask files")
    if args.labels is not None and len(args.labels) != len(args.masks):
        raise ConfigError(f"{len(args.labels)} labels for {len(args.masks)} mask files; give "
                          "one label per mask file, or none")
    if args.inputs is not None and not args.model:
        raise ConfigError("--inputs sets the NTK's inputs, which need --model (the masks' "
                          "model); give --model or drop --inputs")
    if args.inputs is not None and args.inputs < 1:
        raise ConfigError(f"--inputs must be >= 1; got {args.inputs}")
    if args.num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1; got {args.num_classes}")
    args.device = check_device(args.device)  # a missing GPU: one line, before any work
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a folder")
    for path in args.masks:
        if not Path(path).is_file():
            raise ConfigError(f"mask file {path!r} does not exist; write one with "
                              "ntksap prune --out")


def _print(comparison) -> None:
    labels, matrix = comparison.labels, comparison.matrix()
    width = max(8, *(len(x) for x in labels))
    print("overlap of kept weights (Jaccard):")
    print(" " * width + "".join(f"  {x:>{width}}" for x in labels))
    for i, label in enumerate(labels):
        print(f"{label:>{width}}" + "".join(f"  {v:>{width}.3f}" for v in matrix[i]))
    print("\neach pair beside two random masks with its per-layer kept counts:")
    for pair in comparison.pairs:
        print(f"  {pair['a']} ~ {pair['b']}: {pair['jaccard']:.3f} (random masks "
              f"{pair['random_jaccard']:.3f})")
    print("\nmasks:")
    for row in comparison.summary():
        ntk = row.get("ntk_log_distance_to_dense")
        print(f"  {row['mask']:<{width}} sparsity {row['sparsity']:.4f}, kept {row['kept']}"
              + (f", NTK log distance to dense {ntk:.3g}" if ntk is not None else ""))
