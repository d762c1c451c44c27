"""Training throughput of M separate pruned networks vs one fused pack of the same M (issue 11).

Both sides train the same M networks (random masks at ``--sparsity``, 98.2 % by default, a
different mask and initialization per network) on random data already on the device, with
the preset's batch size per network (ResNet-20: 128, 3x32x32; LeNet-300-100: 100, 1x28x28),
SGD lr 0.1, momentum 0.9, the preset's weight decay:

- separate: each network is its own masked model (``masks.apply(model)``) with its own SGD,
  trained by the project's loop (``ntksap.train.loop.train_one_epoch``: the same ops and
  bookkeeping as ``ntksap run``, no host sync per step), the networks one after another;
- pack: ``ntksap.pack.fuse`` of the same unmasked networks, masked with their stacked masks;
  one step is ``split_logits(fused(stack_inputs(xs)), M)``, the loss the sum over networks of
  each network's mean cross-entropy, one SGD over the fused parameters, with the loop's
  bookkeeping (per-network loss sums and correct counts, no host sync per step).

Throughput is images per second summed over the networks (M x steps x batch / seconds). After
warmup steps, the two sides run in interleaved repetitions (separate, pack, pack, separate, ...)
so that machine noise hits both alike. Reported: each side's best repetition (img/s) and the
ratio pack / separate as the median over repetitions of adjacent pairs. On CUDA both sides use
bf16 autocast and (ResNet-20) channels_last unless ``--no-amp`` / ``--no-channels-last``; on CPU
both use fp32 and NCHW (the presets' defaults) unless asked. Neither side uses torch.compile or
CUDA graphs (the project's loop does not).

``projected_table_minutes`` (CUDA only, null on CPU): 63 runs x 160 epochs x 50,000 images at
the best ResNet-20 pack throughput among the measured M. ``--profile`` prints the slowest
kernels of one fused ResNet-20 step at the largest M (on CPU: the slowest operators).

    python benchmarks/pack_speed.py [--device cpu|cuda] [--sizes 1,4,8] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ntksap.masks import Masks
from ntksap.models import build_model
from ntksap.pack.fuse import fuse, split_logits, stack_inputs, stack_masks
from ntksap.train import TrainConfig, build_optimizer
from ntksap.train.loop import train_one_epoch

TABLE_IMAGES = 63 * 160 * 50_000  # the CIFAR-10 ResNet-20 table, one seed
CUDA_SIZES = (1, 4, 8, 16, 32, 63)
CPU_SIZES = (1, 4, 8)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One preset's network and step: model name, one example's shape, batch per network."""

    model: str
    input_shape: tuple[int, ...]
    batch_size: int
    weight_decay: float
    steps: int  # timed steps per repetition
    channels_last: bool


@dataclasses.dataclass
class Side:
    """One side of the comparison: its models and optimizers, and its images/s per rep."""

    name: str
    nets: list[tuple[nn.Module, torch.optim.Optimizer]]
    speeds: list[float] = dataclasses.field(default_factory=list)


def networks(setting: Setting, size: int, sparsity: float) -> tuple[list[nn.Module], list[Masks]]:
    """``size`` unmasked networks (initialization seed m) and their random masks (seed m)."""
    models = [build_model(setting.model, 10, seed=m) for m in range(size)]
    return models, [random_masks(model, sparsity, seed=m) for m, model in enumerate(models)]


def random_masks(model: nn.Module, sparsity: float, seed: int) -> Masks:
    """Random pruning at ``sparsity`` over all prunable layers (one global draw, exactly
    ``round(sparsity * N)`` weights removed), as ``ntksap.prune(model, "random", ...)`` prunes,
    without its checks (a forward pass per call, too slow for 63 networks in a smoke test)."""
    layers = Masks.of(model)
    scores = torch.rand(layers.total, generator=torch.Generator().manual_seed(seed))
    keep = torch.zeros(layers.total, dtype=torch.bool)
    keep[scores.topk(layers.total - round(sparsity * layers.total)).indices] = True
    blocks = keep.split([m.numel() for m in layers.values()])
    return Masks({name: block.reshape(m.shape) for (name, m), block in zip(
        layers.items(), blocks, strict=True)})


def place(model: nn.Module, masks: Masks, config: TrainConfig, device: torch.device
          ) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Mask ``model``, move it to ``device`` as the training loop does; its SGD."""
    masks.apply(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, build_optimizer(model, config)


def separate_side(models: list[nn.Module], masks: list[Masks], config: TrainConfig,
                  device: torch.device) -> Side:
    return Side("separate", [place(copy.deepcopy(model), mask, config, device)
                             for model, mask in zip(models, masks, strict=True)])


def pack_side(models: list[nn.Module], masks: list[Masks], config: TrainConfig,
              device: torch.device) -> Side:
    fused = fuse(models)
    return Side("pack", [place(fused, stack_masks(masks, fused), config, device)])


def autocast(config: TrainConfig, device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp
                          and device.type == "cuda")


def pack_steps(fused: nn.Module, optimizer: torch.optim.Optimizer, xs: list[torch.Tensor],
               ys: list[torch.Tensor], steps: int, config: TrainConfig,
               device: torch.device) -> list[float]:
    """``steps`` training steps of the pack on the M batches ``xs, ys``, with the loop's
    bookkeeping; the per-network loss sums (one host sync at the end, as the loop)."""
    fused.train()
    size = len(xs)
    loss_sum = torch.zeros(size, device=device)
    correct = torch.zeros(size, device=device, dtype=torch.long)
    for _ in range(steps):
        x = stack_inputs(xs)
        if config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.stack(ys, 1)  # [B, M]
        with autocast(config, device):
            logits = split_logits(fused(x), size)  # [B, M, K]
            losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0)
            loss = losses.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += losses.detach().float() * y.shape[0]
        correct += (logits.detach().argmax(2) == y).sum(0)
    return loss_sum.tolist() + correct.float().tolist()


def run_side(side: Side, xs: list[torch.Tensor], ys: list[torch.Tensor], steps: int,
             config: TrainConfig, device: torch.device) -> float:
    """Seconds for ``steps`` steps of every network of ``side`` (ends with a host sync)."""
    began = time.perf_counter()
    if side.name == "pack":
        fused, optimizer = side.nets[0]
        pack_steps(fused, optimizer, xs, ys, steps, config, device)
    else:
        for (model, optimizer), x, y in zip(side.nets, xs, ys, strict=True):
            with tqdm(total=steps, disable=True) as bar:
                train_one_epoch(model, [(x, y)] * steps, optimizer, config, device, bar)
    return time.perf_counter() - began


def random_batches(setting: Setting, size: int, device: torch.device
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One random batch per network, on ``device`` (network m's own images and labels)."""
    g = torch.Generator().manual_seed(1234)
    shape = (setting.batch_size, *setting.input_shape)
    xs = [torch.randn(shape, generator=g).to(device) for _ in range(size)]
    ys = [torch.randint(0, 10, (setting.batch_size,), generator=g).to(device)
          for _ in range(size)]
    return xs, ys


def measure(setting: Setting, size: int, args: argparse.Namespace, device: torch.device,
            profile: bool = False) -> dict[str, Any]:
    """Both sides for ``size`` networks: best img/s of each and the median paired ratio
    (with ``profile``, also the profile of one pack step)."""
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=setting.weight_decay,
                         amp=args.amp, channels_last=setting.channels_last)
    models, masks = networks(setting, size, args.sparsity)
    sides = [separate_side(models, masks, config, device), pack_side(models, masks, config,
                                                                     device)]
    xs, ys = random_batches(setting, size, device)
    for side in sides:
        run_side(side, xs, ys, args.warmup, config, device)
    images = size * setting.steps * setting.batch_size
    for rep in range(args.reps):
        for side in (sides if rep % 2 == 0 else sides[::-1]):
            side.speeds.append(images / run_side(side, xs, ys, setting.steps, config, device))
    separate, pack = sides
    row = {"M": size, "separate_images_per_s": max(separate.speeds),
           "pack_images_per_s": max(pack.speeds),
           "separate_median_images_per_s": statistics.median(separate.speeds),
           "pack_median_images_per_s": statistics.median(pack.speeds),
           "ratio": statistics.median(p / s for s, p in zip(separate.speeds, pack.speeds,
                                                            strict=True))}
    if profile:
        row["profile"] = profile_step(sides[1], xs, ys, config, device, args.profile_rows)
    return row


def profile_step(pack: Side, xs: list[torch.Tensor], ys: list[torch.Tensor],
                 config: TrainConfig, device: torch.device, rows: int) -> list[dict[str, Any]]:
    """The slowest kernels (CUDA; on CPU the slowest operators, self time) of one pack step;
    prints the profiler's table to stderr."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fused, optimizer = pack.nets[0]
    with profile(activities=activities) as prof:
        pack_steps(fused, optimizer, xs, ys, 1, config, device)
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in events if e.device_type == DeviceType.CUDA] or list(events)
        kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
        top = [{"name": e.key, "cuda_time_ms": e.self_device_time_total / 1000,
                "calls": e.count} for e in kernels[:rows]]
    else:
        ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
        top = [{"name": e.key, "cpu_time_ms": e.self_cpu_time_total / 1000, "calls": e.count}
               for e in ops[:rows]]
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort_by, row_limit=rows), file=sys.stderr)
    return top


def sizes_list(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes takes comma-separated network counts, e.g. 1,4,8; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes must be counts >= 1, e.g. 1,4,8; got {text!r}")
    return sizes


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=sizes_list, default=None,
                        help="ResNet-20 pack sizes M (default: 1,4,8,16,32,63 on CUDA, 1,4,8 "
                             "on CPU)")
    parser.add_argument("--lenet-size", type=int, default=27,
                        help="LeNet-300-100 pack size (default 27)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed ResNet-20 steps per repetition (default: 20 CUDA, 2 CPU)")
    parser.add_argument("--lenet-steps", type=int, default=None,
                        help="timed LeNet-300-100 steps per repetition (default: 50 CUDA, "
                             "20 CPU)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per side first (default: 3 CUDA, 1 CPU)")
    parser.add_argument("--sparsity", type=float, default=0.982)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast on both sides (CUDA only; default on on CUDA)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels_last ResNet-20 on both sides (default: on CUDA only)")
    parser.add_argument("--profile", action="store_true",
                        help="profile one fused ResNet-20 step at the largest M (the slowest "
                             "kernels on CUDA, operators on CPU)")
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: M = 8 ResNet-20s (batch 4) and 27 LeNets (batch 10), "
                             "1 step, 1 repetition; figures meaningless")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    for name in ("lenet_size", "steps", "lenet_steps", "reps", "warmup", "profile_rows"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be at least "
                         f"{0 if name == 'warmup' else 1}, got {value}")
    if not 0 <= args.sparsity < 1:
        parser.error(f"--sparsity must be in [0, 1), got {args.sparsity}")
    args.amp = cuda if args.amp is None else args.amp and cuda
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    if args.quick:
        args.sizes = args.sizes or (8,)
        args.steps, args.lenet_steps, args.reps, args.warmup = 1, 1, 1, 1
    args.sizes = args.sizes or (CUDA_SIZES if cuda else CPU_SIZES)
    args.steps = args.steps or (20 if cuda else 2)
    args.warmup = (3 if cuda else 1) if args.warmup is None else args.warmup
    args.lenet_steps = args.lenet_steps or (50 if cuda else 20)
    return args


def settings(args: argparse.Namespace) -> tuple[Setting, Setting]:
    quick = args.quick
    resnet = Setting("resnet20", (3, 32, 32), 4 if quick else 128, 1e-4, args.steps,
                     args.channels_last)
    lenet = Setting("lenet300", (1, 28, 28), 10 if quick else 100, 5e-4, args.lenet_steps,
                    False)
    return resnet, lenet


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    resnet, lenet = settings(args)
    rows = []
    for size in args.sizes:
        rows.append(measure(resnet, size, args, device,
                            profile=args.profile and size == max(args.sizes)))
    lenet_row = measure(lenet, args.lenet_size, args, device)
    out = summary(args, device, rows, lenet_row)
    if args.json:
        print(json.dumps(out))
    else:
        report(out, args)
    return out


def summary(args: argparse.Namespace, device: torch.device, rows: list[dict[str, Any]],
            lenet_row: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: settings, per-M rows, the headline ratios and the projection."""
    cuda = device.type == "cuda"
    for row in rows:
        row["projected_table_minutes"] = (TABLE_IMAGES / row["pack_images_per_s"] / 60
                                          if cuda else None)
    profile = next((row.pop("profile") for row in rows if "profile" in row), None)
    by_size = {row["M"]: row for row in rows}
    out: dict[str, Any] = {
        "device": device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "amp_bf16": args.amp, "channels_last": args.channels_last,
        "quick": args.quick, "sparsity": args.sparsity, "reps": args.reps,
        "warmup_steps": args.warmup, "resnet20_steps": args.steps,
        "lenet300_steps": args.lenet_steps,
        "statistic": "images_per_s: best repetition; ratio: median over repetitions of "
                     "pack / separate of adjacent runs",
        "resnet20": rows, "lenet300": [lenet_row],
        "lenet300_pack27_ratio": lenet_row["ratio"] if args.lenet_size == 27 else None,
        "resnet20_pack8_ratio": by_size[8]["ratio"] if 8 in by_size else None,
        "projected_table_minutes": (min(r["projected_table_minutes"] for r in rows)
                                    if cuda else None),
    }
    for row in rows:
        out[f"resnet20_pack{row['M']}_ratio"] = row["ratio"]
    if profile is not None:
        out["profile"] = profile
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    resnet, lenet = settings(args)
    print(f"device {out['device']} ({out['threads']} threads), torch {out['torch']}, bf16 "
          f"autocast {out['amp_bf16']}, ResNet-20 channels_last {out['channels_last']}, "
          f"sparsity {out['sparsity']}, {out['reps']} repetitions after {out['warmup_steps']} "
          f"warmup steps{' (QUICK: figures meaningless)' if args.quick else ''}")
    print("img/s: best (and median) repetition, images summed over the networks; ratio: median "
          "of pack/separate over adjacent repetitions")
    head = (f"{'model':<14} {'M':>3} {'batch':>5} {'separate img/s':>15} {'pack img/s':>11} "
            f"{'sep median':>11} {'pack median':>11} {'ratio':>6} {'table min':>10}")
    print(head)
    for name, setting, rows in (("ResNet-20", resnet, out["resnet20"]),
                                ("LeNet-300-100", lenet, out["lenet300"])):
        for row in rows:
            minutes = row.get("projected_table_minutes")
            print(f"{name:<14} {row['M']:>3} {setting.batch_size:>5} "
                  f"{row['separate_images_per_s']:>15.1f} {row['pack_images_per_s']:>11.1f} "
                  f"{row['separate_median_images_per_s']:>11.1f} "
                  f"{row['pack_median_images_per_s']:>11.1f} {row['ratio']:>6.2f} "
                  f"{'-' if minutes is None else f'{minutes:.1f}':>10}")
    if out["projected_table_minutes"] is not None:
        print(f"projected CIFAR-10 ResNet-20 table (63 runs x 160 epochs x 50k images) at the "
              f"best pack throughput: {out['projected_table_minutes']:.1f} min")
    for entry in out.get("profile", []):
        unit = "cuda_time_ms" if "cuda_time_ms" in entry else "cpu_time_ms"
        print(f"  {entry[unit]:>9.3f} ms  x{entry['calls']:<4} {entry['name'][:90]}")


if __name__ == "__main__":
    main()
