"""Method options end to end (a run config's ``method_options``, ``--option``, sweep axes, the
report) and third-party methods (``ntksap.register_method``, the ``ntksap.methods`` entry-point
group), tested with a method package written here; old run directories keep their names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import ntksap
from ntksap.errors import ConfigError, MethodOptionError
from ntksap.experiment import resolve, run_dir, run_experiment
from ntksap.methods import METHODS, register_method
from ntksap.report import build_report
from ntksap.report.records import load_points
from ntksap.sweep.spec import expand, load_spec

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"
SRC = Path(__file__).resolve().parents[1] / "src"
# a tiny run on generated data (the toy method is data-free)
TINY = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--model", "convnet",
        "--limit-per-class", "4", "--epochs", "1", "--batch-size", "20", "--device", "cpu",
        "--no-progress"]
TOY_MODULE = '''
"""A third-party pruning method: |w| ** alpha, logging each alpha it scores with."""
import os
from dataclasses import dataclass

from ntksap import Method
from ntksap.methods.base import check_options, is_positive


@dataclass
class Toy(Method):
    name = "toy"
    needs_inputs = False
    alpha: float = 1.0

    def __post_init__(self):
        check_options(self, alpha=(is_positive(self.alpha), "a number > 0"))

    def scores(self, net, ctx):
        with open(os.environ["TOY_LOG"], "a") as log:
            log.write(f"{self.alpha!r}\\n")
        return {n: w.detach().abs() ** self.alpha for n, w in net.weights().items()}
'''


def _toy_package(root: Path) -> Path:
    """The package ``toyprune`` (pyproject and module) and, on a folder to put on sys.path,
    its module and the ``.dist-info`` that ``pip install`` would leave: its entry point in
    group ``ntksap.methods``. Returns that folder."""
    package = root / "toyprune-src"
    (package / "toyprune").mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "toyprune"
        version = "0.1"
        dependencies = ["ntksap"]

        [project.entry-points."ntksap.methods"]
        toy = "toyprune:Toy"
        """))
    (package / "toyprune" / "__init__.py").write_text(TOY_MODULE)
    site = root / "site"
    shutil.copytree(package / "toyprune", site / "toyprune")
    info = site / "toyprune-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyprune\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ntksap.methods]\ntoy = toyprune:Toy\n")
    return site


DRIVER = '''
import contextlib, io, json, sys
from ntksap.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
'''


def _cli(site: Path, log: Path, *commands: list[str]) -> list[dict]:
    """Run ``ntksap`` commands in one fresh Python process that sees the toy package only
    through its entry point (PYTHONPATH); their exit codes and output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)]),
           "TOY_LOG": str(log), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(commands))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _alphas(log: Path) -> list[float]:
    return [float(x) for x in log.read_text().split()] if log.exists() else []


def test_an_entry_point_method_option_reaches_scores_from_cli_sweep_and_report(tmp_path):
    site, log, runs = _toy_package(tmp_path), tmp_path / "alphas.log", tmp_path / "runs"
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "toy", "preset": "cifar10-resnet20", "out_dir": str(runs),
        "fixed": {"dataset": "synthetic", "model": "convnet", "limit_per_class": 4,
                  "epochs": 1, "batch_size": 20, "method": "toy", "sparsity": 0.5},
        "grid": {"method_options.alpha": [0.5, 2.0]}}))
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text(yaml.safe_dump({
        **yaml.safe_load(spec.read_text()), "out_dir": str(tmp_path / "bad"),
        "grid": {"method_options": {"alpha": [1, 0]}}}))
    prune, run, sweep, report, *bad = _cli(
        site, log,
        ["prune", "--model", "convnet", "--method", "toy", "--sparsity", "0.5",
         "--option", "alpha=0.25", "--json", "--no-progress"],
        ["run", *TINY, "--method", "toy", "--sparsity", "0.5", "--option", "alpha=3",
         "--out-dir", str(runs), "--json"],
        ["sweep", str(spec), "--workers", "0", "--device", "cpu", "--no-progress"],
        ["report", str(runs / "ntksap.db"), "--out", str(tmp_path / "report")],
        ["run", *TINY, "--method", "toy", "--sparsity", "0.5", "--option", "beta=1",
         "--out-dir", str(tmp_path / "bad")],
        ["run", *TINY, "--method", "toy", "--sparsity", "0.5", "--option", "alpha=high",
         "--out-dir", str(tmp_path / "bad")],
        ["run", *TINY, "--method", "toy", "--sparsity", "0.5", "--option", "alpha=-1",
         "--out-dir", str(tmp_path / "bad")],
        ["prune", "--model", "convnet", "--method", "toy", "--sparsity", "0.5",
         "--option", "alpha", "--out", str(tmp_path / "bad" / "m.pt")],
        ["sweep", str(bad_spec), "--workers", "0", "--device", "cpu"])
    assert [c["rc"] for c in (prune, run, sweep, report)] == [0, 0, 0, 0], (prune, run, sweep)
    assert sorted(set(_alphas(log))) == [0.25, 0.5, 2.0, 3.0]  # each reached Toy.scores
    recorded = json.loads((Path(json.loads(run["out"])["run_dir"]) / "config.json").read_text())
    assert recorded["config"]["method_options"] == {"alpha": 3.0}  # a float, as the field
    configs = [json.loads(p.read_text())["config"] for p in runs.rglob("config.json")]
    assert sorted(c["method_options"]["alpha"] for c in configs) == [0.5, 2.0, 3.0]
    table = (tmp_path / "report" / "results.md").read_text()
    assert "| method | alpha |" in table  # the option that varies is a column...
    assert "| toy alpha=0.5 | 0.5 |" in table and "| toy alpha=2.0 | 2.0 |" in table
    csv = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert csv[0].endswith(",method_options.alpha")  # ...in the CSV too
    for result, message in zip(bad, [
            "method 'toy' has no option beta; its options are: alpha",
            "method 'toy': option alpha must be of type float; got 'high'",
            "method 'toy': option alpha must be a number > 0, got -1.0",
            "--option 'alpha' must look like NAME=VALUE",
            "method 'toy': option alpha must be a number > 0, got 0.0"], strict=True):
        assert result["rc"] == 2 and message in result["err"], result
        assert "Traceback" not in result["err"]
    assert not (tmp_path / "bad").exists()  # refused before anything was created
    assert sorted(set(_alphas(log))) == [0.25, 0.5, 2.0, 3.0]  # and nothing was scored


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy method registered in this process with ``ntksap.register_method``."""
    site = _toy_package(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "alphas.log"))
    import toyprune

    yield register_method(toyprune.Toy)
    dict.pop(METHODS, "toy", None)
    sys.modules.pop("toyprune", None)


def test_a_registered_method_option_reaches_scores_through_the_python_api(toy, tmp_path):
    model = ntksap.build_model("convnet", 10, seed=0)
    masks = ntksap.prune(model, "toy", 0.5, alpha=0.75)
    assert _alphas(tmp_path / "alphas.log") == [0.75]
    assert masks.meta["options"] == {"alpha": 0.75}
    config = resolve("cifar10-resnet20", "toy", 0.5, dataset="synthetic", model="convnet",
                     limit_per_class=4, train_overrides={"epochs": 1, "batch_size": 20},
                     method_options={"alpha": 2})
    assert config.method_options == {"alpha": 2.0} and config.rounds == 1  # the method's T
    summary = run_experiment(config, out_dir=tmp_path / "runs", progress=False)
    assert _alphas(tmp_path / "alphas.log") == [0.75, 2.0]
    recorded = json.loads((Path(summary["run_dir"]) / "config.json").read_text())["config"]
    assert recorded["method_options"] == {"alpha": 2.0}
    # the option at the method's default is the same run as leaving it out
    assert resolve("cifar10-resnet20", "toy", 0.5, method_options={"alpha": 1.0}) == resolve(
        "cifar10-resnet20", "toy", 0.5)
    assert register_method(toy) is toy  # twice: harmless


def test_register_method_refuses_what_is_not_a_method_or_a_taken_name(toy):
    from dataclasses import dataclass

    class NotADataclass(ntksap.Method):
        name = "nodc"

    @dataclass
    class Impostor(ntksap.Method):
        name = "snip"

    @dataclass
    class Dense(ntksap.Method):
        name = "dense"

    with pytest.raises(ConfigError, match="not a dataclass subclass of ntksap.Method"):
        register_method(NotADataclass)
    with pytest.raises(ConfigError, match="'snip' of Impostor is taken by ntksap.methods.snip"):
        register_method(Impostor)
    with pytest.raises(ConfigError, match="taken by a kind of run"):
        register_method(Dense)
    assert METHODS["snip"].__name__ == "SNIP"


def test_resolve_checks_options_by_name_and_type_before_anything_runs(toy):
    with pytest.raises(MethodOptionError, match="'toy' has no option beta; its options are: "
                                                "alpha"):
        resolve("cifar10-resnet20", "toy", 0.5, method_options={"beta": 1})
    with pytest.raises(MethodOptionError, match="option alpha must be of type float; got True"):
        resolve("cifar10-resnet20", "toy", 0.5, method_options={"alpha": True})
    with pytest.raises(MethodOptionError, match="option repeats must be of type int; got 2.5"):
        resolve("cifar10-resnet20", "ntksap", 0.5, method_options={"repeats": 2.5})
    with pytest.raises(ConfigError, match="option eps given twice"):
        resolve("cifar10-resnet20", "ntksap", 0.5, eps=0.1, method_options={"eps": 0.2})
    with pytest.raises(ConfigError, match="dense prunes nothing and takes no method options"):
        resolve("cifar10-resnet20", "dense", 0.0, method_options={"eps": 0.2})


def test_a_run_option_must_be_a_value_config_json_can_record():
    from dataclasses import dataclass

    @register_method
    @dataclass
    class Tupled(ntksap.Method):
        name = "tupled"
        layers: tuple = ()

    try:
        ntksap.methods.check_options("tupled", {"layers": ("fc",)})  # fine for prune()
        with pytest.raises(ConfigError, match="option layers of a run must be a number, a "
                                              "string, true/false or none"):
            resolve("cifar10-resnet20", "tupled", 0.5, method_options={"layers": ("fc",)})
    finally:
        dict.pop(METHODS, "tupled", None)


# Old run directories keep their names --------------------------------------------------------

# names computed by the code before method_options existed (commit a81565d), for configs that
# code could express; each must come out of both spellings of the options
OLD_NAMES = [
    ("cifar10-resnet20", "ntksap", 0.9, {}, "ntksap-sp0.9-seed0-e439af20cb"),
    ("cifar10-resnet20", "grasp", 0.98, {}, "grasp-sp0.98-seed0-ae58aec852"),
    ("cifar10-resnet20", "prospr", 0.9, {}, "prospr-sp0.9-seed0-9ca66942f6"),
    ("cifar10-resnet20", "ntt", 0.9, {}, "ntt-sp0.9-seed0-78aef26f03"),
    ("cifar10-resnet20", "force", 0.9, {}, "force-sp0.9-seed0-9994ed1811"),
    ("cifar10-resnet20", "ntksap", 0.9, {"eps": 0.02}, "ntksap-sp0.9-seed0-28100c99c2"),
    ("cifar10-resnet20", "ntksap", 0.9, {"eps": 0.001, "repeats": 3},
     "ntksap-sp0.9-seed0-ba8e8ecc16"),
    ("cifar100-vgg16", "ntksap", 0.9, {"repeats": 5}, "ntksap-sp0.9-seed0-76373dcddb"),
    ("mnist-lenet300", "ntksap", 0.9, {}, "ntksap-sp0.9-seed0-5ed7cca2f7"),
]


@pytest.mark.parametrize("preset, method, sparsity, options, name", OLD_NAMES)
def test_both_spellings_of_old_options_keep_the_old_run_directory(preset, method, sparsity,
                                                                   options, name):
    assert run_dir(resolve(preset, method, sparsity, **options), "r").name == name
    assert run_dir(resolve(preset, method, sparsity, method_options=options), "r").name == name
    held = resolve("mnist-lenet300", "ntksap", 0.9, holdout=0.2,
                   method_options={"eps": 0.005})
    assert run_dir(held, "r").name == "ntksap-sp0.9-seed0-aaa1a1be2c"


def test_a_run_directory_made_before_method_options_is_found_and_reported(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURES / "old-runs", runs)  # config.json with repeats/eps fields
    (old,) = [p.parent for p in runs.rglob("config.json")]
    config = resolve("cifar10-resnet20", "ntksap", 0.5, rounds=1, dataset="synthetic",
                     model="convnet", limit_per_class=4,
                     train_overrides={"epochs": 1, "batch_size": 20},
                     method_options={"eps": 0.02, "repeats": 1})
    assert run_dir(config, runs) == old
    found = run_experiment(config, out_dir=runs, progress=False)
    assert found["already_done"] and found["best_test_acc"] == 0.1  # read, not retrained
    assert not (old / "masks.pt").exists()
    other = resolve("cifar10-resnet20", "ntksap", 0.5, rounds=1, dataset="synthetic",
                    model="convnet", limit_per_class=4,
                    train_overrides={"epochs": 1, "batch_size": 20},
                    method_options={"eps": 0.005, "repeats": 1})
    run_experiment(other, out_dir=runs, progress=False)
    points = {p.run_dir.name: p for p in load_points(runs)}
    assert points[old.name].options == {"repeats": 1, "eps": 0.02}
    report = build_report(runs, tmp_path / "report")
    assert sorted((r.variant, r.options["eps"]) for r in report.rows) == [
        ("ntksap eps=0.005", 0.005), ("ntksap eps=0.02", 0.02)]
    assert "| method | eps |" in (tmp_path / "report" / "results.md").read_text()
    # an unfinished old run resumes under its old config.json (read as the same config)
    recorded = (old / "config.json").read_text()
    (old / "done.json").unlink()
    (old / "summary.json").unlink()
    resumed = run_experiment(config, out_dir=runs, progress=False)
    assert not resumed.get("already_done") and resumed["run_dir"] == str(old)
    assert (old / "config.json").read_text() == recorded and (old / "masks.pt").exists()


# Sweep specs ---------------------------------------------------------------------------------

def _keys(tmp_path: Path, **spec) -> list[str]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "preset": "cifar10-resnet20", **spec}))
    return [j.key for j in expand(load_spec(path)).jobs]


def test_spec_options_as_axis_mapping_or_old_field_are_the_same_runs(tmp_path):
    axis = _keys(tmp_path, fixed={"method": "ntksap", "c": 2},
                 grid={"method_options.eps": ["1e-3", 0.01]})  # YAML reads 1e-3 as a string
    mapping = _keys(tmp_path, fixed={"method": "ntksap", "c": 2},
                    grid={"method_options": {"eps": [0.001, 0.01]}})
    old = _keys(tmp_path, fixed={"method": "ntksap", "c": 2}, grid={"eps": [0.001, 0.01]})
    fixed = _keys(tmp_path, fixed={"method": "ntksap", "c": 2,
                                   "method_options": {"eps": 0.001}})
    assert axis == mapping == old and len(set(axis)) == 2 and fixed == axis[:1]
    plain = run_dir(resolve("cifar10-resnet20", "ntksap", 1 - 0.8 ** 2), "").as_posix()
    assert axis[1] == plain  # eps = 0.01 is the default: the main figure's run
    eps_spec = load_spec(Path(__file__).parents[1] / "configs" / "ablation-eps.yaml")
    jobs = expand(eps_spec, only=["method_options.eps=0.001", "c=2"]).jobs
    assert [j.config["eps"] for j in jobs] == [0.001] * 3  # one per seed
    assert expand(eps_spec, only=["eps=0.001", "c=2"]).jobs == jobs  # the old spelling


def test_cli_option_and_shorthand_must_agree(capsys, tmp_path):
    from ntksap.cli import main

    argv = ["run", *TINY, "--method", "ntksap", "--sparsity", "0.5", "--eps", "0.1",
            "--option", "eps=0.2", "--out-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "--eps 0.1 and --option eps=0.2 disagree" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
