"""Training speed of ResNet-20 on CIFAR-10-shaped data: precision x memory format x compile.

Each variant trains the same ResNet-20, masked at ``--sparsity`` (98.2 % by default, random
masks as weight parametrizations, as ``ntksap run`` trains a pruned network), through the
training loop's own step (``ntksap.train.loop.train_one_epoch``: SGD momentum 0.9, weight
decay 1e-4) fed by the real in-memory training loader (random crop with 4-pixel padding and
flip, on synthetic CIFAR-shaped images), followed by the loop's evaluation of one test image
per five training images (CIFAR-10's proportion): one epoch in miniature. Variants:

- ``fp32-nchw`` (the baseline: float32, eager, NCHW, every preset's default),
  ``fp32-cl`` (channels_last), ``bf16-nchw``, ``bf16-cl`` (``--amp``: bf16 autocast, on CUDA
  or on a CPU with native bf16; skipped, with the reason, elsewhere);
- with ``--compile``: the same under ``torch.compile`` (inductor), suffixed ``+compile``; its
  one-off compile time is measured apart (``compile_seconds``) and excluded from images/s.

All variants run in interleaved repetitions (the order rotates every repetition), so drifts in
machine speed hit all alike. Reported per variant: best and median images/s (training images
per second of epoch time) and ``ratio``, the median over repetitions of its images/s over the
baseline's in the same repetition. ``--json`` prints one object; its key
``resnet20_bf16_ratio`` is the fastest bf16 variant's ratio (None where bf16 is refused) and
``fastest`` names the fastest variant overall. One torch thread by default (``--threads``):
the setting ntksap recommends on a CPU, one run per core.

    python benchmarks/train_speed.py --device cpu [--compile] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from ntksap.data import load_dataset
from ntksap.errors import ConfigError
from ntksap.masks import Masks
from ntksap.models import build_model
from ntksap.train import TrainConfig, build_optimizer
from ntksap.train.loop import evaluate, train_one_epoch
from ntksap.train.precision import check_amp, cpu_bf16_isa

BASELINE = "fp32-nchw"


@dataclass
class Variant:
    """One way of training: precision, memory format, compiled or not."""

    amp: bool
    channels_last: bool
    compiled: bool

    @property
    def name(self) -> str:
        return (f"{'bf16' if self.amp else 'fp32'}-{'cl' if self.channels_last else 'nchw'}"
                + ("+compile" if self.compiled else ""))


@dataclass
class Trainer:
    """A variant's model, optimizer and loaders, ready to time."""

    variant: Variant
    step: Callable[[int], float]  # seconds for an epoch of n training steps
    compile_seconds: float | None = None


def variants(compile_: bool) -> list[Variant]:
    eager = [Variant(amp, cl, False) for amp, cl in itertools.product((False, True), repeat=2)]
    return eager + ([Variant(v.amp, v.channels_last, True) for v in eager] if compile_ else [])


def masked_resnet20(sparsity: float) -> nn.Module:
    model = build_model("resnet20", num_classes=10, seed=0)
    g = torch.Generator().manual_seed(1)
    Masks({name: torch.rand(m.shape, generator=g) > sparsity
           for name, m in Masks.of(model).items()}).apply(model)
    return model


def make_trainer(variant: Variant, args: argparse.Namespace, device: torch.device,
                 bundle) -> Trainer:
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=1e-4, amp=variant.amp,
                         channels_last=variant.channels_last)
    model = masked_resnet20(args.sparsity).to(device)
    if variant.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    net = torch.compile(model) if variant.compiled else model
    train = bundle.train_loader(args.batch_size, device, seed=0,
                                channels_last=variant.channels_last)
    test = bundle.test_loader(args.batch_size, device, channels_last=variant.channels_last)

    def epoch(steps: int) -> float:
        _sync(device)
        began = time.perf_counter()
        with tqdm(total=steps, disable=True) as bar:
            train_one_epoch(net, _take(train, steps), optimizer, config, device, bar)
        evaluate(net, _take(test, max(1, steps // 5)), config, device)
        _sync(device)
        return time.perf_counter() - began

    trainer = Trainer(variant, epoch)
    began = time.perf_counter()
    epoch(args.warmup)  # compiles (train and eval graphs) when compiled
    if variant.compiled:
        trainer.compile_seconds = time.perf_counter() - began
    return trainer


def _take(loader, n: int) -> Iterator:
    """The first ``n`` batches of ``loader`` read again and again, lazily: each batch is
    drawn (and augmented) inside the timed epoch, as in a run."""
    yield from itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), n)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per variant")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed steps per variant first (compiles compiled variants)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.982)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="also time each variant under torch.compile")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads; 0: torch's default (every core). Default "
                             "1: on a CPU, ntksap recommends one thread per run and one run "
                             "per core (ResNet-20's small convolutions scale poorly over "
                             "threads)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    problems = [f"--{name.replace('_', '-')} must be >= 1"
                for name in ("steps", "reps", "warmup", "batch_size") if getattr(args, name) < 1]
    if args.threads < 0:
        problems.append("--threads must be >= 0 (0: torch's default)")
    if not 0 <= args.sparsity < 1:
        problems.append("--sparsity must be in [0, 1)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append("--device cuda: no CUDA device here; use --device cpu")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # a few batches per pass, so that the loader reshuffles and augments as in a run
    bundle = load_dataset("synthetic", limit_per_class=max(20, args.batch_size // 2),
                          progress=False)
    trainers, skipped = [], {}
    for variant in variants(args.compile):
        try:
            check_amp(TrainConfig(amp=variant.amp), device)
        except ConfigError as err:
            skipped[variant.name] = str(err)
            continue
        trainers.append(make_trainer(variant, args, device, bundle))
    times: dict[str, list[float]] = {t.variant.name: [] for t in trainers}
    for rep in range(args.reps):
        shift = rep % len(trainers)
        for trainer in trainers[shift:] + trainers[:shift]:
            times[trainer.variant.name].append(trainer.step(args.steps))
    out = summarize(args, device, trainers, times, skipped)
    if args.json:
        print(json.dumps(out))
    else:
        show(out)
    return out


def summarize(args: argparse.Namespace, device: torch.device, trainers: list[Trainer],
              times: dict[str, list[float]], skipped: dict[str, str]) -> dict:
    speed = {name: [args.steps * args.batch_size / t for t in ts] for name, ts in times.items()}
    rows = {}
    for trainer in trainers:
        name = trainer.variant.name
        paired = [v / b for v, b in zip(speed[name], speed[BASELINE], strict=True)]
        rows[name] = {"best_images_per_s": max(speed[name]),
                      "median_images_per_s": statistics.median(speed[name]),
                      "ratio": statistics.median(paired),
                      "compile_seconds": trainer.compile_seconds}
    bf16 = [name for name in rows if name.startswith("bf16")]
    fastest_bf16 = max(bf16, key=lambda n: rows[n]["ratio"]) if bf16 else None
    return {
        "device": str(device), "threads": torch.get_num_threads(),
        "cpu_bf16_isa": cpu_bf16_isa() if device.type == "cpu" else None,
        "torch": torch.__version__, "batch_size": args.batch_size, "steps": args.steps,
        "reps": args.reps, "sparsity": args.sparsity, "baseline": BASELINE,
        "variants": rows, "skipped": skipped,
        "fastest": max(rows, key=lambda n: rows[n]["ratio"]),
        "fastest_bf16": fastest_bf16,
        "resnet20_bf16_ratio": rows[fastest_bf16]["ratio"] if fastest_bf16 else None,
    }


def show(out: dict) -> None:
    print(f"ResNet-20 masked at {out['sparsity']}, batch {out['batch_size']}, device "
          f"{out['device']} ({out['threads']} threads, bf16 ISA {out['cpu_bf16_isa']}), "
          f"torch {out['torch']}, {out['reps']} x {out['steps']} steps per variant")
    print(f"{'variant':<18} {'best img/s':>11} {'median img/s':>13} {'ratio':>7} "
          f"{'compile s':>10}")
    for name, row in out["variants"].items():
        compile_s = f"{row['compile_seconds']:.1f}" if row["compile_seconds"] else ""
        print(f"{name:<18} {row['best_images_per_s']:>11.1f} "
              f"{row['median_images_per_s']:>13.1f} {row['ratio']:>7.3f} {compile_s:>10}")
    for name, why in out["skipped"].items():
        print(f"{name}: skipped: {why}")
    print(f"ratio: median over repetitions of images/s over {out['baseline']}'s; fastest "
          f"{out['fastest']}; resnet20_bf16_ratio {out['resnet20_bf16_ratio']}")


if __name__ == "__main__":
    main()
