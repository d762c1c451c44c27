"""``ntksap export SOURCE --format state_dict|onnx|torch_prune --out FILE``: a pruned
network to take away. SOURCE is a run directory (its model and data shape from its record;
the weights of its selected epoch, or with ``--weights final`` its last epoch's)
or a mask file (``ntksap prune --out``; then ``--model`` builds theta_0 from the masks'
recorded seed and init)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .. import rundir
from ..errors import ConfigError
from ..export import FORMATS, export
from ..interop import load_pruned
from ..masks import Masks
from ..models import build_model, model_spec
from ..runs.record import read_run
from ..train.checkpoint import load_checkpoint
from .helpformat import DefaultsFormatter, description


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a pruned network as weights, ONNX or "
                       "torch.nn.utils.prune", description=description(__doc__),
                       formatter_class=DefaultsFormatter)
    p.add_argument("source", metavar="SOURCE", help="a run directory or a mask file")
    p.add_argument("--format", required=True, choices=FORMATS, dest="form")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--weights", choices=("best", "final"), default="best",
                   help=f"a run's selected epoch ({rundir.BEST}) or its last epoch")
    p.add_argument("--model", default=None, help="a mask file's model")
    p.add_argument("--num-classes", type=int, default=10, help="with --model")
    p.add_argument("--input-shape", type=int, nargs="+", default=None,
                   help="one example's shape (default: the run's data, or the model's)")


def run(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if source.is_dir():
        model, masks, shape = _from_run(source, args.weights)
    elif source.is_file():
        model, masks, shape = _from_masks(source, args)
    else:
        raise ConfigError(f"no run directory or mask file {source}")
    shape = args.input_shape or shape
    if args.form == "onnx" and not shape:
        raise ConfigError("the ONNX export traces one example: give its shape, e.g. "
                          "--input-shape 3 32 32")
    out = export(model, masks, args.form, args.out, tuple(shape or ()))
    print(f"wrote {out} ({args.form}; {masks.remaining} of {masks.total} weights kept)")
    return 0


def _from_run(directory: Path, weights: str
              ) -> tuple[torch.nn.Module, Masks, tuple[int, ...]]:
    record = read_run(directory)
    settings = record.settings
    if record.problem or not settings.get("model"):
        raise ConfigError(f"{directory} is not a readable run directory"
                          + (f": {record.problem}" if record.problem else ""))
    model = build_model(settings["model"], int(settings["num_classes"]),
                        seed=int(settings.get("seed", 0)))
    best = rundir.best_path(directory)
    if weights == "best" and best.exists():
        state = torch.load(best, map_location="cpu", weights_only=True)
    elif rundir.done_path(directory).exists() or weights == "final":
        state = load_checkpoint(directory / rundir.CHECKPOINT)["model"]
    else:
        raise ConfigError(f"{directory} has no trained weights yet; run it first")
    masks = load_pruned(model, state)
    shape = (record.data.get("input_shape") or record.summary.get("input_shape")
             or model_spec(settings["model"]).input_shape)
    return model, masks, tuple(shape or ())


def _from_masks(path: Path, args: argparse.Namespace
                ) -> tuple[torch.nn.Module, Masks, tuple[int, ...]]:
    if not args.model:
        raise ConfigError("a mask file needs --model (and --num-classes): the network it "
                          "masks")
    masks = Masks.load(path)
    model = build_model(args.model, args.num_classes, seed=int(masks.meta.get("seed", 0)),
                        init=str(masks.meta.get("init", "kaiming")))
    masks.apply(model)
    return model, masks, tuple(model_spec(args.model).input_shape or ())
