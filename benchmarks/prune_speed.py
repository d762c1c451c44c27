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

    capture = Capture(**{k: getattr(method, k) for k in ("repeats", "eps", "samples",
                                                          "batch_size")})
    timed_prune(capture, None, device, rounds=1, **kw)
    return captured


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
        reference = NTKSAPReference(**ntk_options)
        ref_masks, ref_seconds = timed_prune(reference, None, device, channels_last=False)
        ours = first_round_scores(ntksap.methods.NTKSAP(**ntk_options), device)
        theirs = first_round_scores(reference, device, channels_last=False)
        max_rel = max(float(((ours[n] - theirs[n]).abs().max()) / theirs[n].abs().max())
                      for n in ours)
        overlap = sum(int((masks["ntksap"][n] & ref_masks[n]).sum()) for n in ref_masks)
        result.update(reference_seconds=ref_seconds,
                      ntksap_speedup=ref_seconds / seconds["ntksap"],
                      score_max_rel_diff=max_rel,
                      mask_overlap=overlap / ref_masks.remaining)
    if args.json:
        print(json.dumps(result))
        return
    if "reference_seconds" in result:
        print(f"\nNTK-SAP reference procedure: {result['reference_seconds']:.2f} s; ours "
              f"{seconds['ntksap']:.2f} s; speed-up x{result['ntksap_speedup']:.2f}")
        print(f"first-round scores: largest difference {result['score_max_rel_diff']:.2e} "
              f"(relative to the layer's largest score); final masks agree on "
              f"{100 * result['mask_overlap']:.2f} % of kept weights")
    print(f"\n{'method':>12} | seconds\n{'-' * 13}+{'-' * 9}")
    for name, s in seconds.items():
        print(f"{name:>12} | {s:7.2f}")


if __name__ == "__main__":
    main()
