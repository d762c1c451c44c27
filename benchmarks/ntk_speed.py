"""Wall time of the empirical NTK of ResNet-20: 100 Gaussian inputs x 10 logits, a 1000 x 1000
kernel with respect to all 272,474 parameters, BatchNorm in eval form with the batch's
statistics (reference section 7).

In one run, after a warm-up of both (the loop on 2 inputs: it runs one input at a time;
ours on all inputs: it runs them in one batch):

- ``loop``: the straightforward way, one backward pass per (input, logit): each input alone
  through the network, ``torch.autograd.grad`` of each of its logits, the flattened gradients
  stacked into J, then K = J @ J.T;
- ``ours``: :func:`ntksap.ntk.empirical_ntk` (one batched forward, one backward per logit to
  the layer outputs, each followed by that logit's per-example weight gradients as batched
  products written straight into J; the symmetric Gram J J^T in row bands, 5/8 of the
  products of J @ J.T).

Prints both times, their ratio and ``max_rel_diff`` = max |K_ours - K_loop| / max |K_loop|.

``--whole-batch-check`` also computes the kernel with a loop that forwards the whole batch once
and then backpropagates each (input, logit) through that batch's graph (``retain_graph=True``):
it sees the same forward pass as ours, so it checks the whole kernel in float32
(``max_rel_diff_whole_batch``). It is a correctness check, not a speed baseline: each of its
1000 backward passes runs through all 100 inputs, which nobody would choose for speed, so no
ratio is printed (its time, ``whole_batch_check_seconds``, is in the JSON only).
In float32 that difference is dominated by ReLU units whose pre-activation lies within rounding
of zero: running an input alone or in a batch changes the convolutions' summation order, such a
unit switches and its example's gradient jumps. Two checks on the first ``--check-inputs``
inputs separate this from the method: ``max_rel_diff_same_batch`` (the loop forwards those
inputs as one batch, as ours does) and ``max_rel_diff_float64`` (both in float64).

    python benchmarks/ntk_speed.py [--json] [--repeat 3] [--threads 1] [--device cuda]
                                   [--whole-batch-check]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch

import ntksap
from ntksap.batchnorm import batch_statistics
from ntksap.ntk import empirical_ntk


def loop_ntk(model: torch.nn.Module, x: torch.Tensor, batched_forward: bool = False
             ) -> torch.Tensor:
    """One backward pass per (input, logit); rows stacked into J; K = J J^T. Each input runs
    alone through the network, or (``batched_forward``) all of them in one forward pass."""
    params = list(model.parameters())
    model.eval()
    with batch_statistics(model, "record_train") as stats:
        with torch.no_grad():
            k = model(x).shape[1]
        J = torch.empty((len(x) * k, sum(p.numel() for p in params)), dtype=x.dtype,
                        device=x.device)
        if batched_forward:
            stats.set_mode("replay")
            out = model(x)
        for i in range(len(x)):
            if not batched_forward:
                stats.set_mode("replay")
                out = model(x[i:i + 1])
            row = out[i if batched_forward else 0]
            for c in range(k):
                grads = torch.autograd.grad(row[c], params, retain_graph=True)
                J[i * k + c] = torch.cat([g.flatten() for g in grads])
    return J @ J.T


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def timed(fn, device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-budget", default="2GiB")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each this many times, alternating; report the fastest")
    parser.add_argument("--check-inputs", type=int, default=8,
                        help="inputs of the float64 and same-batch agreement checks")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's; 1 is steadier on a busy machine)")
    parser.add_argument("--whole-batch-check", action="store_true",
                        help="also compare the whole kernel with a loop backpropagating each "
                             "(input, logit) through the whole batch's graph (a correctness "
                             "check, minutes on a CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = ntksap.build_model(args.model, 10, seed=0).to(device)
    shape = ntksap.models.model_spec(args.model).input_shape
    x = torch.randn((args.inputs, *shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device)

    def ours(inputs: torch.Tensor) -> torch.Tensor:
        return empirical_ntk(model, inputs, memory_budget=args.memory_budget)

    loop_ntk(model, x[:2])  # warm-up, each with the shapes it runs (oneDNN primitives)
    ours(x)
    loop_times, ours_times = [], []
    for _ in range(args.repeat):  # alternate, keep the fastest of each
        loop_k, seconds = timed(lambda: loop_ntk(model, x), device)
        loop_times.append(seconds)
        ours_k, seconds = timed(lambda: ours(x), device)
        ours_times.append(seconds)
    loop_s, ours_s = min(loop_times), min(ours_times)
    diff = rel_diff(ours_k, loop_k)
    # where the float32 difference comes from: ReLU units whose pre-activation is within
    # rounding of zero switch when the batch size (and so the convolution's summation order)
    # changes. With the same forward batch, or in float64, the kernels agree.
    few = x[:args.check_inputs]
    same_batch = rel_diff(empirical_ntk(model, few), loop_ntk(model, few, batched_forward=True))
    model64, few64 = copy.deepcopy(model).double(), few.double()
    float64 = rel_diff(empirical_ntk(model64, few64), loop_ntk(model64, few64))
    whole_batch = {}
    if args.whole_batch_check:
        ref_k, seconds = timed(lambda: loop_ntk(model, x, batched_forward=True), device)
        whole_batch = {"whole_batch_check_seconds": seconds,
                       "max_rel_diff_whole_batch": rel_diff(ours_k, ref_k)}
    result = {
        "model": args.model, "inputs": args.inputs, "kernel_size": len(ours_k),
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "repeat": args.repeat,
        "loop_seconds": loop_s, "ours_seconds": ours_s, "ratio": loop_s / ours_s,
        "max_rel_diff": diff,
        "loop_seconds_all": loop_times, "ours_seconds_all": ours_times,
        "check_inputs": len(few), "max_rel_diff_same_batch": same_batch,
        "max_rel_diff_float64": float64, **whole_batch,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}, {args.inputs} inputs x 10 logits = {len(ours_k)} x {len(ours_k)} "
              f"NTK over {result['params']} parameters on {device}")
        print(f"  loop (one backward per input and logit): {loop_s:8.2f} s")
        print(f"  ours (ntksap.ntk.empirical_ntk):          {ours_s:8.2f} s")
        print(f"  ratio {loop_s / ours_s:.2f}x, max relative difference {diff:.2e} "
              "(max |K_ours - K_loop| / max |K_loop|, float32)")
        print(f"  on the first {len(few)} inputs: {same_batch:.2e} when the loop forwards them "
              f"as one batch like ours, {float64:.2e} in float64 (ReLU units within rounding "
              "of zero switch with the batch size in float32)")
        if whole_batch:
            print(f"  whole-kernel check against a loop backpropagating each (input, logit) "
                  f"through the whole batch's graph (a correctness check, not a speed "
                  f"baseline): max relative difference "
                  f"{whole_batch['max_rel_diff_whole_batch']:.2e}")


if __name__ == "__main__":
    main()
