"""The harness on a user's own model and data: ``timm:NAME``, ``MODULE:FACTORY`` and
``path/to/file.py:FACTORY`` models, data-set factories, registries and entry points, the custom
setting (no preset), the run's record of the user's code, and the refusals of bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ntksap import rundir
from ntksap.cli import main
from ntksap.data import load_dataset
from ntksap.data.user import DATASETS, register_dataset
from ntksap.errors import ConfigError, InputShapeError
from ntksap.experiment import check_code, identity, resolve, run_dir, run_experiment
from ntksap.models import MODELS, build_model, model_spec, register_model

SRC = Path(__file__).resolve().parents[1] / "src"
FIXTURE = Path(__file__).parent / "fixtures" / "runs-87d47a2"

NET = '''
from torch import nn


def make(num_classes=10):
    """An MLP for 2 x 6 x 6 items."""
    return nn.Sequential(nn.Flatten(), nn.Linear(72, 32), nn.ReLU(), nn.Linear(32, num_classes))


def fixed():
    """No num_classes argument: always 3 logits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(72, 3))


def not_a_module(num_classes=10):
    return "a string"
'''

DATA = '''
import torch
from torch.utils.data import Dataset, TensorDataset


def splits():
    """3 classes of 2 x 6 x 6 items, 30 per class for training, 8 for testing."""
    g = torch.Generator().manual_seed(0)
    def make(per_class):
        y = torch.arange(3).repeat(per_class)
        x = 2.0 * torch.randn(len(y), 2, 6, 6, generator=g) + 3 * y.view(-1, 1, 1, 1) + 1
        return TensorDataset(x, y)
    return make(30), make(8)


class Pairs(Dataset):
    def __init__(self, items):
        self.items = items
    def __len__(self):
        return len(self.items)
    def __getitem__(self, i):
        return self.items[i]


def not_tensors():
    return Pairs([([1.0, 2.0], 0)] * 4), Pairs([([1.0, 2.0], 0)])


def float_labels():
    return Pairs([(torch.zeros(2, 6, 6), 0.5)] * 4), Pairs([(torch.zeros(2, 6, 6), 0)])


def ragged():
    return (Pairs([(torch.zeros(2, 6, 6), 0), (torch.zeros(2, 5, 6), 1)]),
            Pairs([(torch.zeros(2, 6, 6), 0)]))


def one_split():
    return TensorDataset(torch.zeros(4, 2, 6, 6), torch.zeros(4, dtype=torch.long))
'''


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A model file and a data file in a project folder, the current directory."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "net.py").write_text(NET)
    (tmp_path / "mine" / "data.py").write_text(DATA)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The acceptance commands ------------------------------------------------------------------------

def test_timm_model_on_synthetic_data_trains_without_a_preset(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    rc, out, err = _cli(capsys, "run", "--model", "timm:resnet10t", "--dataset", "synthetic",
                        "--input-shape", "3", "32", "32", "--num-classes", "10",
                        "--method", "snip", "--sparsity", "0.9", "--epochs", "1",
                        "--device", "cpu", "--no-progress", "--json",
                        "--out-dir", str(tmp_path / "runs"))
    assert rc == 0, err
    summary = json.loads(out)
    directory = Path(summary["run_dir"])
    assert directory.parent == tmp_path / "runs" / "custom"
    assert rundir.done_path(directory).exists() and summary["epochs"] == 1
    assert summary["input_shape"] == [3, 32, 32]
    record = rundir.read_config(directory)
    assert record["config"]["model"] == "timm:resnet10t"
    assert record["config"]["code_sha256"] == {"model": f"timm-{timm.__version__}"}
    assert abs(summary["measured_sparsity"] - 0.9) < 1e-3  # the timm network was pruned


def test_user_files_train_and_the_run_records_their_code_and_normalization(user_code, capsys):
    rc, out, err = _cli(capsys, "run", "--model", "mine/net.py:make", "--dataset",
                        "mine/data.py:splits", "--method", "synflow", "--sparsity", "0.8",
                        "--epochs", "2", "--batch-size", "15", "--device", "cpu",
                        "--no-progress", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    record = rundir.read_config(Path(summary["run_dir"]))
    config = record["config"]
    assert config["num_classes"] == 3 and config["preset"] == "custom"  # read from the data
    assert config["code_sha256"] == {"model": _sha(user_code / "mine" / "net.py"),
                                     "dataset": _sha(user_code / "mine" / "data.py")}
    # the normalization, computed by hand from the training items (the oracle)
    sys.path.insert(0, str(user_code / "mine"))
    try:
        import data as oracle_data
        train, _ = oracle_data.splits()
    finally:
        sys.path.pop(0)
        sys.modules.pop("data", None)
    x = torch.stack([train[i][0] for i in range(len(train))]).double()
    mean = x.mean(dim=(0, 2, 3))
    std = x.permute(1, 0, 2, 3).reshape(2, -1).std(dim=1, unbiased=False)
    assert record["data"]["mean"] == pytest.approx(mean.tolist(), rel=1e-6)
    assert record["data"]["std"] == pytest.approx(std.tolist(), rel=1e-6)
    assert record["data"]["input_shape"] == [2, 6, 6] and record["data"]["num_classes"] == 3
    assert summary["best_test_acc"] > 0.5  # 3 well-separated classes: far above chance


def test_a_changed_model_file_is_another_run_and_a_planned_run_refuses_it(user_code):
    config = resolve(None, "snip", 0.5, model="mine/net.py:make", dataset="synthetic",
                     input_shape=(2, 6, 6))
    first = run_dir(config, "runs")
    (user_code / "mine" / "net.py").write_text(NET + "\n# an edit\n")
    again = resolve(None, "snip", 0.5, model="mine/net.py:make", dataset="synthetic",
                    input_shape=(2, 6, 6))
    assert run_dir(again, "runs") != first
    assert again.code_sha256["model"] == _sha(user_code / "mine" / "net.py")
    with pytest.raises(ConfigError, match="changed since this run was planned"):
        check_code(config)  # the old plan (a sweep's store row) meets the new file
    check_code(again)


def test_the_same_call_gives_the_same_mask_and_the_factory_gets_num_classes(user_code):
    a = build_model("mine/net.py:make", 5, seed=3)
    b = build_model("mine/net.py:make", 5, seed=3)
    assert a[-1].out_features == 5
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert build_model("mine/net.py:fixed", 7)[-1].out_features == 3  # takes no classes
    fixed = resolve(None, "snip", 0.5, model="mine/net.py:fixed", dataset="mine/data.py:splits")
    assert fixed.num_classes == 3


def test_a_sweep_over_user_model_and_data_runs_four_runs_and_the_report_draws_them(user_code,
                                                                                    capsys):
    spec = user_code / "mine.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "mine", "out_dir": "runs",
        "fixed": {"model": "mine/net.py:make", "dataset": "mine/data.py:splits", "epochs": 1,
                  "batch_size": 15},
        "grid": {"method": ["snip", "magnitude"], "sparsity": [0.5, 0.8]}}))
    rc, out, err = _cli(capsys, "sweep", str(spec), "--workers", "0", "--device", "cpu",
                        "--no-progress")
    assert rc == 0, err
    assert "4 done" in out
    rc, out, err = _cli(capsys, "report", "runs", "--out", "report")
    assert rc == 0, err
    table = (user_code / "report" / "results.md").read_text()
    setting = "### custom [mine/data.py:splits, mine/net.py:make, batch_size=15, epochs=1]"
    assert setting in table
    rows = [line for line in table.splitlines() if line.startswith(("| snip", "| magnitude"))]
    assert len(rows) == 2 and all(line.count("|") == 4 for line in rows)  # 2 x 2 cells
    assert any(p.suffix == ".png" for p in (user_code / "report" / "figures").iterdir())


def test_packs_train_user_models_and_equal_separate_runs(user_code, capsys):
    spec = user_code / "pack.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "pack", "out_dir": "packed",
        "fixed": {"model": "mine/net.py:make", "dataset": "mine/data.py:splits", "epochs": 1,
                  "batch_size": 15, "method": "magnitude"},
        "grid": {"sparsity": [0.5, 0.8]}}))
    rc, _, err = _cli(capsys, "sweep", str(spec), "--workers", "0", "--device", "cpu",
                      "--no-progress", "--pack-size", "2")
    assert rc == 0, err
    for sparsity in (0.5, 0.8):
        config = resolve(None, "magnitude", sparsity, model="mine/net.py:make",
                         dataset="mine/data.py:splits",
                         train_overrides={"epochs": 1, "batch_size": 15})
        alone = run_experiment(config, out_dir="alone", progress=False)
        packed = json.loads((run_dir(config, "packed") / "summary.json").read_text())
        assert packed["pack_size"] == 2
        assert packed["final_test_acc"] == pytest.approx(alone["final_test_acc"], abs=1e-9)


def test_hold_out_of_a_streamed_user_set_is_disjoint_and_unaugmented(user_code):
    bundle = load_dataset("mine/data.py:splits").hold_out(0.2)
    assert len(bundle.train) == 72 and len(bundle.val) == 18
    kept, held = set(bundle.train.indices), set(bundle.val.indices)
    assert not kept & held
    x, y = next(iter(bundle.val_loader(100)))
    assert x.shape == (18, 2, 6, 6) and y.tolist() == [bundle.val.targets[i] for i in range(18)]
    px, py = bundle.pruning_set(per_class=2)
    assert px.shape == (6, 2, 6, 6) and sorted(py.tolist()) == [0, 0, 1, 1, 2, 2]


# Registries and entry points ------------------------------------------------------------------

def test_register_model_and_dataset_make_names_usable_and_refuse_taken_ones(tmp_path):
    def tiny(num_classes=10):
        return nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))

    def tiny_data():
        x = torch.randn(20, 3, 2, 2)
        return (torch.utils.data.TensorDataset(x, torch.arange(20) % 4),
                torch.utils.data.TensorDataset(x[:8], torch.arange(8) % 4))

    try:
        register_model("tiny_user_net", tiny, input_shape=(3, 2, 2))
        register_model("tiny_user_net", tiny, input_shape=(3, 2, 2))  # again: harmless
        register_dataset("tiny_user_data", tiny_data)
        assert model_spec("tiny_user_net").input_shape == (3, 2, 2)
        config = resolve(None, "random", 0.5, model="tiny_user_net", dataset="tiny_user_data")
        assert config.num_classes == 4 and config.code_sha256 == {}
        summary = run_experiment(dataclasses_replace_epochs(config), out_dir=tmp_path,
                                 progress=False)
        assert summary["total"] == 12 * 4
        with pytest.raises(ConfigError, match="taken"):
            register_model("tiny_user_net", lambda: tiny())
        with pytest.raises(ConfigError, match="taken"):
            register_model("resnet20", tiny)
        with pytest.raises(ConfigError, match="built-in"):
            register_dataset("cifar10", tiny_data)
    finally:
        dict.pop(MODELS, "tiny_user_net", None)
        dict.pop(DATASETS, "tiny_user_data", None)


def dataclasses_replace_epochs(config):
    import dataclasses

    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1,
                                                                 batch_size=10))


ZOO = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset


def net(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, num_classes))


def data():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(2).repeat(20)
    x = torch.randn(40, 1, 4, 4, generator=g) + 2 * y.view(-1, 1, 1, 1)
    return TensorDataset(x, y), TensorDataset(x[:10], y[:10])
'''


def test_entry_point_models_and_data_sets_are_usable_by_name_on_the_cli(tmp_path):
    """A third-party package (installed as pip would leave it: module and .dist-info on the
    path) that declares both entry-point groups."""
    site = tmp_path / "site"
    (site / "toyzoo").mkdir(parents=True)
    (site / "toyzoo" / "__init__.py").write_text(ZOO)
    info = site / "toyzoo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyzoo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [ntksap.models]
        zoonet = toyzoo:net

        [ntksap.datasets]
        zoodata = toyzoo:data
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ntksap", "run", "--model", "zoonet", "--dataset", "zoodata",
         "--method", "snip", "--sparsity", "0.5", "--epochs", "1", "--batch-size", "10",
         "--device", "cpu", "--no-progress", "--json", "--out-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    config = rundir.read_config(Path(summary["run_dir"]))["config"]
    assert (config["model"], config["dataset"], config["num_classes"]) == ("zoonet", "zoodata", 2)
    assert summary["total"] == 16 * 8 + 8 * 2


# Bad input: one line, exit 2, nothing created ---------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--model", "mine/none.py:make", "--dataset", "synthetic"], "no file mine/none.py"),
    (["--model", "no_such_module_xyz:make", "--dataset", "synthetic"],
     "cannot import no_such_module_xyz"),
    (["--model", "mine/net.py:missing", "--dataset", "synthetic"], "has no 'missing'"),
    (["--model", "mine/net.py:not_a_module", "--dataset", "synthetic"],
     "returned a str, not a torch.nn.Module"),
    (["--model", "mine/net.py:make", "--dataset", "mine/data.py:not_tensors"],
     "item 0 of the training set is a tuple of 2 (list, int), not (tensor, int)"),
    (["--model", "mine/net.py:make", "--dataset", "mine/data.py:float_labels"],
     "has the label 0.5, not a class index"),
    (["--model", "mine/net.py:make", "--dataset", "mine/data.py:ragged"],
     "item 1 of the training set has shape (2, 5, 6), item 0 (2, 6, 6)"),
    (["--model", "mine/net.py:make", "--dataset", "mine/data.py:one_split"],
     "not a pair (train, test)"),
    (["--model", "mine/net.py:make", "--dataset", "synthetic"],
     "cannot take the synthetic images (3 x 32 x 32)"),
    (["--model", "mine/net.py:make", "--dataset", "mine/data.py:splits", "--num-classes", "4"],
     "--num-classes 4 contradicts the mine/data.py:splits data (3 classes)"),
    (["--model", "mine/net.py:make"], "needs --dataset"),
    (["--dataset", "synthetic"], "needs --model"),
    (["--model", "timm:no_such_net_xyz", "--dataset", "synthetic"], "no_such_net_xyz"),
    (["--model", "convnet", "--dataset", "cifar10", "--input-shape", "3", "8", "8"],
     "--input-shape sets the synthetic data's item shape"),
    (["--model", "convnet", "--dataset", "mine/data.py:nothing"], "has no 'nothing'"),
])
def test_bad_user_input_is_one_line_exit_2_and_creates_nothing(user_code, capsys, args,
                                                               message):
    if args[1].startswith("timm:"):
        pytest.importorskip("timm")
    rc, out, err = _cli(capsys, "run", *args, "--method", "snip", "--sparsity", "0.5",
                        "--epochs", "1", "--device", "cpu", "--no-progress")
    assert rc == 2 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (user_code / "runs").exists()


def test_input_shape_mismatch_of_a_user_model_names_both(user_code):
    config = resolve(None, "snip", 0.5, model="mine/net.py:make", dataset="synthetic",
                     input_shape=(1, 6, 6))
    with pytest.raises(InputShapeError, match=r"\(1 x 6 x 6\)"):
        run_experiment(config, out_dir="runs", progress=False)
    assert not Path("runs").exists()


# Runs made before this change ---------------------------------------------------------------

def test_runs_of_the_code_before_the_custom_setting_are_found_resumed_and_reported(tmp_path,
                                                                                   capsys):
    """Run directories written by commit 87d47a2 (tests/fixtures/make_runs_87d47a2.py): a
    finished run keeps its name and is read, not redone; an interrupted one resumes from its
    epoch-1 checkpoint; the report draws both."""
    out = tmp_path / "runs"
    shutil.copytree(FIXTURE, out)
    common = dict(dataset="synthetic", model="convnet", limit_per_class=10)
    done = resolve("cifar10-resnet20", "snip", 0.5,
                   train_overrides={"epochs": 1, "batch_size": 20}, **common)
    cut = resolve("cifar10-resnet20", "synflow", 0.5,
                  train_overrides={"epochs": 2, "batch_size": 20}, **common)
    assert run_dir(done, out).is_dir() and run_dir(cut, out).is_dir()  # the same names
    assert "input_shape" not in identity(done) and "code_sha256" not in identity(done)
    finished = run_experiment(done, out_dir=out, progress=False)
    assert finished["already_done"]
    lines = (run_dir(cut, out) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    resumed = run_experiment(cut, out_dir=out, progress=False)
    lines = (run_dir(cut, out) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # epoch 1 kept, 2 added
    assert resumed["epochs"] == 2 and "already_done" not in resumed
    rc, _, err = _cli(capsys, "report", str(out), "--out", str(tmp_path / "report"))
    assert rc == 0, err
    table = (tmp_path / "report" / "results.md").read_text()
    assert "| snip |" in table and "| synflow |" in table


def test_a_pruning_set_the_data_cannot_give_is_refused_before_the_run_directory(tmp_path,
                                                                                capsys):
    rc, _, err = _cli(capsys, "run", "--preset", "cifar10-resnet20", "--dataset", "synthetic",
                      "--model", "convnet", "--limit-per-class", "4", "--method", "snip",
                      "--sparsity", "0.5", "--epochs", "1", "--batch-size", "10", "--device",
                      "cpu", "--no-progress", "--out-dir", str(tmp_path / "runs"))
    assert rc == 2 and "class 0 has 4 examples, the pruning set needs 10 per class" in err
    assert not (tmp_path / "runs").exists()


# Weights no method prunes: named, counted, shown -------------------------------------------------

class _Sequence(nn.Module):
    """Embedding, attention, LSTM and a Linear head: only out_proj and the head are Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        h, _ = self.attention(h, h, h)
        h, _ = self.lstm(h)
        return self.head(h[:, -1])


def test_weights_no_method_prunes_are_named_in_one_warning_and_shown_in_the_table(tmp_path,
                                                                                  capsys):
    import ntksap

    model = _Sequence()
    with pytest.warns(UserWarning) as caught:
        masks = ntksap.prune(model, "magnitude", 0.5)
    message = str(caught[0].message)
    # hand count: embedding 20x8, packed q/k/v 24x8, LSTM input and hidden 32x8 each
    assert "4 weight tensor(s)" in message and f"{160 + 192 + 256 + 256:,} weights" in message
    for name in ("embed.weight", "attention.in_proj_weight", "lstm.weight_ih_l0",
                 "lstm.weight_hh_l0"):
        assert name in message
    assert set(masks) == {"attention.out_proj", "head"}  # what is pruned
    assert masks.meta["dense_weights"]["attention.in_proj_weight"] == [24, 8]
    table = masks.table()
    assert "not prunable" in table and "lstm.weight_hh_l0" in table
    masks.apply(model)  # masked: the originals of the masked weights are not listed again
    assert set(ntksap.layers.dense_weights(model)) == set(masks.meta["dense_weights"])
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert ntksap.layers.dense_weights(plain) == {}  # biases and norm scales are 1-D


def test_the_cli_prints_a_warning_as_one_line(user_code, capsys):
    (user_code / "mine" / "seq.py").write_text(textwrap.dedent('''
        from torch import nn

        class Net(nn.Module):
            def __init__(self, num_classes=10):
                super().__init__()
                self.mix = nn.Parameter(nn.init.eye_(nn.Parameter(nn.Linear(72, 72).weight)))
                self.head = nn.Linear(72, num_classes)
            def forward(self, x):
                return self.head(x.flatten(1) @ self.mix)
        '''))
    rc, out, err = _cli(capsys, "prune", "--model", "mine/seq.py:Net", "--input-shape", "2",
                        "6", "6", "--method", "synflow", "--sparsity", "0.5", "--no-progress")
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert lines == ["ntksap prune: warning: 1 weight tensor(s) of this model are no "
                     "Conv/Linear weight and stay dense (5,184 weights; the sparsity counts "
                     "only the prunable layers): mix"]
    assert "mix" in out and "not prunable" in out


def test_a_results_store_of_the_code_before_is_resumed_and_reported(tmp_path, monkeypatch,
                                                                    capsys):
    """A sweep store and run written by commit 87d47a2 (one of the spec's two runs done),
    copied to another folder: the sweep finds the done run where it now lies (not trained
    again), runs the other, and the report draws both."""
    work = tmp_path / "work"
    shutil.copytree(Path(__file__).parent / "fixtures" / "store-87d47a2", work / "store-runs")
    shutil.move(work / "store-runs" / "spec.yaml", work / "spec.yaml")
    monkeypatch.chdir(work)
    old = work / "store-runs" / "cifar10-resnet20" / "magnitude-sp0.5-seed0-7e524ddf7f"
    metrics = (old / "metrics.jsonl").read_text()
    rc, out, err = _cli(capsys, "sweep", "spec.yaml", "--workers", "0", "--device", "cpu",
                        "--no-progress")
    assert rc == 0, err
    assert "lost their run directory" not in err and "2 done" in out
    assert (old / "metrics.jsonl").read_text() == metrics  # found, not trained again
    rc, _, err = _cli(capsys, "report", "store-runs/ntksap.db", "--out", "report")
    assert rc == 0, err
    table = (work / "report" / "results.md").read_text()
    assert "| magnitude |" in table and "| random |" in table


# A run field added as one field: normalize_inputs ---------------------------------------------

def test_a_new_run_field_reaches_the_cli_sweeps_identity_data_and_report(tmp_path, capsys):
    """``normalize_inputs`` was added to RunConfig alone (plus what it does to the data):
    its flag, its sweep axis, its place in the identity (left out at its default) and in
    the report's setting name come from the field."""
    from ntksap.runs import open_data, setting_label
    from ntksap.sweep import expand

    common = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--model", "convnet",
              "--limit-per-class", "10", "--epochs", "1", "--batch-size", "20", "--method",
              "magnitude", "--sparsity", "0.5", "--device", "cpu", "--no-progress", "--json",
              "--out-dir", str(tmp_path)]
    assert main(["run", *common, "--no-normalize-inputs"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["run", *common]) == 0
    normalized = json.loads(capsys.readouterr().out)
    assert plain["run_dir"] != normalized["run_dir"]
    config = rundir.read_config(Path(plain["run_dir"]))["config"]
    assert config["normalize_inputs"] is False
    default = resolve("cifar10-resnet20", "magnitude", 0.5, dataset="synthetic",
                      model="convnet", limit_per_class=10,
                      train_overrides={"epochs": 1, "batch_size": 20})
    assert "normalize_inputs" not in identity(default)  # old directories keep their names
    assert Path(normalized["run_dir"]) == run_dir(default, tmp_path)
    unnormalized = dataclasses.replace(default, normalize_inputs=False)
    x, _ = next(iter(open_data(unnormalized, None, False, False).train_loader(50)))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    x, _ = next(iter(open_data(default, None, False, False).train_loader(50)))
    assert float(x.min()) < 0.0  # normalized: centred
    assert setting_label(dataclasses.asdict(unnormalized)) == (
        "cifar10-resnet20 [synthetic, convnet, 10/class, normalize_inputs=False, batch_size=20, "
        "epochs=1]")
    sweep = expand({"name": "n", "preset": "cifar10-resnet20", "out_dir": str(tmp_path),
                    "fixed": {"method": "magnitude", "sparsity": 0.5},
                    "grid": {"normalize_inputs": [True, False]}})
    assert [j.config.get("normalize_inputs", True) for j in sweep.jobs] == [True, False]
    with pytest.raises(ConfigError, match="normalize_inputs must be of type"):
        resolve("cifar10-resnet20", "magnitude", 0.5, normalize_inputs="no")
    with pytest.raises(ConfigError, match="a run has no field colour"):
        resolve("cifar10-resnet20", "magnitude", 0.5, colour=True)


def test_the_ntk_tools_take_a_user_models_run(user_code, capsys):
    """``ntksap ntk --runs`` on a run of a file-defined model: the model is rebuilt from its
    reference and fed inputs of the run's recorded shape (the model declares none)."""
    rc, out, err = _cli(capsys, "run", "--model", "mine/net.py:make", "--dataset",
                        "mine/data.py:splits", "--method", "snip", "--sparsity", "0.5",
                        "--epochs", "1", "--batch-size", "15", "--device", "cpu",
                        "--no-progress", "--json")
    assert rc == 0, err
    directory = Path(json.loads(out)["run_dir"])
    rc, out, err = _cli(capsys, "ntk", "--runs", str(directory), "--inputs", "4")
    assert rc == 0, err
    spectrum = json.loads((directory / "ntk_spectrum.json").read_text())
    assert len(spectrum["eigenvalues"]) == 4 * 3  # 4 inputs x 3 logits
    assert spectrum["sparsity"] == pytest.approx(0.5, abs=1e-3)
