"""Training throughput of ResNet-20 on CIFAR-10-shaped random data: dense vs masked.

The masked model carries random masks at ``--sparsity`` (98.2% by default) as weight
parametrizations, exactly as ``ntksap.train.train`` trains it. Both models run the same
training step (``ntksap.train.loop.train_one_epoch``, SGD momentum 0.9, wd 1e-4) after warmup
steps, in interleaved repetitions (dense, masked, masked, dense, ...) so that drifts in machine
speed hit both alike. Reported: each model's best and median images/s over the repetitions and
``ratio``, the median over repetitions of masked/dense images/s of adjacent runs (robust to
other processes sharing the machine); ``*_images_per_s`` in ``--json`` are the best ones.

    python benchmarks/train_speed.py --steps 20 --device cpu [--channels-last] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from tqdm import tqdm

from ntksap.masks import Masks
from ntksap.models import build_model
from ntksap.train import TrainConfig, build_optimizer
from ntksap.train.loop import train_one_epoch


def build(masked: bool, args: argparse.Namespace, device: torch.device) -> nn.Module:
    model = build_model("resnet20", num_classes=10, seed=0)
    if masked:
        g = torch.Generator().manual_seed(1)
        Masks({name: torch.rand(m.shape, generator=g) > args.sparsity
               for name, m in Masks.of(model).items()}).apply(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
              batches: list, device: torch.device) -> float:
    """Seconds for ``len(batches)`` training steps (ends with a device sync via .item())."""
    began = time.perf_counter()
    with tqdm(total=len(batches), disable=True) as bar:
        train_one_epoch(model, batches, optimizer, config, device, bar)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repetition")
    parser.add_argument("--reps", type=int, default=6, help="repetitions per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.982)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="bf16 autocast (CUDA only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=1e-4, amp=args.amp,
                         channels_last=args.channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
    runs = {}
    for name in ("dense", "masked"):
        model = build(name == "masked", args, device)
        optimizer = build_optimizer(model, config)
        run_steps(model, optimizer, config, [(x, y)] * args.warmup, device)
        runs[name] = (model, optimizer, [])
    for rep in range(args.reps):
        for name in (("dense", "masked") if rep % 2 == 0 else ("masked", "dense")):
            model, optimizer, times = runs[name]
            times.append(run_steps(model, optimizer, config, [(x, y)] * args.steps, device))
    speed = {name: [args.steps * args.batch_size / t for t in times]
             for name, (_, _, times) in runs.items()}
    paired = [m / d for d, m in zip(speed["dense"], speed["masked"], strict=True)]
    out = {"dense_images_per_s": max(speed["dense"]),
           "masked_images_per_s": max(speed["masked"]),
           "ratio": statistics.median(paired),
           "dense_median_images_per_s": statistics.median(speed["dense"]),
           "masked_median_images_per_s": statistics.median(speed["masked"])}
    if args.json:
        print(json.dumps(out))
        return out
    print(f"ResNet-20, batch {args.batch_size}, device {device}, channels_last "
          f"{args.channels_last}, amp {args.amp}, {args.reps} x {args.steps} steps per model, "
          f"masked sparsity {args.sparsity}")
    print(f"{'model':<8} {'best img/s':>11} {'median img/s':>13} {'min img/s':>10} "
          f"{'best ms/step':>13}")
    for name, values in speed.items():
        print(f"{name:<8} {max(values):>11.1f} {statistics.median(values):>13.1f} "
              f"{min(values):>10.1f} {1000 * args.batch_size / max(values):>13.1f}")
    print(f"masked / dense: {out['ratio']:.3f} (median over {args.reps} adjacent pairs), "
          f"best/best {out['masked_images_per_s'] / out['dense_images_per_s']:.3f}")
    return out

if __name__ == "__main__":
    main()
