"""NTT at its defaults on LeNet-300-100 at 98 % sparsity with a 100-image pruning set: how
often the mask is re-chosen, whether the returned mask is the one NTT last chose, how far it
is from the magnitude mask it starts from (Jaccard), and how long it takes.

    python benchmarks/ntt_defaults.py [--data-dir DATA] [--json]

With ``--data-dir`` the pruning set is 10 real MNIST images per class; without, 100 random
images of MNIST's shape (the procedure never reads labels). ``--mask-update-every K`` and
``--epochs E`` (not the defaults 100 and 20) shorten the run for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import ntksap
from ntksap.analysis import overlap
from ntksap.methods.ntt import NTT


def pruning_set(data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if data_dir is None:
        g = torch.Generator().manual_seed(0)
        return torch.randn(100, 1, 28, 28, generator=g), torch.zeros(100, dtype=torch.long)
    from ntksap.data import load_dataset

    bundle = load_dataset("mnist", data_dir=data_dir)
    return bundle.pruning_set(per_class=10, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mask-update-every", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    if args.mask_update_every < 1 or args.epochs < 1:
        parser.error("--mask-update-every and --epochs must be >= 1")
    data = pruning_set(args.data_dir)
    chosen = []
    transfer = NTT.transfer

    def recording(self, net, ctx):
        learned = transfer(self, net, ctx)
        chosen.append(learned.masks)
        return learned

    NTT.transfer = recording
    model = ntksap.build_model("lenet300", 10, seed=0)
    start = time.perf_counter()
    masks = ntksap.prune(model, "ntt", 0.98, data=data, seed=0, progress_bar=False,
                         mask_update_every=args.mask_update_every, epochs=args.epochs)
    seconds = time.perf_counter() - start
    magnitude = ntksap.prune(ntksap.build_model("lenet300", 10, seed=0), "magnitude", 0.98)
    result = {
        "mask_updates": masks.meta["mask_updates"],
        "transfer_steps": masks.meta["transfer_steps"],
        "returned_is_last_chosen": all(torch.equal(masks[n], chosen[-1][n]) for n in masks),
        "jaccard_to_magnitude": overlap(masks, magnitude)["jaccard"],
        "random_mask_jaccard": overlap(masks, magnitude)["random_jaccard"],
        "seconds": seconds, "threads": torch.get_num_threads(),
        "mask_update_every": args.mask_update_every, "epochs": args.epochs,
        "data": "mnist" if args.data_dir else "random",
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
