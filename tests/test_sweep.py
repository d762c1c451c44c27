"""`ntksap sweep`: specs, eps and IMP, failures and retries, kill -9 of the sweep, Ray."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ntksap import Masks
from ntksap.cli import main
from ntksap.errors import ConfigError
from ntksap.experiment import resolve, run_dir, run_experiment
from ntksap.report import build_report
from ntksap.runs.imp import imp_dir, round_sparsities
from ntksap.sweep import Store, expand, imp_config, load_spec, run_imp, run_sweep, sparsity_of_c

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUICK = {"dataset": "synthetic", "model": "convnet", "limit_per_class": 20, "epochs": 2,
         "batch_size": 32, "rounds": 2, "repeats": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(tmp_path: Path, name: str = "t", **spec) -> Path:
    spec = {"name": name, "preset": "cifar10-resnet20", "out_dir": str(tmp_path / "runs"),
            "fixed": dict(QUICK), **spec}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# Specs ---------------------------------------------------------------------------------------

def test_spec_expands_grids_groups_sanity_and_overrides(tmp_path):
    path = _write(tmp_path, grid={"method": ["snip", "ntksap"], "c": [2, 10], "seed": [0, 1]},
                  sanity=["shuffle"],
                  groups=[{"name": "main"},
                          {"name": "dense", "grid": {"method": ["dense"], "c": None}},
                          {"name": "eps", "grid": {"method": ["ntksap"], "eps": ["1e-3"]},
                           "sanity": []}])
    sweep = expand(load_spec(path))
    assert sweep.name == "t" and sweep.db == str(tmp_path / "runs" / "ntksap.db")
    main_jobs = [j for j in sweep.jobs if j.labels["group"] == "main"]
    assert len(main_jobs) == 2 * 2 * 2 * 2  # method x c x seed x (none, shuffle)
    assert {j.config["transform"] for j in main_jobs} == {"", "shuffle"}
    assert {round(j.sparsity, 6) for j in main_jobs} == {0.36, round(1 - 0.8 ** 10, 6)}
    assert sparsity_of_c(18) == pytest.approx(0.982, abs=1e-4)
    dense = [j for j in sweep.jobs if j.labels["group"] == "dense"]
    assert [(j.method, j.sparsity, j.seed) for j in dense] == [("dense", 0, 0), ("dense", 0, 1)]
    eps = [j for j in sweep.jobs if j.labels["group"] == "eps"]
    assert len(eps) == 4 and all(j.config["eps"] == 0.001 for j in eps)  # YAML "1e-3" coerced
    assert all(j.config["train"]["epochs"] == 2 and j.config["model"] == "convnet"
               for j in sweep.jobs)
    assert len({j.key for j in sweep.jobs}) == len(sweep.jobs)

    over = expand(load_spec(path, ["fixed.epochs=3", "grid.seed=[5]", "groups=null"]),
                  ["method=ntksap", "c=2"])
    assert [(j.method, j.seed, j.config["train"]["epochs"], j.config["transform"])
            for j in over.jobs] == [("ntksap", 5, 3, ""), ("ntksap", 5, 3, "shuffle")]


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "unknown sweep spec key"),
    ({"grid": {"method": ["snip"], "sparsty": [0.5]}}, "unknown field"),
    ({"grid": {"method": ["snip"], "c": [2], "sparsity": [0.5]}}, "one of sparsity, c"),
    ({"grid": {"method": ["snip"], "eps": [0.001]}}, "method 'snip' has no option eps"),
    ({"grid": {"method": ["snip"], "rewind_epoch": [1]}}, "rewind_epoch is IMP's"),
    ({"grid": {"method": ["snipp"]}}, "unknown method 'snipp'"),
    ({"grid": {"method": "snip"}}, "must be a non-empty list"),
    ({"grid": {"method": ["imp"], "c": [4], "rewind_epoch": [5]}}, "rewind_epoch must be"),
])
def test_spec_errors_name_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        expand(load_spec(_write(tmp_path, **change)))


def test_paper_configs_expand():
    counts = {p.stem: len(expand(load_spec(p)).jobs) for p in sorted(CONFIGS.glob("*.yaml"))}
    # the paper's seven methods and dense, plus a separate group of extra methods
    assert counts["cifar10-resnet20"] == 7 * 9 * 3 + 3 + 2 * 9 * 3  # prospr, ntt
    assert counts["cifar100-vgg16"] == counts["tinyimagenet-resnet18"] == 7 * 9 * 3 + 3 + 9 * 3
    for name in ("cifar10-resnet20", "cifar100-vgg16", "tinyimagenet-resnet18"):
        jobs = expand(load_spec(CONFIGS / f"{name}.yaml")).jobs
        paper = {j.config["method"] for j in jobs if j.labels["group"] != "extra"}
        assert paper == {"random", "magnitude", "snip", "iter_snip", "grasp", "synflow",
                         "ntksap", "dense"}
        assert {j.config["method"] for j in jobs if j.labels["group"] == "extra"} <= {
            "prospr", "ntt"}
    assert counts["imagenet"] == 2 * (7 * 2 + 1)
    assert counts["ablation-T"] == 4 * 5 * 3 and counts["ablation-eps"] == 3 * 5 * 3
    assert counts["sanity-cifar10-resnet20"] == 7 * 4 * 3 * 4
    main_keys = {j.key for j in expand(load_spec(CONFIGS / "cifar10-resnet20.yaml")).jobs}
    # the T = 20 ablation runs and the default-eps runs are the main figure's, not redone
    t_keys = {j.key for j in expand(load_spec(CONFIGS / "ablation-T.yaml")).jobs
              if j.config["rounds"] == 20}
    eps_keys = {j.key for j in expand(load_spec(CONFIGS / "ablation-eps.yaml")).jobs
                if not j.config.get("eps")}
    assert t_keys and eps_keys and t_keys <= main_keys and eps_keys <= main_keys
    imp = expand(load_spec(CONFIGS / "imp-cifar10-resnet20.yaml")).jobs[0]
    assert imp.kind == "imp" and imp.config["run"]["rounds"] == 9


# eps and IMP ---------------------------------------------------------------------------------

def test_eps_reaches_ntksap_and_old_run_dirs_keep_their_names(tmp_path):
    plain = resolve("cifar10-resnet20", "ntksap", 0.5)
    fields = dataclasses.asdict(plain)
    # the digest as it was before eps, holdout and method_options existed: R was a field
    fields["repeats"] = fields.pop("method_options")["repeats"]
    fields.pop("holdout")
    fields.pop("shared_stream")  # also added later
    fields.pop("init")  # and this one
    fields.pop("input_shape")  # and the custom setting's two
    fields.pop("code_sha256")
    fields.pop("normalize_inputs")
    old = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    assert run_dir(plain, "o").name.endswith(old)
    assert resolve("cifar10-resnet20", "ntksap", 0.5, eps=0.01) == plain  # the default
    assert resolve("cifar10-resnet20", "ntksap", 0.5, method_options={"eps": 0.01}) == plain
    config = resolve("cifar10-resnet20", "ntksap", 0.5, eps=1e-3, dataset="synthetic",
                     model="convnet", limit_per_class=10, rounds=1, repeats=1,
                     train_overrides={"epochs": 1, "batch_size": 50})
    assert run_dir(config, "o") != run_dir(plain, "o")
    out = run_experiment(config, out_dir=tmp_path, progress=False)
    meta = Masks.load(Path(out["run_dir"]) / "masks.pt").meta
    assert meta["options"]["eps"] == 1e-3


def test_imp_directories_made_before_holdout_existed_keep_their_name():
    config = imp_config("cifar10-resnet20", 1 - 0.8 ** 4, rewind_epoch=1)
    fields = dataclasses.asdict(config)
    fields["run"].pop("holdout")  # the digest as it was before the field existed
    fields["run"].pop("shared_stream")  # (and this one)
    fields["run"].pop("init")  # (and this one)
    fields["run"].pop("input_shape")  # (and the custom setting's two)
    fields["run"].pop("code_sha256")
    fields["run"].pop("normalize_inputs")
    del fields["run"]["method_options"]  # ... and before method_options: R and eps fields
    fields["run"].update(repeats=0, eps=0.0)
    old = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    assert imp_dir(config, "o").name.endswith(old)
    assert imp_dir(config, "o").name == "imp-sp0.5904-seed0-e4a64b65a8"  # made before
    held = imp_config("mnist-lenet300", 0.9, rewind_epoch=1)
    assert held.run.holdout and imp_dir(held, "o") != imp_dir(
        dataclasses.replace(held, run=dataclasses.replace(held.run, holdout=0.0)), "o")


def test_imp_prunes_trained_weights_rewinds_and_resumes(tmp_path):
    config = imp_config("cifar10-resnet20", 1 - 0.8 ** 4, rewind_epoch=1,
                        dataset="synthetic", model="convnet", limit_per_class=20,
                        train_overrides={"epochs": 2, "batch_size": 32})
    assert config.run.rounds == 2 and config.run.method == "imp"  # 36 % per round
    assert round_sparsities(config) == pytest.approx([0.36, 1 - 0.8 ** 4])
    out = run_imp(config, out_dir=tmp_path, progress=False)
    directory = Path(out["run_dir"])
    assert [r["round"] for r in out["rounds"]] == [0, 1, 2]
    assert out["total"] - out["remaining"] == round((1 - 0.8 ** 4) * out["total"])
    first, second = (Masks.load(directory / f"round{t}" / "masks.pt") for t in (1, 2))
    assert all(bool((second[n] <= first[n]).all()) for n in first)  # monotone masks
    rewind = torch.load(directory / "rewind.pt", weights_only=True)
    init = torch.load(directory / "init.pt", weights_only=True)
    assert not torch.equal(rewind["fc.weight"], init["fc.weight"])  # weights after epoch 1
    # round 1 pruned the smallest trained weights of round 0, not of theta_0
    trained = torch.load(directory / "round0" / "checkpoint.pt", weights_only=False)["model"]
    weights = torch.cat([trained[f"{n}.weight"].abs().flatten() for n in first])
    kept = torch.cat([first[n].flatten() for n in first])
    assert weights[kept].min() >= weights[~kept].max()
    again = run_imp(config, out_dir=tmp_path, progress=False)
    assert again["already_done"] and again["best_test_acc"] == out["best_test_acc"]


# Sweeps --------------------------------------------------------------------------------------

def test_in_process_sweep_records_failures_retries_them_and_reports(tmp_path, monkeypatch,
                                                                    capsys):
    import ntksap.sweep.worker as worker

    spec = _write(tmp_path, grid={"method": ["magnitude", "imp"], "c": [4], "seed": [0]},
                  sanity=["shuffle", "invert"],
                  groups=[{"name": "pai", "grid": {"method": ["magnitude"]}},
                          {"name": "imp", "grid": {"method": ["imp"]}, "sanity": []},
                          {"name": "broken", "grid": {"method": ["random"]}, "sanity": [],
                           "fixed": {**QUICK, "dataset": "folder"}}])
    real = worker.execute
    flaky = {"calls": 0}

    def execute(job, options):
        if job.method == "magnitude" and job.config["transform"] == "invert":
            flaky["calls"] += 1
            raise RuntimeError("transient failure")
        return real(job, options)

    monkeypatch.setattr(worker, "execute", execute)
    argv = ["sweep", str(spec), "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--json"]) == 1
    state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (state["done"], state["failed"], state["pending"]) == (3, 2, 0)
    errors = state["failed_runs"]
    assert any("transient failure" in e for e in errors.values())
    assert any("folder" in e and "data" in e for e in errors.values())  # the real cause
    assert main(argv) == 1 and flaky["calls"] == 1  # failed runs are not retried unasked...
    capsys.readouterr()
    monkeypatch.setattr(worker, "execute", real)
    assert main([*argv, "--retry-failed", "--only", "method=magnitude"]) == 0  # ...until asked
    with Store(tmp_path / "runs" / "ntksap.db") as store:
        rows = store.rows()
        assert store.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 1}
    transforms = {r["config"]["transform"] for r in rows if r["method"] == "magnitude"}
    assert transforms == {"", "shuffle", "invert"}
    for row in rows:
        if row["method"] == "magnitude":
            meta = Masks.load(Path(row["run_dir"]) / "masks.pt").meta
            assert (meta["transform"] or "") == row["config"]["transform"]
    report = build_report(tmp_path / "runs" / "ntksap.db", tmp_path / "report")
    variants = {r.variant for r in report.rows}
    assert variants == {"magnitude", "magnitude [shuffle]", "magnitude [invert]", "imp"}
    imp_rows = [r for r in report.rows if r.method == "imp"]
    assert [r.sparsity for r in imp_rows] == [36.0, 59.04]  # one IMP run, two points
    assert "transient" not in report.html.read_text()  # retried: no longer failed
    assert "folder" in report.html.read_text()  # the failed run is listed with its error


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_kill_9_of_the_sweep_then_rerun_loses_and_repeats_nothing(tmp_path):
    fixed = {**QUICK, "epochs": 3}
    spec = _write(tmp_path, fixed=fixed,
                  grid={"method": ["magnitude", "snip"], "c": [2, 10], "seed": [0]})
    db = tmp_path / "runs" / "ntksap.db"
    argv = [sys.executable, "-m", "ntksap", "sweep", str(spec), "--workers", "2", "--device",
            "cpu", "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def midway() -> bool:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        if not db.exists():
            return False
        with Store(db) as store:
            counts = store.counts()
        return counts["done"] >= 1 and counts["running"] >= 1

    try:
        _wait(midway, 240, "the sweep to be midway")
    finally:
        with Store(db) as store:
            workers = [r["pid"] for r in store.rows(status="running")]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    _wait(lambda: not any(_alive(pid) for pid in workers), 30, "orphaned workers to stop")
    with Store(db) as store:  # the orphaned workers gave their runs back (or finished them)
        assert store.counts()["running"] == 0

    assert main(argv[3:]) == 0  # the same command again (in this process, to save a start)
    with Store(db) as store:
        assert store.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}
        rows = store.rows()
        done_events = [e["key"] for e in store.events() if e["event"] == "done"]
    assert sorted(done_events) == sorted(r["key"] for r in rows)  # each finished once
    run_dirs = sorted((tmp_path / "runs" / "cifar10-resnet20").iterdir())
    assert [d.name for d in run_dirs] == sorted(r["key"].split("/")[1] for r in rows)
    for directory in run_dirs:
        epochs = [json.loads(line)["epoch"] for line in
                  (directory / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]  # a resumed run repeats no epoch
    report = build_report(db, tmp_path / "report")
    assert len(report.rows) == 4 and report.html.exists()
    # accuracy, learning curves, densities and the two methods' mask-overlap heatmap
    assert [f.name.rsplit("-", 1)[-1] for f in report.figures] == [
        "accuracy.png", "curves.png", "1.png", "overlap.png"]


def _orphan(db: str, ready) -> None:
    from ntksap.sweep.worker import Heartbeat

    store = Store(db)
    claim = store.claim("s")
    ready.set()
    Heartbeat(db, claim, 0.2, parent=os.getppid() + 10 ** 6).run()  # "the parent died"


def test_a_worker_whose_sweep_died_gives_its_run_back_and_exits(tmp_path):
    import multiprocessing

    from ntksap.sweep.store import Job
    from ntksap.sweep.worker import ORPHANED

    db = str(tmp_path / "s.db")
    with Store(db) as store:
        store.add("s", [Job("p/a", "run", {"method": "snip"})])
    fork = multiprocessing.get_context("fork")
    ready = fork.Event()
    child = fork.Process(target=_orphan, args=(db, ready))
    child.start()
    child.join(30)
    assert ready.is_set() and child.exitcode == ORPHANED
    with Store(db) as store:
        assert store.counts("s")["pending"] == 1
        assert [e["detail"] for e in store.events() if e["event"] == "released"] == [
            "the sweep process died"]


def test_ray_backend_runs_the_sweep_on_a_local_ray_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ntksap[ray]')")
    spec = _write(tmp_path, fixed={**QUICK, "epochs": 1},
                  grid={"method": ["magnitude", "snip"], "c": [4], "seed": [0]})
    sweep = expand(load_spec(spec))
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        counts = run_sweep(sweep, backend="ray", progress=False)
        assert counts == {"pending": 0, "running": 0, "done": 2, "failed": 0}
        with Store(sweep.db) as store:
            rows = store.rows()
            claims = [e for e in store.events() if e["event"] == "claimed"]
        assert all(r["worker"].startswith("ray-driver:") and Path(r["run_dir"]).exists()
                   for r in rows)
        assert run_sweep(sweep, backend="ray", progress=False)["done"] == 2
        with Store(sweep.db) as store:  # finished runs are not submitted again
            assert len([e for e in store.events() if e["event"] == "claimed"]) == len(claims)
    finally:
        ray.shutdown()


def test_local_workers_get_one_gpu_each_or_a_share_of_the_cores(monkeypatch):
    from ntksap.sweep import plan_slots

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan_slots("cuda")] == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan_slots("cuda", 3)] == ["4", "6", "4"]
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cpu = plan_slots("cpu", 4)
    assert len(cpu) == 4 and all(s.device == "cpu" and s.threads == 2 for s in cpu)
