"""ntksap.ntk: the empirical NTK, its trace and estimates, spectra, and `ntksap ntk`."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import ConvBN, TinyLinear, TwoLayer
from oracles import ntk_jacobian
from torch import nn

import ntksap
from ntksap.cli import main
from ntksap.errors import ConfigError, MaskMismatchError, MemoryBudgetError, OutputShapeError
from ntksap.ntk import (
    compare_spectra,
    condition_number,
    eigenvalues,
    empirical_ntk,
    finite_difference_trace,
    hutchinson_trace,
    jacobian_rows,
    jacobian_sq_norms,
    ntk_trace,
    spectrum_distance,
)
from ntksap.ntk.memory import parse_bytes, plan_kernel

pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def convnet(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    return ntksap.build_model("convnet", 10, seed=seed).to(dtype)


def inputs(n: int, shape=(3, 32, 32), seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)).to(dtype)


# ----- the kernel


def test_kernel_equals_the_oracle_in_float64():
    model, x = convnet(dtype=torch.float64), inputs(5, dtype=torch.float64)
    J = ntk_jacobian(model, x)
    K = empirical_ntk(model, x)
    assert K.shape == (50, 50) and K.dtype == torch.float64
    assert rel(K, J @ J.T) < 1e-12


@pytest.mark.parametrize("backend", ["structured", "func"])
def test_kernel_is_symmetric_psd_and_trace_is_sum_of_squared_gradient_norms(backend):
    torch.manual_seed(0)
    model, x = ConvBN(num_classes=3).double(), torch.randn(6, 2, 8, 8, dtype=torch.float64)
    K = empirical_ntk(model, x, backend=backend)
    assert torch.equal(K, K.T)
    eigs = eigenvalues(K)
    assert float(eigs.min()) > -1e-10 * float(eigs.max())
    J = ntk_jacobian(model, x)
    norms = J.pow(2).sum(1)  # squared per-example, per-logit gradient norms
    assert float(K.trace()) == pytest.approx(float(norms.sum()), rel=1e-12)
    assert ntk_trace(model, x, backend=backend) == pytest.approx(float(norms.sum()), rel=1e-12)
    assert torch.allclose(jacobian_sq_norms(model, x).flatten(), norms, rtol=1e-12)
    assert float(eigs.sum()) == pytest.approx(float(norms.sum()), rel=1e-10)


def test_structured_and_func_backends_agree_dense_masked_and_prunable():
    model, x = convnet(), inputs(4)
    masks = ntksap.prune(convnet(), "random", 0.7, input_shape=(3, 32, 32), seed=1,
                         progress=False)
    for net in (model, masks.apply(convnet())):
        for params in ("all", "prunable"):
            a = empirical_ntk(net, x, params=params, backend="structured")
            b = empirical_ntk(net, x, params=params, backend="func")
            assert rel(a, b) < 1e-5


class Wide(nn.Module):
    """Large conv and linear weights (own column groups) next to small parameters."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 150), nn.ReLU())
        self.fc = nn.Linear(150, 4)

    def forward(self, x):
        return self.fc(self.features(x))


def test_large_layers_dense_and_masked_against_the_oracle():
    torch.manual_seed(0)
    model, x = Wide().double(), torch.randn(4, 3, 8, 8, dtype=torch.float64)
    J = ntk_jacobian(model, x)
    assert rel(empirical_ntk(model, x), J @ J.T) < 1e-12
    masks = ntksap.Masks({n: torch.rand_like(m.weight) > 0.6
                          for n, m in ntksap.prunable_layers(model).items()})
    masks.apply(model)
    J = ntk_jacobian(model, x)
    for backend in ("structured", "func"):
        assert rel(empirical_ntk(model, x, backend=backend), J @ J.T) < 1e-12
    assert ntk_trace(model, x) == pytest.approx(float(J.pow(2).sum()), rel=1e-12)


def test_masked_kernel_counts_only_kept_weights_closed_form():
    # f(x) = W x: K[(i, c), (j, d)] = delta_cd sum_k M_ck x_ik x_jk for a mask M
    model = TinyLinear(5, 3).double()
    mask = torch.tensor([[1, 0, 1, 0, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    ntksap.Masks({"fc": mask}).apply(model)
    x = torch.randn(4, 5, dtype=torch.float64)
    K = empirical_ntk(model, x).view(4, 3, 4, 3)
    expected = torch.einsum("ck,ik,jk->icj", mask.double(), x, x)
    for c in range(3):
        assert torch.allclose(K[:, c, :, c], expected[:, c, :])
        for d in range(3):
            if d != c:
                assert torch.all(K[:, c, :, d] == 0)
    # a pruned network's kernel is the dense kernel of its kept weights only
    dense = empirical_ntk(TinyLinear(5, 3).double(), x)
    assert not torch.allclose(dense, K.view(12, 12))


def test_bias_columns_and_prunable_selection():
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    K_all = empirical_ntk(model, x).view(5, 3, 5, 3)
    K_w = empirical_ntk(model, x, params="prunable").view(5, 3, 5, 3)
    # bias adds 1 on the diagonal blocks in logits
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(K_all - K_w, torch.ones(5, 5, dtype=torch.float64)[:, None, :, None]
                          * eye[None, :, None, :])


def test_batchnorm_uses_the_batch_statistics_and_leaves_the_model_alone():
    model, x = convnet(), inputs(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    K_train = empirical_ntk(model, x)
    model.eval()
    K_eval = empirical_ntk(model, x)
    assert torch.equal(K_train, K_eval)  # BatchNorm: batch statistics either way
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    # no mixing between examples: with the same statistics, a sub-batch gives the sub-kernel
    sub = empirical_ntk(model, x[:2], statistics_inputs=x)
    assert rel(sub, K_eval[:20, :20]) < 1e-5


def test_recompute_mode_and_logit_chunks_match_the_stored_kernel():
    model, x = convnet(), inputs(6)
    K = empirical_ntk(model, x)
    with jacobian_rows(model, x) as jac:
        work, row = jac.work_bytes, jac.num_params * 4
    kernel = 60 * 60 * 4
    with pytest.raises(MemoryBudgetError):
        plan_kernel(6, 10, jac.num_params, 4, work, kernel + 10)
    # J (60 rows) does not fit, blocks of one input x 10 logits do, then blocks of 4 logits
    for budget, logits in ((kernel + 20 * row + work(1, 10) + 100, 10),
                           (kernel + 8 * row + work(1, 4) + 100, 4)):
        plan = plan_kernel(6, 10, jac.num_params, 4, work, budget)
        assert (plan.mode, plan.inputs_per_chunk, plan.logits_per_chunk) == (
            "recompute", 1, logits)
        K2 = empirical_ntk(model, x, memory_budget=budget)
        assert rel(K2, K) < 1e-5 and torch.equal(K2, K2.T)
    sub = empirical_ntk(model, x, logits=[2, 7])
    assert rel(sub, K.view(6, 10, 6, 10)[:, [2, 7]][:, :, :, [2, 7]].reshape(12, 12)) < 1e-5


def test_inplace_activation_after_a_hooked_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(4 * 36, 3)).double()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    J = ntk_jacobian(model, x)
    assert rel(empirical_ntk(model, x, backend="structured"), J @ J.T) < 1e-12


def test_any_model_through_the_func_backend():
    class Odd(nn.Module):  # a GroupNorm and a raw parameter: not the structured layers
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.norm = nn.GroupNorm(2, 4)
            self.scale = nn.Parameter(torch.randn(3))
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.norm(self.conv(x)).mean((2, 3))) * self.scale

    model = Odd().double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    J = ntk_jacobian(model, x)
    assert rel(empirical_ntk(model, x), J @ J.T) < 1e-12


# ----- traces


def test_hutchinson_converges_to_the_exact_trace():
    torch.manual_seed(0)
    model, x = TwoLayer(4, 16, 3).double(), torch.randn(8, 4, dtype=torch.float64)
    exact = ntk_trace(model, x)
    for distribution in ("gaussian", "rademacher"):
        est = hutchinson_trace(model, x, samples=4000, distribution=distribution, seed=1,
                               probes_per_pass=500)
        assert abs(est.value - exact) < 4 * est.stderr
        assert abs(est.value - exact) / exact < 0.05
        running = est.running_mean()
        first, last = abs(float(running[99]) - exact), abs(float(running[-1]) - exact)
        assert last < max(first, 0.02 * exact)
        assert est.stderr < 0.05 * exact


def test_hutchinson_is_unbiased_on_a_linear_model_and_finite_differences_are_close():
    model, x = convnet(), inputs(3)
    exact = ntk_trace(model, x)
    est = hutchinson_trace(model, x, samples=256, seed=0)
    fd = finite_difference_trace(model, x, samples=256, eps=1e-3, seed=0, params="all")
    assert abs(est.value - exact) < 4 * est.stderr
    assert abs(fd.value - exact) < 4 * fd.stderr + 0.02 * exact
    # same probes: the finite difference tends to the forward-mode product as eps -> 0
    assert fd.value == pytest.approx(est.value, rel=0.02)


# ----- spectra and plots


def test_spectrum_helpers():
    K = torch.diag(torch.tensor([4.0, 1.0, 0.5]))
    eigs = eigenvalues(K)
    assert eigs.tolist() == [4.0, 1.0, 0.5] and eigs.dtype == torch.float64
    assert condition_number(eigs) == 8.0
    assert condition_number(torch.tensor([1.0, 0.0])) == float("inf")
    assert spectrum_distance(eigs, eigs) == 0.0
    assert spectrum_distance(eigs / 2, eigs) == pytest.approx(math.log(2), rel=1e-9)
    assert spectrum_distance(eigs / 2, eigs, "relative") == pytest.approx(0.5)


def test_compare_spectra_dense_first(tmp_path):
    model, x = convnet(), inputs(3)
    masks = {"magnitude": ntksap.prune(convnet(), "magnitude", 0.9, input_shape=(3, 32, 32),
                                       progress=False)}
    cmp = compare_spectra(model, masks, x)
    assert list(cmp.eigenvalues) == ["dense", "magnitude"]
    dense, pruned = cmp.rows
    assert dense["log_distance_to_dense"] == 0 and pruned["log_distance_to_dense"] > 0
    assert pruned["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert pruned["trace"] < dense["trace"]
    assert not ntksap.measured_sparsity(model)  # the model itself stays dense


# ----- bad input


def test_outputs_not_batch_by_logits():
    class Seq(nn.Module):
        def forward(self, x):
            return x.unsqueeze(1).repeat(1, 2, 1)

    model = nn.Sequential(nn.Linear(3, 4), Seq())
    with pytest.raises(OutputShapeError, match=r"returns \(5, 2, 4\).*\(batch, k\)"):
        empirical_ntk(model, torch.randn(5, 3))
    with pytest.raises(OutputShapeError, match="logits must be indices"):
        empirical_ntk(nn.Linear(3, 2), torch.randn(5, 3), logits=[2])


def test_memory_budget_errors_say_what_is_needed():
    model, x = convnet(), inputs(100)
    with pytest.raises(MemoryBudgetError, match=r"1000 x 1000.*3.81 MiB.*at most \d+ inputs"):
        empirical_ntk(model, x, memory_budget="1MiB")
    with pytest.raises(MemoryBudgetError,
                       match=r"needs at least .* two Jacobian rows.*one input and one logit"):
        empirical_ntk(model, x[:2], memory_budget="20KiB")
    assert parse_bytes("2GiB") == 2**31 and parse_bytes("1.5MB") == 1_500_000


# ----- the command


def _masks(tmp_path, method: str, sparsity: float) -> str:
    masks = ntksap.prune(ntksap.build_model("convnet", 10, seed=0), method, sparsity,
                         input_shape=(3, 32, 32), seed=0, progress=False)
    masks.meta.update(model="convnet", num_classes=10)
    path = tmp_path / f"{method}.pt"
    masks.save(path)
    return str(path)


def test_cli_ntk_json(capsys, tmp_path):
    a, b = _masks(tmp_path, "magnitude", 0.8), _masks(tmp_path, "random", 0.8)
    out = tmp_path / "ntk"
    assert main(["ntk", "--model", "convnet", "--inputs", "4", "--masks", a, b, "--out",
                 str(out), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["network"] for r in report["rows"]] == ["dense", "magnitude 80.0%",
                                                      "random 80.0%"]
    assert report["kernel_size"] == 40
    for key in ("figure", "table_csv", "table_md", "eigenvalues"):
        assert (out / report[key].rsplit("/", 1)[-1]).stat().st_size > 0
    row = report["rows"][1]
    for key in ("trace", "lambda_max", "lambda_min", "condition", "log_distance_to_dense",
                "relative_distance_to_dense", "sparsity"):
        assert key in row
    assert (out / "spectrum.png").read_bytes()[:4] == b"\x89PNG"
    assert "| network |" in (out / "spectrum.md").read_text()


def test_cli_ntk_masks_for_another_model(capsys, tmp_path):
    path = _masks(tmp_path, "magnitude", 0.5)
    assert main(["ntk", "--model", "resnet20", "--inputs", "2", "--masks", path, "--out",
                 str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "masks do not match" in err and "convnet" in err
    with pytest.raises(MaskMismatchError):
        ntksap.Masks.load(path, ntksap.build_model("resnet20"))


def test_cli_ntk_runs_writes_each_runs_spectrum_for_the_report(capsys, tmp_path):
    runs = tmp_path / "runs"
    quick = ["run", "--preset", "cifar10-resnet20", "--dataset", "synthetic",
             "--limit-per-class", "10", "--model", "convnet", "--epochs", "1", "--out-dir",
             str(runs), "--no-progress", "--json"]
    # 100 examples: no full batch of 128 (the preset's); a clear error, not a crash
    assert main([*quick, "--method", "dense", "--out-dir", str(tmp_path / "small")]) == 2
    assert "no full batch of 128" in capsys.readouterr().err
    for method, sparsity in (("dense", "0"), ("magnitude", "0.9")):
        assert main([*quick, "--method", method, "--sparsity", sparsity,
                     "--batch-size", "25"]) == 0
    capsys.readouterr()
    argv = ["ntk", "--runs", str(runs), "--inputs", "3", "--json", "--no-progress"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(r["method"] for r in report["runs"]) == ["dense", "magnitude"]
    pruned = next(r for r in report["runs"] if r["method"] == "magnitude")
    record = json.loads(Path(pruned["file"]).read_text())
    # theta_0 of the run, dense and under its masks, on Gaussian inputs seeded by --seed
    model = ntksap.build_model("convnet", 10)
    model.load_state_dict(torch.load(Path(pruned["run_dir"]) / "init.pt"))
    x = torch.randn((3, *ntksap.models.model_spec("convnet").input_shape),
                    generator=torch.Generator().manual_seed(0))
    dense = eigenvalues(empirical_ntk(model, x))
    masks = ntksap.Masks.load(Path(pruned["run_dir"]) / "masks.pt", model)
    masked = eigenvalues(empirical_ntk(masks.apply(copy.deepcopy(model)), x))
    assert len(record["eigenvalues"]) == len(record["dense_eigenvalues"]) == 30
    for written, expected in ((record["dense_eigenvalues"], dense),
                              (record["eigenvalues"], masked)):
        written = torch.tensor(written, dtype=torch.float64)
        assert rel(written, expected.double()) < 1e-5
    assert record["summary"]["trace"] < record["dense_summary"]["trace"]
    # measured once: a second call keeps the files, --force measures again
    assert main(argv) == 0
    assert all(r["skipped"] for r in json.loads(capsys.readouterr().out)["runs"])
    assert main([*argv, "--force"]) == 0
    assert not any(r["skipped"] for r in json.loads(capsys.readouterr().out)["runs"])
    # ntksap report plots it
    assert main(["report", str(runs), "--out", str(tmp_path / "report")]) == 0
    assert list((tmp_path / "report").rglob("*spectrum.png"))
    # bad input: --runs with a model, or a folder without runs
    assert main([*argv, "--model", "convnet"]) == 2
    assert "drop --model" in capsys.readouterr().err
    assert main(["ntk", "--runs", str(tmp_path / "report"), "--no-progress"]) == 2
    assert "no run directories" in capsys.readouterr().err
    assert main(["ntk", "--inputs", "2"]) == 2
    assert "needs --model and --out" in capsys.readouterr().err


def test_run_spectra_of_imp_rounds_and_unpruned_runs(tmp_path):
    from ntksap.runs.spectrum import find_runs, run_spectrum

    model = ntksap.build_model("convnet", 10, seed=3)
    config = {"preset": "cifar10-resnet20", "method": "imp", "sparsity": 0.8, "seed": 3,
              "model": "convnet", "num_classes": 10}
    imp = tmp_path / "runs" / "imp-run"
    (imp / "round1").mkdir(parents=True)
    (imp / "config.json").write_text(json.dumps({"kind": "imp", "config": {"run": config}}))
    rewind = {k: v + 0.5 for k, v in model.state_dict().items()}  # the rewind point
    torch.save(model.state_dict(), imp / "init.pt")
    torch.save(rewind, imp / "rewind.pt")
    masks = ntksap.prune(model, "magnitude", 0.5,
                         input_shape=ntksap.models.model_spec("convnet").input_shape)
    masks.save(imp / "round1" / "masks.pt")
    unpruned = tmp_path / "runs" / "snip-run"  # started, not pruned yet
    unpruned.mkdir()
    (unpruned / "config.json").write_text(json.dumps({"config": {**config, "method": "snip"}}))
    # found below a folder: the IMP round, not the IMP run itself, nor the unpruned run
    assert find_runs([tmp_path / "runs"]) == [imp / "round1"]
    with pytest.raises(ConfigError, match="has not pruned"):
        find_runs([unpruned])
    record = run_spectrum(imp / "round1", inputs=2)
    assert (imp / "round1" / "ntk_spectrum.json").exists()
    assert record["method"] == "imp" and record["sparsity"] == pytest.approx(0.5, abs=0.01)
    net = ntksap.build_model("convnet", 10)
    net.load_state_dict(rewind)  # measured at the rewind point under the round's mask
    x = torch.randn((2, *ntksap.models.model_spec("convnet").input_shape),
                    generator=torch.Generator().manual_seed(0))
    expected = eigenvalues(empirical_ntk(masks.apply(net), x))
    assert rel(torch.tensor(record["eigenvalues"], dtype=torch.float64), expected) < 1e-5
