"""Wall time of every pruning method on ResNet-20 with CIFAR-10 shapes at 98.2 % sparsity.

Each method runs with its paper defaults: NTK-SAP T = 20, R = 5, 100 Gaussian inputs per draw;
SynFlow T = 100; Iterative SNIP T = 20; FORCE T = 10; SNIP and GraSP one-shot; ProsPr
one-shot through K = 3 SGD steps (full meta-gradient); NTT 40 Adam steps (20 epochs of the 100
images at 64 per step, a kernel of 16 inputs); the data-needing methods on 100 random
CIFAR-shaped examples with labels (speed only; one pruning batch, as CIFAR-10's 100 images
are with the reference's batch size of 256). The engine's
default memory layout is NCHW on CPU and channels_last on CUDA; each method is timed in both
layouts, adjacently, with the number of kept weights that differ between the two layouts'
masks (float32 rounding: on CPU, train-mode BatchNorm in channels_last; for the iterative
methods the difference grows over the rounds); SNIP's and GraSP's float32 masks in each layout
are also compared with the same method's float64 mask (kept weights not in it).

In the same run NTK-SAP is timed against a plain re-statement of the public code's procedure
(``ntksap.reference``: the perturbed twin deep-copied once per round, a separate no-grad
train-mode statistics pass, two forward passes and one backward per draw), in each memory
layout, both sides in the same layout: ``speed-up`` = reference seconds / ours in that layout.
The fused-statistics variant runs in the default layout. Scores are compared with the
reference's in the same layout: the largest relative difference of the first round's scores,
and the overlap of the final masks.

``--per-draw`` instead times single draws (rounds of ``--draws`` draws, the procedures
alternating, the fastest of ``--repeat`` rounds after a warm-up) of the reference, ours exact,
fused statistics, ``pair_vmap=True`` and ``draws_per_pass=--draws``, in both layouts.

    python benchmarks/prune_speed.py [--json] [--methods ntksap,snip] [--device cuda]
                                     [--no-reference] [--threads N]
                                     [--per-draw [--draws 5] [--repeat 3]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch

import ntksap
from ntksap.engine import default_channels_last, prune
from ntksap.methods import METHODS
from ntksap.methods.ntksap import NTKSAP
from ntksap.reference import NTKSAPReference

SPARSITY = 0.982
SHAPE = (3, 32, 32)
# each method's paper defaults where the engine's differ; one line per method
OPTIONS: dict[str, dict] = {
    "ntksap": {"repeats": 5, "eps": 0.01, "samples": 100},
}
LAYOUTS = {"NCHW": False, "channels_last": True}
# one-shot methods whose float32 masks are also compared with the same method's float64 mask
PRECISION_METHODS = ("snip", "grasp")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_prune(method, data, device, dtype=torch.float32, **kw) -> tuple[ntksap.Masks, float]:
    model = ntksap.build_model("resnet20", 10, seed=0).to(device=device, dtype=dtype)
    _sync(device)
    start = time.perf_counter()
    masks = prune(model, method, SPARSITY, input_shape=SHAPE, data=data, seed=0,
                  device=device, **kw)
    _sync(device)
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


def max_rel(scores: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """Largest |difference| over the layer's largest reference score, over all layers."""
    return max(float((scores[n] - reference[n]).abs().max() / reference[n].abs().max())
               for n in scores)


def overlap(masks: ntksap.Masks, reference: ntksap.Masks) -> float:
    return sum(int((masks[n] & reference[n]).sum()) for n in masks) / reference.remaining


def default_layout(device: torch.device) -> str:
    return "channels_last" if default_channels_last(SHAPE, device) else "NCHW"


def compare_with_reference(device: torch.device, ours_masks: dict[str, ntksap.Masks],
                           ours_seconds: dict[str, float], quiet: bool) -> dict:
    """NTK-SAP (timed by the caller in each layout) against the reference procedure in the
    same layout; the fused-statistics variant in the default layout."""
    options = OPTIONS["ntksap"]
    reference, ours = NTKSAPReference(**options), NTKSAP(**options)
    default = default_layout(device)
    rows, out = [], {"default_layout": default, "layouts": {}}
    for layout, channels_last in LAYOUTS.items():
        ref_masks, ref_s = timed_prune(reference, None, device, channels_last=channels_last)
        our_s = ours_seconds[layout]
        ref_scores = first_round_scores(reference, device, channels_last=channels_last)
        entry = {
            "reference_seconds": ref_s, "ntksap_seconds": our_s, "speedup": ref_s / our_s,
            "score_max_rel_diff": max_rel(first_round_scores(ours, device,
                                                             channels_last=channels_last),
                                          ref_scores),
            "mask_overlap": overlap(ours_masks[layout], ref_masks),
        }
        if layout == default:
            fused = NTKSAP(**options, fused_statistics=True)
            fused_masks, fused_s = timed_prune(fused, None, device)
            entry.update(
                fused_seconds=fused_s, fused_speedup=ref_s / fused_s,
                fused_score_max_rel_diff=max_rel(first_round_scores(fused, device),
                                                 ref_scores),
                fused_mask_overlap=overlap(fused_masks, ref_masks))
        out["layouts"][layout] = entry
        mark = " (default)" if layout == default else ""
        rows += [(f"reference, {layout}", ref_s, 1.0, 0.0, 1.0),
                 (f"ntksap exact, {layout}{mark}", our_s, entry["speedup"],
                  entry["score_max_rel_diff"], entry["mask_overlap"])]
        if "fused_seconds" in entry:
            rows.append((f"ntksap fused_statistics, {layout}{mark}", entry["fused_seconds"],
                         entry["fused_speedup"], entry["fused_score_max_rel_diff"],
                         entry["fused_mask_overlap"]))
    out["default_speedup"] = out["layouts"][default]["speedup"]
    if not quiet:
        print(f"\nNTK-SAP, T = 20, R = {options['repeats']}, {options['samples']} inputs per "
              f"draw, against the reference procedure in the same layout\n  {'procedure':<42}"
              f"{'seconds':>8} {'speed-up':>9} {'score diff':>11} {'mask overlap':>13}")
        for name, sec, speedup, diff, same in rows:
            print(f"  {name:<42}{sec:8.2f} {speedup:9.2f} {diff:11.2e} {same:13.4f}")
        print("  speed-up and score diff against the reference in the same layout; score diff: "
              "largest |difference|\n  of one round's scores over the layer's largest score. "
              "Masks after 20 rounds of such scores\n  can differ widely (mask overlap).")
    return out


def per_draw(device: torch.device, draws: int, repeat: int, quiet: bool) -> dict:
    """Seconds per draw of one round of ``draws`` draws (batch 100), after a warm-up round;
    the procedures alternate ``repeat`` times and the fastest round of each counts."""
    options = {**OPTIONS["ntksap"], "repeats": draws}
    procedures = {
        "reference": NTKSAPReference(**options),
        "ntksap exact": NTKSAP(**options, pair_vmap=False, draws_per_pass=1),
        "ntksap fused_statistics": NTKSAP(**options, fused_statistics=True, pair_vmap=False,
                                          draws_per_pass=1),
        "ntksap pair_vmap": NTKSAP(**options, pair_vmap=True, draws_per_pass=1),
        f"ntksap draws_per_pass={draws}": NTKSAP(**options, pair_vmap=False,
                                                 draws_per_pass=draws),
    }
    model = ntksap.build_model("resnet20", 10, seed=0).to(device)
    out: dict[str, dict[str, float]] = {}
    for layout, channels_last in LAYOUTS.items():
        out[layout] = {name: float("inf") for name in procedures}
        for attempt in range(repeat + 1):  # the first pass warms up (oneDNN primitives)
            for name, method in procedures.items():
                _sync(device)
                start = time.perf_counter()
                ntksap.score(model, method, input_shape=SHAPE, seed=0, device=device,
                             channels_last=channels_last)
                _sync(device)
                if attempt:
                    out[layout][name] = min(out[layout][name],
                                            (time.perf_counter() - start) / draws)
    if not quiet:
        print(f"NTK-SAP seconds per draw (ResNet-20, batch 100, one round of {draws} draws, "
              f"fastest of {repeat} after a warm-up)\n  {'procedure':<30}" +
              "".join(f"{layout:>15}" for layout in LAYOUTS))
        for name in procedures:
            print(f"  {name:<30}" + "".join(f"{out[lay][name]:15.3f}" for lay in LAYOUTS))
        for layout in LAYOUTS:
            ratios = ", ".join(f"{name} {out[layout]['reference'] / s:.2f}x"
                               for name, s in out[layout].items() if name != "reference")
            print(f"  speed-up over the reference, {layout}: {ratios}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods to time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference NTK-SAP procedure")
    parser.add_argument("--per-draw", action="store_true",
                        help="time single NTK-SAP draws of each procedure instead")
    parser.add_argument("--draws", type=int, default=5, help="draws per timed round")
    parser.add_argument("--repeat", type=int, default=3,
                        help="--per-draw: timed rounds of each procedure (fastest counts)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result: dict = {"device": str(device), "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "sparsity": SPARSITY}
    if args.per_draw:
        result["per_draw_seconds"] = per_draw(device, args.draws, args.repeat, args.json)
        if args.json:
            print(json.dumps(result))
        return
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(100, *SHAPE, generator=g), torch.randint(0, 10, (100,), generator=g))

    default = default_layout(device)
    seconds: dict[str, dict[str, float]] = {}
    masks: dict[str, dict[str, ntksap.Masks]] = {}
    moved: dict[str, int] = {}
    off: dict[str, dict[str, int]] = {}  # kept weights not in the float64 mask, per layout
    for name in args.methods.split(","):
        needs = METHODS[name].needs_data
        seconds[name], masks[name] = {}, {}
        for layout, channels_last in LAYOUTS.items():  # adjacent, same options
            masks[name][layout], seconds[name][layout] = timed_prune(
                name, data if needs else None, device, channels_last=channels_last,
                **OPTIONS.get(name, {}))
        nchw, last = masks[name]["NCHW"], masks[name]["channels_last"]
        moved[name] = sum(int((nchw[n] & ~last[n]).sum()) for n in nchw)
        if name in PRECISION_METHODS:
            exact, _ = timed_prune(name, (data[0].double(), data[1]), device,
                                   dtype=torch.float64)
            off[name] = {lay: sum(int((m[n] & ~exact[n]).sum()) for n in m)
                         for lay, m in masks[name].items()}
        if not args.json:
            print(f"{name:>12}: " + ", ".join(f"{lay} {sec:.2f} s"
                                              for lay, sec in seconds[name].items())
                  + f"  (rounds {nchw.meta['rounds']}, kept {nchw.remaining}, {moved[name]} "
                  "kept weights differ between the layouts"
                  + ("; not in the float64 mask: " + ", ".join(
                      f"{lay} {k}" for lay, k in off[name].items()) if name in off else "")
                  + ")", flush=True)
    result.update(seconds=seconds, default_layout=default, layout_mask_difference=moved,
                  kept_not_in_float64_mask=off)
    if "ntksap" in seconds and not args.no_reference:
        result["ntksap_reference"] = compare_with_reference(
            device, masks["ntksap"], seconds["ntksap"], args.json)
    if args.json:
        print(json.dumps(result))
        return
    print(f"\n{'method':>12} | {'NCHW':>8} | {'chan_last':>9} | {'NCHW/CL':>7} | layouts differ "
          f"| not in float64 mask (NCHW, CL)\n{'-' * 13}+{'-' * 10}+{'-' * 11}+{'-' * 9}+"
          f"{'-' * 16}+{'-' * 31}")
    for name, sec in seconds.items():
        precision = (f"{off[name]['NCHW']}, {off[name]['channels_last']}" if name in off
                     else "")
        print(f"{name:>12} | {sec['NCHW']:8.2f} | {sec['channels_last']:9.2f} | "
              f"{sec['NCHW'] / sec['channels_last']:7.2f} | {moved[name]:14d} | {precision}")
    print(f"kept weights: {nchw.remaining} of {nchw.total} in every mask")
    print(f"default layout on {device.type}: {default}; seconds per method in each layout, "
          "timed adjacently; NCHW/CL > 1: channels_last is faster")

if __name__ == "__main__":
    main()
