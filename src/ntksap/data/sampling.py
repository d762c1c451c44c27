"""Seeded index selection: per-epoch permutations, rank shards, subsets, balanced picks."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import NtksapError

# first salt of each use of a seed, so that no two uses share a random stream
SHUFFLE, AUGMENT, BALANCED, SUBSET, WORKERS, HOLDOUT = range(6)


def seeded_generator(seed: int, *salt: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, *salt)`` (well mixed)."""
    if seed < 0 or any(s < 0 for s in salt):
        raise ValueError(f"seeds must be non-negative, got {(seed, *salt)}")
    state = np.random.SeedSequence([seed, *salt]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held_out)``: ``int(n * fraction)`` indices drawn uniformly by a permutation
    seeded by ``seed`` are held out, the rest kept; both sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    order = torch.randperm(n, generator=seeded_generator(seed, HOLDOUT))
    held = int(n * fraction)
    return order[held:].sort().values, order[:held].sort().values


def shard_indices(n: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0,
                  world_size: int = 1, drop_last: bool = False) -> torch.Tensor:
    """This rank's indices for one epoch: ``perm[rank::world_size]`` of the permutation seeded
    by ``(seed, epoch)`` (``arange(n)`` without ``shuffle``).

    Shards are disjoint. With ``drop_last`` each is cut to ``n // world_size`` so that all
    ranks take the same number of steps; otherwise every index is used once across ranks.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    order = (torch.randperm(n, generator=seeded_generator(seed, SHUFFLE, epoch)) if shuffle
             else torch.arange(n))
    shard = order[rank::world_size]
    return shard[:n // world_size] if drop_last else shard


def balanced_indices(y: torch.Tensor, per_class: int, seed: int, num_classes: int,
                     what: str = "selection") -> torch.Tensor:
    """``per_class`` seeded picks of every class, in a seeded shuffled order."""
    g = seeded_generator(seed, BALANCED)
    picks = []
    for c in range(num_classes):
        idx = (y == c).nonzero().flatten()
        if len(idx) < per_class:
            raise NtksapError(
                f"class {c} has {len(idx)} examples, the {what} needs {per_class} per class; "
                "ask for fewer per class or use more data")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    chosen = torch.cat(picks)
    return chosen[torch.randperm(len(chosen), generator=g)]


def subset_indices(y: torch.Tensor, n: int, seed: int, num_classes: int,
                   balanced: bool = False) -> torch.Tensor:
    """``n`` examples: the first ``n`` of a seeded permutation, or ``n // classes`` per class."""
    if balanced:
        if n < num_classes:
            raise NtksapError(f"a class-balanced subset of {n} cannot cover {num_classes} "
                              "classes; ask for at least one example per class")
        return balanced_indices(y, n // num_classes, seed, num_classes, "subset")
    if not 0 < n <= len(y):
        raise NtksapError(f"subset size {n} must be in [1, {len(y)}]")
    return torch.randperm(len(y), generator=seeded_generator(seed, SUBSET))[:n]
