"""Exact-k selection, schedules and distributions."""

from __future__ import annotations

import pytest
import torch

from ntksap.engine import density_schedule, removed_counts
from ntksap.selection import apportion, erk_densities, select, top_k_mask


@pytest.mark.parametrize("n", [1, 7, 100, 1000, 4097])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.36, 0.5, 0.8926, 0.982, 0.999])
@pytest.mark.parametrize("values", [1, 3, None])  # all tied, three levels, all distinct
def test_exactly_round_sparsity_n_removed(n, sparsity, values):
    g = torch.Generator().manual_seed(n)
    scores = (torch.randint(0, values, (n,), generator=g).double() if values
              else torch.randn(n, generator=g, dtype=torch.float64))
    keep = n - round(sparsity * n)
    mask = top_k_mask(scores, keep, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == keep
    if keep and keep < n:  # everything kept scores at least as high as everything removed
        assert scores[mask].min() >= scores[~mask].max()


def test_ties_are_broken_by_seed_not_position():
    scores = torch.zeros(1000, dtype=torch.float64)
    a = top_k_mask(scores, 100, torch.Generator().manual_seed(0))
    b = top_k_mask(scores, 100, torch.Generator().manual_seed(0))
    c = top_k_mask(scores, 100, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 20 < int(a[:500].sum()) < 80  # not all from the front


@pytest.mark.parametrize("scope", ["global", "layerwise", "erk"])
@pytest.mark.parametrize("keep", [0, 1, 37, 500, 1234])
def test_scopes_keep_exact_total(scope, keep):
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(8, 3, 3, 3, generator=g), "b": torch.randn(16, 8, 3, 3,
                                                                            generator=g),
              "c": torch.randn(10, 16, generator=g)}
    masks = select(scores, keep, scope, torch.Generator().manual_seed(0))
    assert sum(int(m.sum()) for m in masks.values()) == keep
    assert all(m.shape == scores[n].shape for n, m in masks.items())


def test_layerwise_gives_every_layer_the_same_density():
    scores = {"a": torch.rand(100), "b": torch.rand(1000)}
    masks = select(scores, 110, "layerwise", torch.Generator())
    assert int(masks["a"].sum()) == 10 and int(masks["b"].sum()) == 100


def test_erk_densities_hit_the_target_and_cap_at_one():
    shapes = [torch.Size([16, 3, 3, 3]), torch.Size([64, 64, 3, 3]), torch.Size([10, 64])]
    dens = erk_densities(shapes, 0.1)
    sizes = [s.numel() for s in shapes]
    assert sum(d * s for d, s in zip(dens, sizes, strict=True)) == pytest.approx(0.1 * sum(sizes))
    assert all(0 <= d <= 1 for d in dens)
    assert dens[0] > dens[1]  # small layers denser


def test_apportion_respects_caps_and_total():
    assert apportion([2.5, 2.5, 5.0], 10, [10, 10, 10]) == [3, 2, 5]  # largest remainder
    counts = apportion([5.0, 5.0], 10, [3, 10])
    assert counts == [3, 7]


def test_schedules():
    exp = density_schedule(0.01, 4)
    assert exp == pytest.approx([0.01 ** 0.25, 0.01 ** 0.5, 0.01 ** 0.75, 0.01])
    lin = density_schedule(0.2, 4, "linear")
    assert lin == pytest.approx([0.8, 0.6, 0.4, 0.2])
    counts = removed_counts(270896, 0.982, 20, "exponential")
    assert counts[-1] == 266020 and counts == sorted(counts)


# Written to kill mutants that survived `mutmut run` on selection.py (docs/adding-a-method.md)

def test_apportion_gives_the_spare_units_to_the_largest_remainders():
    assert apportion([1.2, 1.8], 3, [5, 5]) == [1, 2]
    assert apportion([0.9, 0.1, 2.5], 4, [5, 5, 5]) == [1, 0, 3]  # remainders .9, .5 first


def test_apportion_refuses_a_total_over_the_caps_naming_them():
    with pytest.raises(ValueError, match=r"cannot keep 20 weights within the layer caps "
                                         r"\[3, 3\]"):
        apportion([10.0, 10.0], 20, [3, 3])


def test_erk_at_full_density_keeps_every_layer_dense():
    shapes = [torch.Size([16, 3, 3, 3]), torch.Size([64, 64, 3, 3]), torch.Size([10, 64])]
    assert erk_densities(shapes, 1.0) == [1.0, 1.0, 1.0]


def test_erk_selection_keeps_each_layers_erk_share():
    """Per layer, the kept count is its ERK density times its size, to within one weight
    (the largest-remainder rounding), from the ERK formula written out here."""
    g = torch.Generator().manual_seed(0)
    shapes = {"a": (8, 3, 3, 3), "b": (16, 8, 3, 3), "c": (10, 16)}
    scores = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    keep = 300
    total = sum(torch.Size(s).numel() for s in shapes.values())
    raw = {n: sum(s) / torch.Size(s).numel() for n, s in shapes.items()}
    scale = keep / sum(raw[n] * torch.Size(s).numel() for n, s in shapes.items())
    assert all(raw[n] * scale < 1 for n in shapes) and keep < total  # no layer capped here
    masks = select(scores, keep, "erk", torch.Generator().manual_seed(0))
    for name, shape in shapes.items():
        expected = raw[name] * scale * torch.Size(shape).numel()
        assert abs(int(masks[name].sum()) - expected) < 1, name


def test_layerwise_selection_holds_each_layers_cap():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(100, generator=g), "b": torch.randn(100, generator=g)}
    masks = select(scores, 100, "layerwise", torch.Generator().manual_seed(0),
                   caps={"a": 20, "b": 100})
    assert int(masks["a"].sum()) == 20 and int(masks["b"].sum()) == 80


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_ties_follow_the_given_generator_not_the_global_one(scope):
    scores = {"a": torch.zeros(50), "b": torch.zeros(50)}
    torch.manual_seed(1)
    first = select(scores, 30, scope, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    second = select(scores, 30, scope, torch.Generator().manual_seed(7))
    assert all(torch.equal(first[n], second[n]) for n in scores)


def test_an_unknown_scope_is_named_with_the_choices():
    with pytest.raises(ValueError, match="unknown scope 'rows'; choose one of global, "
                                         "layerwise, erk"):
        select({"a": torch.zeros(4)}, 2, "rows", torch.Generator())
