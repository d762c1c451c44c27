"""What the zeros buy at inference: the latency of one forward pass of a pruned network on a
CPU, dense and sparse, for LeNet-300-100 (MNIST-shaped input) and ResNet-20 (CIFAR-shaped).

Per model, sparsity (90 / 98 / 99.8 % by default; magnitude masks, global) and batch size, in
eval mode and under ``torch.inference_mode``:

- ``dense``: the unpruned network;
- ``masked``: the network masked by ntksap (a parametrization multiplies each weight by its
  mask at every forward pass: what training runs);
- ``baked``: the masks baked into plain dense weights (``Masks.plain_copy``): zeros computed
  like any weight;
- ``sparse``: every pruned layer run from a CSR matrix of its kept weights: a Linear as
  ``torch.sparse.mm`` (CSR x dense), a convolution as im2col (``F.unfold``) followed by the
  same CSR product; BatchNorm, pooling and the rest as they are.

All variants of one setting run in interleaved repetitions (the order rotates), each timing
the median of ``--inner`` forward passes; reported per variant the median over repetitions,
in milliseconds, and ``speedup``: baked's time over the variant's (above 1: faster than the
dense kernels on the same zeros). The outputs of every variant are checked against
``baked`` (to 1e-4) before timing. One torch thread by default (``--threads``).

    python benchmarks/inference_latency.py [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

import ntksap
from ntksap.models import build_model

SETTINGS = {"lenet300": (1, 28, 28), "resnet20": (3, 32, 32)}


class CsrLinear(nn.Module):
    """A Linear layer computed from a CSR matrix of its kept weights."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.sparse.mm(self.weight, x.reshape(-1, x.shape[-1]).T).T
        return out if self.bias is None else out + self.bias


class CsrConv2d(nn.Module):
    """A Conv2d computed as im2col (F.unfold) and a CSR x dense product."""

    def __init__(self, layer: nn.Conv2d) -> None:
        super().__init__()
        if layer.groups != 1:
            raise ValueError("grouped convolutions are not sparse here")
        self.out_channels, self.kernel = layer.out_channels, layer.kernel_size
        self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
        self.weight = layer.weight.detach().reshape(layer.out_channels, -1).to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        cols = F.unfold(x, self.kernel, self.dilation, self.padding, self.stride)
        out_h = (height + 2 * self.padding[0] - self.dilation[0] * (self.kernel[0] - 1) - 1) \
            // self.stride[0] + 1
        out_w = (width + 2 * self.padding[1] - self.dilation[1] * (self.kernel[1] - 1) - 1) \
            // self.stride[1] + 1
        flat = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (C k k, B L)
        out = torch.sparse.mm(self.weight, flat)  # (out, B L)
        out = out.reshape(self.out_channels, batch, out_h * out_w).transpose(0, 1)
        out = out.reshape(batch, self.out_channels, out_h, out_w)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def sparse_copy(baked: nn.Module) -> nn.Module:
    """``baked`` with every Linear and Conv2d replaced by its CSR counterpart."""


    model = copy.deepcopy(baked)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, CsrLinear(child))
            elif isinstance(child, nn.Conv2d):
                setattr(module, child_name, CsrConv2d(child))
    return model


def variants(name: str, sparsity: float) -> dict[str, nn.Module]:
    dense = build_model(name, 10, seed=0).eval()
    masked = build_model(name, 10, seed=0)
    masks = ntksap.prune(masked, "magnitude", sparsity)
    masks.apply(masked)
    masked.eval()
    baked = ntksap.Masks.plain_copy(masked).eval()
    return {"dense": dense, "masked": masked, "baked": baked, "sparse": sparse_copy(baked)}


def timed(call: Callable[[], torch.Tensor], inner: int) -> float:
    times = []
    for _ in range(inner):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, sparsity: float, batch: int, repeats: int, inner: int) -> dict:
    models = variants(name, sparsity)
    x = torch.randn((batch, *SETTINGS[name]), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = models["baked"](x)
        for label, model in models.items():
            if label != "dense":
                assert torch.allclose(model(x), reference, atol=1e-4), (name, label)
        order = list(models)
        samples: dict[str, list[float]] = {k: [] for k in order}
        for r in range(repeats):
            for label in order[r % len(order):] + order[:r % len(order)]:
                model = models[label]
                model(x)  # warm
                samples[label].append(timed(lambda m=model: m(x), inner))
    ms = {k: 1000 * statistics.median(v) for k, v in samples.items()}
    return {"model": name, "sparsity": sparsity, "batch": batch, "ms": ms,
            "speedup": {k: ms["baked"] / v for k, v in ms.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.98, 0.998])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name, s, b, args.repeats, args.inner) for name in SETTINGS
            for s in args.sparsities for b in args.batches]
    if args.json:
        print(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}))
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s); milliseconds per forward "
          "pass (median), speedup = baked / variant")
    print(f"{'model':<9} {'sparsity':>8} {'batch':>5} " + " ".join(
        f"{k:>9}" for k in ("dense", "masked", "baked", "sparse")) + f" {'sparse x':>9}")
    for r in rows:
        print(f"{r['model']:<9} {100 * r['sparsity']:>7.1f}% {r['batch']:>5} " + " ".join(
            f"{r['ms'][k]:>9.3f}" for k in ("dense", "masked", "baked", "sparse"))
            + f" {r['speedup']['sparse']:>9.2f}")


if __name__ == "__main__":
    main()
