"""Wall time of every pruning method on ResNet-20 with CIFAR-10 shapes at 98.2 % sparsity.

Each method runs with its paper defaults: NTK-SAP T = 20, R = 5, 100 Gaussian inputs per draw;
SynFlow T = 100; Iterative SNIP T = 20; FORCE T = 10; SNIP and GraSP one-shot; the
data-needing methods on 100 random CIFAR-shaped examples with labels (speed only). In the same
run NTK-SAP is also timed through a plain re-statement of the public reference procedure
(``ntksap.reference``), and the two results are compared: the largest relative difference of
the first round's scores and the overlap of the final masks.

    python benchmarks/prune_speed.py [--json] [--methods ntksap,snip] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch

import ntksap
from ntksap.engine import prune
from ntksap.methods import METHODS
from ntksap.reference import NTKSAPReference

SPARSITY = 0.982


def timed_prune(method, data, device, **kw) -> tuple[ntksap.Masks, float]:
    model = ntksap.build_model("resnet20", 10, seed=0).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    masks = prune(model, method, SPARSITY, input_shape=(3, 32, 32), data=data, seed=0,
                  device=device, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return masks, time.perf_counter() - start


def first_round_scores(method, device, **kw) -> dict[str, torch.Tensor]:
    """Scores of one round, captured through a wrapper of the method."""
    captured: dict[str, torch.Tensor] = {}

    class Capture(type(method)):
        def scores(self, net, ctx):
            out = super().scores(net, ctx)
            captured.update({n: s.detach().double().cpu() for n, s in out.items()})
            return out

    capture = Capture(**{f.name: getattr(method, f.name) for f in dataclasses.fields(method)
                         if f.init})
    timed_prune(capture, None, device, rounds=1, **kw)
    return captured


def compare_with_reference(ours: ntksap.Masks, ours_seconds: float, options: dict,
                           device: torch.device, quiet: bool) -> dict:
    """Time the reference procedure and the fused-statistics variant; compare their scores."""
    reference = NTKSAPReference(**options)
    ref_masks, ref_seconds = timed_prune(reference, None, device, channels_last=False)
    fused_masks, fused_seconds = timed_prune("ntksap", None, device, fused_statistics=True,
                                             **options)
    theirs = first_round_scores(reference, device, channels_last=False)

    def max_rel(scores: dict[str, torch.Tensor]) -> float:
        return max(float((scores[n] - theirs[n]).abs().max() / theirs[n].abs().max())
                   for n in scores)

    def overlap(masks: ntksap.Masks) -> float:
        return sum(int((masks[n] & ref_masks[n]).sum()) for n in masks) / ref_masks.remaining

    method = ntksap.methods.NTKSAP(**options)
    out = {
        "reference_seconds": ref_seconds, "ntksap_speedup": ref_seconds / ours_seconds,
        "ntksap_fused_seconds": fused_seconds,
        "ntksap_fused_speedup": ref_seconds / fused_seconds,
        "score_max_rel_diff": max_rel(first_round_scores(method, device)),
        "score_max_rel_diff_same_layout": max_rel(first_round_scores(method, device,
                                                                     channels_last=False)),
        "score_max_rel_diff_fused": max_rel(first_round_scores(
            ntksap.methods.NTKSAP(**options, fused_statistics=True), device)),
        "mask_overlap": overlap(ours), "mask_overlap_fused": overlap(fused_masks),
    }
    if not quiet:
        rows = [("reference (deepcopy twin, separate pass)", ref_seconds, 1.0, 0.0, 1.0),
                ("ntksap (default: exact statistics)", ours_seconds, out["ntksap_speedup"],
                 out["score_max_rel_diff"], out["mask_overlap"]),
                ("ntksap fused_statistics=True", fused_seconds, out["ntksap_fused_speedup"],
                 out["score_max_rel_diff_fused"], out["mask_overlap_fused"])]
        print(f"\nNTK-SAP, T = 20, R = 5, 100 inputs per draw\n  {'procedure':<42}"
              f"{'seconds':>8} {'speed-up':>9} {'score diff':>11} {'mask overlap':>13}")
        for name, sec, speedup, diff, same in rows:
            print(f"  {name:<42}{sec:8.2f} {speedup:9.2f} {diff:11.2e} {same:13.4f}")
        print("  score diff: largest |difference| of one round's scores over the layer's "
              "largest score,\n  against the reference. Ours in the reference's memory "
              f"layout (NCHW): {out['score_max_rel_diff_same_layout']:.2e}; other gaps are\n"
              "  float32 rounding (channels_last) and, fused, O(1/n) BatchNorm statistics. "
              "Masks after 20\n  rounds of such scores can differ widely (mask overlap).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods to time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference NTK-SAP procedure")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(100, 3, 32, 32, generator=g), torch.randint(0, 10, (100,), generator=g))
    ntk_options = {"repeats": 5, "eps": 0.01, "samples": 100, "batch_size": 100}

    seconds: dict[str, float] = {}
    masks: dict[str, ntksap.Masks] = {}
    for name in args.methods.split(","):
        options = ntk_options if name == "ntksap" else {}
        needs = METHODS[name].needs_data
        masks[name], seconds[name] = timed_prune(name, data if needs else None, device,
                                                 **options)
        if not args.json:
            print(f"{name:>12}: {seconds[name]:8.2f} s  (rounds {masks[name].meta['rounds']}, "
                  f"kept {masks[name].remaining})", flush=True)

    result: dict = {"device": str(device), "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "sparsity": SPARSITY, "seconds": seconds}
    if "ntksap" in seconds and not args.no_reference:
        result.update(compare_with_reference(masks["ntksap"], seconds["ntksap"], ntk_options,
                                             device, args.json))
    if args.json:
        print(json.dumps(result))
        return
    print(f"\n{'method':>12} | seconds\n{'-' * 13}+{'-' * 9}")
    for name, s in seconds.items():
        print(f"{name:>12} | {s:7.2f}")


if __name__ == "__main__":
    main()
