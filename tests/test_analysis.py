"""Mask analysis (ntksap.analysis, ntksap compare-masks): overlaps against set counts done here,
the per-layer densities, the NTK distance to dense, and the command's JSON and errors."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import ntksap
from ntksap.analysis import compare_masks, jaccard, overlap, write_comparison
from ntksap.cli import main
from ntksap.errors import MaskMismatchError

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_masks(seed: int, density: float = 0.4) -> ntksap.Masks:
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv": (4, 3, 3, 3), "fc": (10, 4)}
    return ntksap.Masks({n: torch.rand(s, generator=g) < density for n, s in shapes.items()})


def _set_jaccard(a: ntksap.Masks, b: ntksap.Masks) -> float:
    """|A and B| / |A or B| from the sets of kept (layer, index) pairs."""
    def kept(m):
        return {(n, i) for n in m for i in m[n].flatten().nonzero().flatten().tolist()}
    sa, sb = kept(a), kept(b)
    return len(sa & sb) / len(sa | sb)


def test_overlap_of_a_mask_with_itself_is_one_and_with_its_complement_zero():
    a = _random_masks(0)
    complement = ntksap.Masks({n: ~m for n, m in a.items()})
    same, opposite = overlap(a, a), overlap(a, complement)
    assert same["jaccard"] == 1.0 and opposite["jaccard"] == 0.0
    assert all(r["jaccard"] == 1.0 for r in same["layers"])
    assert all(r["jaccard"] == 0.0 for r in opposite["layers"])


def test_overlap_counts_kept_weights_in_common_over_kept_by_either():
    a, b = _random_masks(1), _random_masks(2)
    result = overlap(a, b)
    assert result["jaccard"] == pytest.approx(_set_jaccard(a, b), abs=1e-15)
    for row in result["layers"]:
        one = ntksap.Masks({row["layer"]: a[row["layer"]]})
        two = ntksap.Masks({row["layer"]: b[row["layer"]]})
        assert row["jaccard"] == pytest.approx(_set_jaccard(one, two), abs=1e-15)
        assert row["both"] == int((a[row["layer"]] & b[row["layer"]]).sum())
    assert jaccard(torch.tensor([True, True, False, False]),
                   torch.tensor([True, False, True, False])) == pytest.approx(1 / 3)
    assert jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0


def test_comparison_has_densities_side_by_side_and_the_ntk_distance_to_dense(tmp_path):
    model = ntksap.build_model("convnet", 10, seed=0)
    full = ntksap.Masks.of(model)
    thin = ntksap.prune(model, "magnitude", 0.9)
    comparison = compare_masks({"full": full, "thin": thin}, model=model,
                               inputs=torch.randn(3, 3, 32, 32))
    assert [r["layer"] for r in comparison.layers] == list(full)
    assert [r["depth"] for r in comparison.layers] == list(range(len(full)))
    for row in comparison.layers:
        assert row["density"]["full"] == 1.0
        assert row["density"]["thin"] == int(thin[row["layer"]].sum()) / thin[row["layer"]].numel()
    summary = {r["mask"]: r for r in comparison.summary()}
    assert summary["full"]["ntk_log_distance_to_dense"] == pytest.approx(0.0, abs=1e-4)
    assert summary["thin"]["ntk_log_distance_to_dense"] > 0.1
    files = write_comparison(comparison, tmp_path / "out")
    for path in files.values():
        assert (tmp_path / "out" / path.split("/")[-1]).stat().st_size > 0
    assert "| full | 1 |" in (tmp_path / "out" / "masks.md").read_text()


def test_masks_of_different_networks_are_refused():
    a = _random_masks(0)
    b = ntksap.Masks({"conv": a["conv"], "fc": torch.ones(10, 5, dtype=torch.bool)})
    with pytest.raises(MaskMismatchError, match="'fc'"):
        compare_masks({"a": a, "b": b})


def _saved(tmp_path, model_name: str = "convnet"):
    model = ntksap.build_model(model_name, 10, seed=0)
    paths = []
    for method in ("magnitude", "random"):
        masks = ntksap.prune(model, method, 0.8, input_shape=(3, 32, 32))
        masks.meta.update(model=model_name)
        paths.append(tmp_path / f"{method}.pt")
        masks.save(paths[-1])
    return paths


def test_cli_compare_masks_json(tmp_path, capsys):
    a, b = _saved(tmp_path)
    assert main(["compare-masks", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (pair,) = out["pairs"]
    assert (pair["a"], pair["b"]) == ("magnitude 80.0%", "random 80.0%")
    expected = _set_jaccard(ntksap.Masks.load(a), ntksap.Masks.load(b))
    assert pair["jaccard"] == pytest.approx(expected, abs=1e-15)
    assert [r["layer"] for r in pair["layers"]] == list(ntksap.Masks.load(a))
    assert {"jaccard", "kept_a", "kept_b", "both"} <= set(pair["layers"][0])
    assert "ntk_log_distance_to_dense" not in out["masks"][0]  # no --model, no NTK


def test_cli_compare_masks_with_the_model_writes_the_figure_and_table(tmp_path, capsys):
    a, b = _saved(tmp_path)
    assert main(["compare-masks", str(a), str(b), "--model", "convnet", "--inputs", "2",
                 "--labels", "mag", "rand", "--out", str(tmp_path / "cmp"),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "NTK log distance to dense" in printed
    assert (tmp_path / "cmp" / "masks.png").stat().st_size > 1000
    assert "| mag |" in (tmp_path / "cmp" / "masks.md").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (["--inputs", "4"], "--inputs sets the NTK's inputs, which need --model"),
    (["--labels", "one"], "1 labels for 2 mask files"),
])
def test_cli_compare_masks_refuses_bad_flags(tmp_path, capsys, extra, message):
    a, b = _saved(tmp_path)
    assert main(["compare-masks", str(a), str(b), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntksap compare-masks: error: ") and message in err


def test_cli_compare_masks_needs_two_existing_files(tmp_path, capsys):
    a, _ = _saved(tmp_path)
    assert main(["compare-masks", str(a)]) == 2
    assert "at least two mask files" in capsys.readouterr().err
    assert main(["compare-masks", str(a), str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----- the report's heatmap

def _fake_run(root, method: str, seed: int, sparsity: float = 0.9) -> None:
    """A finished run directory with a convnet mask (the report reads nothing else here)."""
    directory = root / "cifar10-resnet20" / f"{method}-sp{sparsity}-seed{seed}"
    directory.mkdir(parents=True)
    model = ntksap.build_model("convnet", 10, seed=seed)
    ntksap.prune(model, method, sparsity, input_shape=(3, 32, 32), seed=seed).save(
        directory / "masks.pt")
    config = {"preset": "cifar10-resnet20", "method": method, "sparsity": sparsity,
              "seed": seed, "dataset": "cifar10", "model": "convnet", "num_classes": 10}
    (directory / "config.json").write_text(json.dumps({"config": config}))
    (directory / "summary.json").write_text(json.dumps(
        {"final_test_acc": 0.5, "best_test_acc": 0.5, "best_epoch": 1}))


def test_report_has_a_mask_overlap_heatmap_at_the_chosen_sparsity(tmp_path):
    from ntksap.report import build_report, load_points, variant_labels
    from ntksap.report.overlap import overlap_figure

    runs = tmp_path / "runs"
    for method, seed in (("magnitude", 0), ("magnitude", 1), ("random", 1), ("synflow", 1)):
        _fake_run(runs, method, seed)
    _fake_run(runs, "random", 0, sparsity=0.5)
    points = load_points(runs)
    labels = variant_labels(points)
    heatmap = overlap_figure(points, labels)  # default: the highest sparsity, 0.9
    assert (heatmap.sparsity, heatmap.seed) == (0.9, 1)  # the seed three variants share
    assert heatmap.labels == ["magnitude", "random", "synflow"]
    assert overlap_figure(points, labels, 0.5) is None  # one variant only
    assert overlap_figure(points, labels, 0.3) is None
    report = build_report(runs, tmp_path / "report", overlap_sparsity=0.9)
    assert any(f.name.endswith("-overlap.png") for f in report.figures)
    assert "Mask overlap" in report.html.read_text()


def test_report_refuses_an_overlap_sparsity_out_of_range(tmp_path, capsys):
    _fake_run(tmp_path / "runs", "magnitude", 0)
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r"),
                 "--overlap-sparsity", "98.2"]) == 2
    assert "a fraction in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ----- the random-mask baseline and the seeds the NTK is compared on

def _enumerated_chance(layers: list[tuple[int, int, int]]) -> float:
    """E|a and b| / E|a or b| over every placement of k_a and k_b kept weights among n in
    each layer (n, k_a, k_b), counted by enumeration: the definition, not the formula."""
    both = either = 0.0
    for n, ka, kb in layers:
        placements_a = list(itertools.combinations(range(n), ka))
        placements_b = list(itertools.combinations(range(n), kb))
        pairs = len(placements_a) * len(placements_b)
        common = sum(len(set(x) & set(y)) for x in placements_a for y in placements_b)
        both += common / pairs
        either += (ka + kb) - common / pairs
    return both / either


def test_each_pair_has_the_overlap_two_random_masks_would_have():
    a = ntksap.Masks({"conv": torch.tensor([1, 1, 0, 0, 0, 1], dtype=torch.bool),
                      "fc": torch.tensor([1, 0, 0, 0, 0], dtype=torch.bool)})
    b = ntksap.Masks({"conv": torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool),
                      "fc": torch.tensor([0, 1, 1, 0, 0], dtype=torch.bool)})
    result = overlap(a, b)
    assert result["random_jaccard"] == pytest.approx(
        _enumerated_chance([(6, 3, 3), (5, 1, 2)]), abs=1e-12)
    conv, fc = result["layers"]
    assert conv["random_jaccard"] == pytest.approx(_enumerated_chance([(6, 3, 3)]), abs=1e-12)
    assert fc["random_jaccard"] == pytest.approx(_enumerated_chance([(5, 1, 2)]), abs=1e-12)
    assert result["jaccard"] == pytest.approx(_set_jaccard(a, b))  # 1/6: below chance here


def test_cli_shows_the_baseline_in_the_table_and_the_csv(tmp_path, capsys):
    a, b = _saved(tmp_path)
    assert main(["compare-masks", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    pair = overlap(ntksap.Masks.load(a), ntksap.Masks.load(b))
    assert f"(random masks {pair['random_jaccard']:.3f})" in printed
    assert "| random masks |" in (tmp_path / "cmp" / "masks.md").read_text()
    rows = (tmp_path / "cmp" / "pairs.csv").read_text().splitlines()
    assert rows[0].split(",")[4] == "random_jaccard"
    assert float(rows[-1].split(",")[4]) == pytest.approx(pair["random_jaccard"])


def _scored(tmp_path, seed: int, method: str) -> str:
    path = str(tmp_path / f"{method}-{seed}.pt")
    assert main(["prune", "--model", "convnet", "--method", method, "--sparsity", "0.8",
                 "--seed", str(seed), "--out", path, "--json", "--no-progress"]) == 0
    return path


def test_the_ntk_is_compared_on_the_seed_the_masks_record(tmp_path, capsys):
    a, b = _scored(tmp_path, 5, "magnitude"), _scored(tmp_path, 5, "random")
    capsys.readouterr()
    assert main(["compare-masks", a, b, "--model", "convnet", "--inputs", "2", "--json",
                 "--no-progress"]) == 0
    cli = json.loads(capsys.readouterr().out)["masks"]
    model = ntksap.build_model("convnet", 10, seed=5)
    inputs = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(5))
    api = compare_masks({"a": ntksap.Masks.load(a), "b": ntksap.Masks.load(b)}, model=model,
                        inputs=inputs).summary()
    for mine, theirs in zip(cli, api, strict=True):
        assert mine["ntk_log_distance_to_dense"] == pytest.approx(
            theirs["ntk_log_distance_to_dense"], rel=1e-9)


def test_masks_of_different_seeds_are_refused_unless_one_seed_is_given(tmp_path, capsys):
    a, b = _scored(tmp_path, 0, "magnitude"), _scored(tmp_path, 3, "magnitude")
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert main(["compare-masks", a, b, "--model", "convnet", "--inputs", "2",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different initializations (seed magnitude 80.0%: 0, magnitude 80.0%': 3)" in err
    assert "--seed S" in err and not out.exists()
    assert main(["compare-masks", a, b, "--model", "convnet", "--inputs", "2", "--seed", "1",
                 "--json", "--no-progress"]) == 0
    assert main(["compare-masks", a, b, "--json"]) == 0  # no NTK: no weights to agree on
