"""``ntksap run``: one run of any kind (dense, prune at initialization with any method, or
IMP), through its runner (:mod:`ntksap.runners`): prune, train with a preset's settings, report.

Under ``torchrun --nproc-per-node N -m ntksap run ...`` it trains with DistributedDataParallel
(gloo on CPU, NCCL on GPU); the mask is computed once, on rank 0, and broadcast.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist

from .. import rundir
from ..engine import TRANSFORMS
from ..errors import ConfigError
from ..init import INITS
from ..methods import METHODS, method_class
from ..names import DENSE, IMP
from ..runners import runner_for_method
from ..runs.checks import check_device
from ..runs.config import RunConfig, plain_fields
from ..selection import SCOPES
from ..train import CUSTOM, PRESETS, TrainConfig
from ..train.cliargs import (
    add_dataclass_args,
    dataclass_from_args,
    dataclass_overrides,
    parse_options,
)
from ..train.config import LoggingConfig
from .helpformat import description


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="prune, train and evaluate one configuration",
                       description=description(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, metavar="PRESET",
                   help=f"a paper's setting: {', '.join(n for n in PRESETS if n != CUSTOM)}; "
                        "without it, the custom setting: your --model on your --dataset with "
                        "a generic recipe (30 epochs, SGD lr 0.1 cosine)")
    p.add_argument("--method", required=True, metavar="METHOD",
                   help=f"{DENSE} (no pruning), {IMP} (iterative magnitude pruning with "
                        f"rewinding, round after round) or one of {', '.join(METHODS)}")
    p.add_argument("--sparsity", type=float, default=None,
                   help="fraction of prunable weights removed, in [0, 1); required by every "
                   f"method but {DENSE}")
    p.add_argument("--seed", type=int, default=0, help="seeds the init, the mask and the data")
    p.add_argument("--data-dir", default=None, help="where the dataset lies")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download CIFAR-10/100 or MNIST")
    p.add_argument("--out-dir", default="runs", help="runs are written under this folder")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    g = p.add_argument_group("overrides of the preset")
    g.add_argument("--dataset", default=None,
                   help="folder or synthetic instead of the preset's; without --preset also "
                        "a built-in one, a registered name, MODULE:FACTORY or "
                        "path/to/file.py:FACTORY (a callable returning (train, test) torch "
                        "Datasets of (tensor, label))")
    g.add_argument("--model", default=None,
                   help="another model: a registered name, timm:NAME, MODULE:FACTORY or "
                        "path/to/file.py:FACTORY (a callable returning an nn.Module, given "
                        "num_classes if it takes it)")
    g.add_argument("--num-classes", type=int, default=None,
                   help="with a preset, must equal its (a check); without one, the classes "
                        "of synthetic or folder data (default: read from the data)")
    g.add_argument("--input-shape", type=int, nargs="+", default=None, metavar="N",
                   help="the synthetic data's item shape, e.g. 3 32 32 (default: the "
                        "preset's data's; 3 32 32 without a preset)")
    g.add_argument("--rounds", type=int, default=None,
                   help="T >= 1 (default: preset / method; imp: one round per step of "
                        "density x 0.64 that the sparsity needs)")
    g.add_argument("--rewind-epoch", type=int, default=None, metavar="K",
                   help="imp only: rewind to the dense weights after K epochs (default 0: "
                        "to theta_0)")
    g.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an option of the method (its dataclass field), e.g. eps=0.001; "
                        "repeatable; the value is read as YAML (0.001, 5, true, none)")
    g.add_argument("--repeats", type=int, default=None,
                   help="NTK-SAP's R >= 1 (default: preset; --option repeats=R)")
    g.add_argument("--eps", type=float, default=None,
                   help="NTK-SAP's perturbation std (default 0.01; --option eps=...)")
    g.add_argument("--samples", type=int, default=None,
                   help="NTK-SAP's Gaussian inputs per repeat (--option samples=...)")
    g.add_argument("--scope", choices=SCOPES, default="global")
    g.add_argument("--transform", choices=TRANSFORMS, default=None)
    g.add_argument("--limit-per-class", type=int, default=None,
                   help="use only the first N >= 1 images of each class (quick runs)")
    g.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="fraction of the training set held out for validation, in [0, 1) "
                        "(default: the preset's; 0.1 for the MNIST presets, else 0)")
    g.add_argument("--init", choices=sorted(INITS), default=None,
                   help="how theta_0 is drawn: kaiming (default, every preset's) or "
                        "variance-scaling (the SNIP code's; see ntksap.init)")
    g.add_argument("--shared-stream", action="store_true",
                   help="train on the shared data stream (order and augmentation of seed 0, "
                        "the same for every run) instead of this run's seed's own")
    add_dataclass_args(g, RunConfig, suppress=True,
                       only=[f.name for f in plain_fields()])  # run fields with no flag above
    add_dataclass_args(p.add_argument_group("training (default: the preset's)"), TrainConfig,
                       suppress=True)
    add_dataclass_args(p.add_argument_group(
        f"logging (recorded in {rundir.CONFIG}, not part of the run directory's name)"),
        LoggingConfig)


def run(args: argparse.Namespace) -> int:
    if args.method not in (DENSE, IMP):
        method_class(args.method)  # unknown: the error lists the methods
    if args.rewind_epoch is not None and args.method != IMP:
        raise ConfigError(f"--rewind-epoch is IMP's; drop it, or use --method {IMP}")
    if args.method != DENSE and args.sparsity is None:
        raise ConfigError(f"--sparsity is required with --method {args.method}: the fraction "
                          "of weights removed, e.g. --sparsity 0.9 (use --method dense to "
                          "train without pruning)")
    if args.method == DENSE and args.sparsity:
        raise ConfigError(f"--method dense prunes nothing, but --sparsity {args.sparsity} was "
                          "given; drop --sparsity, or name a pruning method")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _device(args.device, distributed)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    runner = runner_for_method(args.method)
    logging = dataclass_from_args(LoggingConfig, args)
    options = dict(out_dir=args.out_dir, data_dir=args.data_dir, download=args.download,
                   device=device, progress=not args.no_progress)
    extra: dict = {}
    if runner.name == IMP:  # one process, its run directory its only record
        if distributed or logging != LoggingConfig():
            raise ConfigError("--method imp trains in one process and logs to its run "
                              "directory only: drop torchrun, --tensorboard and --wandb")
        extra = dict(rewind_epoch=args.rewind_epoch or 0, rounds=args.rounds or 0)
    else:
        options.update(distributed=distributed, logging=logging)
        extra = dict(rounds=args.rounds)
    try:
        config = runner.config(
            args.preset, args.method, args.sparsity or 0.0, seed=args.seed,
            dataset=args.dataset, model=args.model, num_classes=args.num_classes,
            repeats=args.repeats,
            method_options=parse_options(args.option, eps=args.eps, samples=args.samples),
            scope=args.scope, transform=args.transform,
            limit_per_class=args.limit_per_class, holdout=args.holdout,
            shared_stream=args.shared_stream, init=args.init, input_shape=args.input_shape,
            train_overrides=dataclass_overrides(TrainConfig, args), **extra,
            **_plain_fields(args))
        summary = runner.run(config, **options)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    if distributed and int(os.environ.get("RANK", "0")) != 0:
        return 0
    _print(args, summary)
    return 0


def _plain_fields(args: argparse.Namespace) -> dict:
    """The values of the run fields whose flags were made from their dataclass field."""
    names = {f.name for f in plain_fields()}
    return {k: v for k, v in dataclass_overrides(RunConfig, args).items() if k in names}


def _print(args: argparse.Namespace, summary: dict) -> None:
    if args.json:
        print(json.dumps(summary))
    else:
        state = "already finished" if summary.get("already_done") else "finished"
        print(f"{state}: {summary['run_dir']}\n  final test accuracy "
              f"{summary['final_test_acc']:.4f}, best {summary['best_test_acc']:.4f} "
              f"(epoch {summary['best_epoch']}), sparsity {summary['sparsity']}"
              + (f" (effective {summary['effective_sparsity']:.4f})"
                 if summary.get("effective_sparsity") is not None else "")
              + (f", validation accuracy {summary['final_val_acc']:.4f}"
                 if summary.get("final_val_acc") is not None else "")
              + f", {summary['seconds']:.0f} s")


def _device(name: str, distributed: bool) -> torch.device:
    device = check_device(name)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device
