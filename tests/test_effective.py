"""Effective sparsity (Vysogorets and Kempe, JMLR 2023): kept weights on no input-output path
count as pruned. Expected masks are worked out by hand from the networks' wiring; then where
it is reported (Masks, ntksap prune, a run's summary, the report) and its clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import ConvBN, TwoLayer
from torch import nn
from torch.nn import functional as F

from ntksap import Masks, build_model
from ntksap.cli import main
from ntksap.effective import UntraceableModelError, effective_masks
from ntksap.errors import ConfigError
from ntksap.models import model_spec
from ntksap.report import build_report, path_check

pytestmark = pytest.mark.usefixtures("one_thread")


def _masks(**layers: list) -> Masks:
    return Masks({name: torch.tensor(rows, dtype=torch.bool) for name, rows in layers.items()})


def _as_lists(masks: Masks) -> dict[str, list]:
    return {name: m.int().tolist() for name, m in masks.items()}


# Hand-computed networks ------------------------------------------------------------------------

def test_dead_units_lose_their_other_side():
    # fc1 rows are hidden units (inputs x0..x2), fc2 rows outputs (hidden h0..h3):
    # h0 has inputs but no output weight; h1 has an output weight but no input;
    # h2 (x0, x2 -> y0) and h3 (x1 -> y1) lie on paths
    masks = _masks(fc1=[[1, 1, 0], [0, 0, 0], [1, 0, 1], [0, 1, 0]],
                   fc2=[[0, 1, 1, 0], [0, 0, 0, 1]])
    effective = masks.effective(TwoLayer(3, 4, 2), (3,))
    assert _as_lists(effective) == {"fc1": [[0, 0, 0], [0, 0, 0], [1, 0, 1], [0, 1, 0]],
                                    "fc2": [[0, 0, 1, 0], [0, 0, 0, 1]]}
    assert masks.sparsity == pytest.approx(12 / 20)  # 8 of 20 kept
    assert effective.sparsity == pytest.approx(15 / 20)  # 5 of them on a path
    assert [r["density"] for r in effective.layers()] == [3 / 12, 2 / 8]


class Biased(nn.Module):
    """y = fc2(relu(fc1(x))) with biases."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2, 2), nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def test_a_unit_fed_only_by_its_bias_is_on_no_path():
    model = Biased()
    with torch.no_grad():
        model.fc1.bias.fill_(5.0)  # h1 emits a constant 5 whatever the input
    masks = _masks(fc1=[[1, 0], [0, 0]], fc2=[[1, 1]])
    assert _as_lists(masks.effective(model, (2,))) == {"fc1": [[1, 0], [0, 0]],
                                                       "fc2": [[1, 0]]}


class Residual(nn.Module):
    """stem -> BN -> ReLU -> h;  h + b(relu(a(h)));  global average pool;  fc. 1x1 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.a = nn.Conv2d(2, 2, 1, bias=False)
        self.b = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        h = h + self.b(torch.relu(self.a(h)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _residual_masks(a: list, b: list) -> Masks:
    return Masks({"stem": torch.ones(2, 1, 1, 1, dtype=torch.bool),
                  "a": torch.tensor(a, dtype=torch.bool).view(2, 2, 1, 1),
                  "b": torch.tensor(b, dtype=torch.bool).view(2, 2, 1, 1),
                  "fc": torch.ones(1, 2, dtype=torch.bool)})


def test_a_dead_residual_branch_leaves_the_shortcut_path():
    model = Residual()
    dead = _residual_masks(a=[[1, 1], [1, 1]], b=[[0, 0], [0, 0]]).effective(model, (1, 3, 3))
    assert {n: int(m.sum()) for n, m in dead.items()} == {"stem": 2, "a": 0, "b": 0, "fc": 2}
    assert dead.sparsity == pytest.approx(8 / 12)
    # b keeps only (out 0 <- a's channel 1): a's row 1 feeds the output, its row 0 does not
    half = _residual_masks(a=[[1, 1], [1, 1]], b=[[0, 1], [0, 0]]).effective(model, (1, 3, 3))
    assert half["a"].view(2, 2).int().tolist() == [[0, 0], [1, 1]]
    assert half["b"].view(2, 2).int().tolist() == [[0, 1], [0, 0]]


class Chain(nn.Module):
    """x (3) -> fc1 -> 3 -> fc2 -> 3 -> fc3 -> 2, ReLU between, no biases."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 3, bias=False)
        self.fc2 = nn.Linear(3, 3, bias=False)
        self.fc3 = nn.Linear(3, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_one_connected_path_among_dangling_weights():
    # path x2 -> h1 -> g0 -> y1; dangling: x0 -> h2 -> g2 (g2 has no output weight) and
    # g1 -> y0 (g1 has no input weight)
    masks = _masks(fc1=[[0, 0, 0], [0, 0, 1], [1, 0, 0]],
                   fc2=[[0, 1, 0], [0, 0, 0], [0, 0, 1]],
                   fc3=[[0, 1, 0], [1, 0, 0]])
    effective = masks.effective(Chain(), (3,))
    assert _as_lists(effective) == {"fc1": [[0, 0, 0], [0, 0, 1], [0, 0, 0]],
                                    "fc2": [[0, 1, 0], [0, 0, 0], [0, 0, 0]],
                                    "fc3": [[0, 0, 0], [1, 0, 0]]}
    dense = Masks({n: torch.ones_like(m) for n, m in masks.items()})
    assert _as_lists(dense.effective(Chain(), (3,))) == _as_lists(dense)


def test_weights_that_only_ever_see_padding_are_on_no_path():
    # a 3x3 convolution (padding 1) on a 1x1 image: 8 of its 9 taps only multiply padding
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.Flatten(),
                          nn.Linear(1, 1))
    masks = Masks.of(model)
    center = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    center[0, 0, 1, 1] = True
    assert torch.equal(masks.effective(model, (1, 1, 1))["0"], center)


def test_max_pooling_connects_every_entry_of_its_window():
    # 3x3 conv (padding 1) on a 2x2 image, then a 2x2 max-pool over its whole output: every
    # tap touches a real pixel at one of the four output positions (tap row 0 at output row 1,
    # row 2 at output row 0, ...), and the pool connects all four positions to the output
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(1, 1))
    effective = Masks.of(model).effective(model, (1, 2, 2))
    assert bool(effective["0"].all()) and bool(effective["3"].all())


def test_deep_networks_do_not_overflow():
    # 160 dense layers of width 128: 128^160 ~ 1e337 paths, beyond float64 (1.8e308)
    depth, width = 160, 128
    assert depth * math.log10(width) > math.log10(torch.finfo(torch.float64).max)
    layers = [m for _ in range(depth) for m in (nn.Linear(width, width, bias=False), nn.ReLU())]
    model = nn.Sequential(*layers)
    masks = Masks.of(model)
    assert masks.effective(model, (width,)).sparsity == 0.0
    # unit 7 of the 80th layer loses every input weight: its 128 output weights go with it
    kept = dict(masks)
    kept["158"] = kept["158"].clone()
    kept["158"][7] = False
    cut = Masks(kept)
    effective = cut.effective(model, (width,))
    assert cut.total - cut.remaining == width
    assert effective.remaining == cut.remaining - width
    assert not effective["160"][:, 7].any() and bool(effective["160"][:, :7].all())


# Dense networks and the models of the zoo -------------------------------------------------------

@pytest.mark.parametrize("name", ["lenet300", "lenet5", "resnet20", "convnet"])
def test_dense_network_effective_equals_nominal(name):
    model = build_model(name, 10, seed=0)
    masks = Masks.of(model)
    effective = masks.effective(model, model_spec(name).input_shape)
    assert effective.sparsity == masks.sparsity == 0.0
    assert all(torch.equal(effective[n], masks[n]) for n in masks)


def test_agrees_with_the_reports_path_check_on_random_masks():
    # two implementations written apart (rescaled path counts vs support propagation)
    model = build_model("resnet20", 10, seed=0)
    gen = torch.Generator().manual_seed(3)
    masks = Masks({n: torch.rand(m.shape, generator=gen) > 0.99
                   for n, m in Masks.of(model).items()})
    effective = masks.effective(model, (3, 32, 32))
    assert {n: int(m.sum()) for n, m in effective.items()} == path_check(
        build_model("resnet20", 10, seed=0), masks, (3, 32, 32))["effective"]
    assert effective.sparsity > masks.sparsity


def test_the_model_is_left_as_it_is():
    model = ConvBN()
    gen = torch.Generator().manual_seed(0)
    masks = Masks({n: torch.rand(m.shape, generator=gen) > 0.5
                   for n, m in Masks.of(model).items()})
    masks.apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 2, 6, 6)
    out = model.eval()(x)
    masks.effective(model, (2, 6, 6))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(x), out) and not model.training


# Models whose paths cannot be followed -------------------------------------------------------

class Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.norm = nn.Linear(4, 4), nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x))


class Difference(TwoLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(h) - self.fc2(h)


class Offset(TwoLayer):
    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) + self.offset)


class Shifted(TwoLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) + 1.0)


class Branching(TwoLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h) if h.sum() > 0 else self.fc2(-h)


@pytest.mark.parametrize("model,message", [
    (Normed(), "module 'norm' \\(LayerNorm\\)"),
    (Difference(), "function 'sub'"),
    (Offset(), "parameter or buffer 'offset' used directly"),
    (Shifted(), "addition of a constant"),
    (Branching(), "needs a model torch.fx can trace; Branching cannot be traced"),
])
def test_operations_without_a_path_meaning_are_a_clear_error(model, message):
    with pytest.raises(UntraceableModelError, match=message):
        Masks.of(model).effective(model, (4,) if isinstance(model, Normed) else (3,))


# Where it is reported ------------------------------------------------------------------------

def _mlp_on_path(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Kept weights of an MLP (masks in order, each (out, in)) on some input-output path, by
    reachability written out here: unit j of a layer is reached from the inputs if a kept
    weight leads into it from a reached unit, and reaches the outputs if a kept weight leads
    from it to a unit that does."""
    reached = [torch.ones(masks[0].shape[1], dtype=torch.bool)]
    for m in masks:
        reached.append((m & reached[-1][None, :]).any(1))
    reaching = [torch.ones(masks[-1].shape[0], dtype=torch.bool)]
    for m in reversed(masks):
        reaching.insert(0, (m & reaching[0][:, None]).any(0))
    return [m & reached[i][None, :] & reaching[i + 1][:, None] for i, m in enumerate(masks)]


def test_prune_prints_and_records_effective_sparsity(capsys, tmp_path):
    argv = ["prune", "--model", "lenet300", "--method", "random", "--sparsity", "0.998",
            "--no-progress", "--seed", "0", "--out", str(tmp_path / "m.pt")]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # at 0.2 % density most of fc1's ~470 kept weights lead into units with no output weight
    assert out["effective_sparsity"] > out["sparsity"]
    saved = Masks.load(tmp_path / "m.pt")
    on_path = _mlp_on_path([saved[r["name"]] for r in out["layers"]])
    for layer, expected in zip(out["layers"], on_path, strict=True):
        assert layer["effective_density"] == int(expected.sum()) / expected.numel()
    model = build_model("lenet300", 10, seed=0)
    kept = out["total"] * (1 - out["effective_sparsity"])
    assert kept == pytest.approx(sum(
        r["effective_density"] * math.prod(r["shape"]) for r in out["layers"]))
    assert out["total"] == Masks.of(model).total
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "effective" in text.splitlines()[0]  # the table's column
    assert f"effective sparsity {out['effective_sparsity']:.4f}" in text


def test_prune_says_why_without_effective_sparsity(capsys, monkeypatch):
    def untraceable(self, model, input_shape):
        raise UntraceableModelError("effective sparsity cannot follow ... (a test)")

    monkeypatch.setattr(Masks, "effective", untraceable)
    assert main(["prune", "--model", "lenet300", "--method", "magnitude", "--sparsity", "0.5",
                 "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["effective_sparsity"] is None
    assert main(["prune", "--model", "lenet300", "--method", "magnitude", "--sparsity", "0.5",
                 "--no-progress"]) == 0
    assert "effective sparsity not computed: effective sparsity cannot follow" in \
        capsys.readouterr().out


def test_a_run_records_effective_sparsity(capsys, tmp_path):
    argv = ["run", "--preset", "cifar10-resnet20", "--dataset", "synthetic",
            "--limit-per-class", "20", "--model", "convnet", "--method", "random",
            "--sparsity", "0.97", "--epochs", "1", "--batch-size", "50", "--no-progress",
            "--json", "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    masks = Masks.load(Path(summary["run_dir"]) / "masks.pt")
    expected = masks.effective(build_model("convnet", 10), (3, 32, 32))
    assert summary["effective_sparsity"] == pytest.approx(expected.sparsity)
    assert summary["effective_sparsity"] >= summary["sparsity"]
    rows = json.loads((Path(summary["run_dir"]) / "densities.json").read_text())
    assert [r["effective_density"] for r in rows] == pytest.approx(
        [r["density"] for r in expected.layers()])
    assert summary["holdout"] == 0.0 and summary["final_val_acc"] is None


def _fake_run(root: Path, seed: int, summary_extra: dict, masks: Masks | None = None) -> None:
    config = {"preset": "mnist-lenet300-short", "method": "random", "sparsity": 0.9,
              "seed": seed, "dataset": "mnist", "model": "lenet300", "num_classes": 10,
              "rounds": 1, "repeats": 0, "scope": "global", "transform": "",
              "limit_per_class": 0, "holdout": 0.1}
    directory = root / "mnist-lenet300-short" / f"random-sp0.9-seed{seed}"
    directory.mkdir(parents=True)
    if masks is not None:
        masks.save(directory / "masks.pt")
        (directory / "densities.json").write_text(json.dumps(masks.layers()))
    (directory / "config.json").write_text(json.dumps({"config": config}))
    (directory / "summary.json").write_text(json.dumps(
        {"final_test_acc": 0.95, "best_test_acc": 0.96, **summary_extra}))


def test_report_shows_both_sparsities_and_plots_against_either(tmp_path, capsys):
    runs = tmp_path / "runs"
    _fake_run(runs, 0, {"effective_sparsity": 0.9950})
    _fake_run(runs, 1, {"effective_sparsity": 0.9970})
    report = build_report(runs, tmp_path / "report", sparsity_axis="effective")
    row = next(r for r in report.rows if r.method == "random")
    assert row.sparsity == 90.0 and row.effective_sparsity == pytest.approx(99.60)
    assert "[eff. 99.60 %]" in report.markdown.read_text()
    assert "effective_sparsity" in report.csv.read_text().splitlines()[0]
    assert any(f.name.endswith("-accuracy.png") for f in report.figures)
    assert "Accuracy vs effective sparsity" in report.html.read_text()
    with pytest.raises(ConfigError, match="sparsity axis 'actual'"):
        build_report(runs, tmp_path / "other", sparsity_axis="actual")
    assert main(["report", str(runs), "--out", str(tmp_path / "cli"),
                 "--sparsity-axis", "effective"]) == 0
    capsys.readouterr()


def test_report_falls_back_to_the_path_check_for_older_runs(tmp_path):
    # a run recorded before effective sparsity: fc1 fully pruned leaves no path at all
    model = build_model("lenet300", 10)
    masks = Masks({n: (torch.zeros_like(m) if n == "fc1" else m)
                   for n, m in Masks.of(model).items()})
    _fake_run(tmp_path / "runs", 0, {}, masks)
    row = next(r for r in build_report(tmp_path / "runs", tmp_path / "report").rows)
    assert row.effective_sparsity == pytest.approx(100.0)
    assert row.sparsity == 90.0  # the config's nominal sparsity


def test_effective_masks_function_needs_one_input():
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.fc(x + y)

    model = TwoInputs()
    with pytest.raises(UntraceableModelError, match="one input; TwoInputs.forward takes 2"):
        effective_masks(model, Masks.of(model), (2,))
