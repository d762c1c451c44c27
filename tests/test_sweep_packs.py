"""`ntksap sweep --pack-size M`: runs claimed and trained in packs, recorded run by run."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import yaml

from ntksap.cli import main
from ntksap.errors import ConfigError, DiskFullError
from ntksap.pack import MemberResult
from ntksap.report import build_report
from ntksap.sweep import Store, expand, load_spec, packing, run_sweep
from ntksap.sweep.jobs import ExecOptions
from ntksap.sweep.store import Job
from ntksap.sweep.worker import work

QUICK = {"dataset": "synthetic", "model": "convnet", "limit_per_class": 12, "epochs": 1,
         "batch_size": 32, "rounds": 2, "repeats": 1}
GIB = 1 << 30
ONE_IMAGE = 1 / 120  # the synthetic test split at limit_per_class 12: 12 images x 10 classes

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(tmp_path: Path, name: str = "p", **spec) -> Path:
    spec = {"name": name, "preset": "cifar10-resnet20", "out_dir": str(tmp_path / "runs"),
            "fixed": dict(QUICK), **spec}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _spec_with_imp(tmp_path: Path, out: str = "runs") -> Path:
    """Four packable runs (three pruned, one dense) and one IMP run."""
    return _write(tmp_path, out_dir=str(tmp_path / out),
                  grid={"method": ["magnitude", "snip", "random"], "c": [4], "seed": [0]},
                  groups=[{"name": "pai"},
                          {"name": "dense", "grid": {"method": ["dense"], "c": None}},
                          {"name": "imp", "grid": {"method": ["imp"], "c": [4]}}])


class FakeTrainer:
    """Stands in for run_pack and execute: records what each was asked to train and returns
    a summary made from the run's key (no training)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.packs, self.alone = tmp_path, [], []

    def summary(self, name: str) -> dict:
        directory = self.tmp_path / "fake" / name
        directory.mkdir(parents=True, exist_ok=True)
        return {"run_dir": str(directory), "best_test_acc": 0.5, "final_test_acc": 0.25}

    def run_pack(self, configs, **options):
        self.packs.append([(c.method, c.sparsity, c.seed) for c in configs])
        return [MemberResult(c, self.summary(f"{c.method}-{c.seed}")) for c in configs]

    def execute(self, job, options):
        self.alone.append(job.kind)
        return self.summary(job.key.replace("/", "_"))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    import ntksap.sweep.worker as worker

    trainer = FakeTrainer(tmp_path)
    monkeypatch.setattr(packing, "run_pack", trainer.run_pack)
    monkeypatch.setattr(worker, "execute", trainer.execute)
    return trainer


def _rows(db: Path) -> dict[str, dict]:
    with Store(db) as store:
        return {r["key"]: r for r in store.rows()}


# Same results as separate runs ---------------------------------------------------------------

def test_a_sweep_in_packs_fills_the_store_and_report_as_separate_runs(tmp_path):
    spec = _write(tmp_path, grid={"method": ["magnitude", "snip"], "c": [4], "seed": [0, 1]},
                  groups=[{"name": "pai"},
                          {"name": "dense", "grid": {"method": ["dense"], "c": None}}])
    results, claims = {}, {}
    for size, workers in (("1", "0"), ("3", "1")):  # the packs in a worker process
        out = tmp_path / f"m{size}"
        argv = ["sweep", str(spec), "--workers", workers, "--device", "cpu", "--no-progress",
                "--out-dir", str(out), "--pack-size", size]
        assert main(argv) == 0
        results[size] = (_rows(out / "ntksap.db"), build_report(out / "ntksap.db",
                                                                tmp_path / f"report{size}"))
        with Store(out / "ntksap.db") as store:
            claims[size] = [e["detail"] for e in store.events() if e["event"] == "claimed"]
    assert claims == {"1": [""] * 6, "3": ["pack of 3"] * 6}
    (alone, report_alone), (packed, report_packed) = results["1"], results["3"]
    assert len(alone) == 6 and set(packed) == set(alone)
    # float32: a pack's grouped kernels sum in another order than separate layers, so an
    # accuracy may move by a test image or two (exact equality is tested in float64 in
    # test_pack.py); everything else must be the same
    close = dict(abs=ONE_IMAGE * 2, rel=0)
    for key, row in alone.items():
        assert row["status"] == packed[key]["status"] == "done"
        for field in ("final_test_acc", "best_test_acc"):
            assert packed[key][field] == pytest.approx(row[field], **close)
        assert Path(packed[key]["run_dir"]).relative_to(tmp_path / "m3") == Path(
            row["run_dir"]).relative_to(tmp_path / "m1")
        files = [sorted(f.name for f in Path(r["run_dir"]).iterdir()) for r in (row, packed[key])]
        assert files[0] == files[1] and "summary.json" in files[0]
        metrics = [(Path(r["run_dir"]) / "metrics.jsonl").read_text() for r in (row, packed[key])]
        assert [json.loads(m)["test_acc"] for m in metrics[1].splitlines()] == pytest.approx(
            [json.loads(m)["test_acc"] for m in metrics[0].splitlines()], **close)
    assert len(report_alone.rows) == len(report_packed.rows) == 3
    for a, b in zip(report_alone.rows, report_packed.rows, strict=True):
        numbers = ("best_mean", "best_std", "final_mean", "final_std", "val_mean", "val_half")
        assert {k: v for k, v in vars(a).items() if k not in numbers} == {
            k: v for k, v in vars(b).items() if k not in numbers}
        for name in ("best_mean", "final_mean"):  # in % of the test set
            assert getattr(b, name) == pytest.approx(getattr(a, name), abs=100 * ONE_IMAGE * 2)


# Per-run accounting --------------------------------------------------------------------------

def test_a_member_that_fails_fails_only_its_row(tmp_path, fake, monkeypatch, capsys):
    spec = _spec_with_imp(tmp_path)

    def run_pack(configs, **options):
        results = fake.run_pack(configs, **options)
        return [MemberResult(r.config, error="FloatingPointError: non-finite loss at epoch 1")
                if r.config.method == "snip" else r for r in results]

    monkeypatch.setattr(packing, "run_pack", run_pack)
    argv = ["sweep", str(spec), "--workers", "0", "--device", "cpu", "--no-progress",
            "--pack-size", "4", "--json"]
    assert main(argv) == 1
    state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (state["done"], state["failed"], state["pending"]) == (4, 1, 0)
    assert list(state["failed_runs"].values()) == [
        "FloatingPointError: non-finite loss at epoch 1"]
    rows = _rows(tmp_path / "runs" / "ntksap.db")
    assert [r["method"] for r in rows.values() if r["status"] == "failed"] == ["snip"]
    assert all(r["best_test_acc"] == 0.5 for r in rows.values() if r["status"] == "done")

    monkeypatch.setattr(packing, "run_pack", fake.run_pack)
    assert main([*argv, "--retry-failed"]) == 0  # only the failed run goes again, alone
    assert fake.packs[-1] == [("snip", pytest.approx(0.5904), 0)]


def test_a_pack_that_raises_fails_each_of_its_rows_and_a_stop_gives_them_back(tmp_path,
                                                                               monkeypatch):
    sweep = expand(load_spec(_write(tmp_path, grid={"method": ["magnitude", "snip"], "c": [4],
                                                    "seed": [0]})))
    db = Path(sweep.db)
    with Store(db) as store:
        store.add(sweep.name, sweep.jobs)
    options = ExecOptions(sweep.out_dir, device="cpu")

    def stopped(configs, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(packing, "run_pack", stopped)
    with pytest.raises(KeyboardInterrupt):
        work(db, sweep.name, options, pack_size=2)
    with Store(db) as store:
        assert store.counts() == {"pending": 2, "running": 0, "done": 0, "failed": 0}
        assert [r["attempts"] for r in store.rows()] == [0, 0]

    def full(configs, **options):
        raise DiskFullError("no space left to write x", "x")

    monkeypatch.setattr(packing, "run_pack", full)
    with pytest.raises(DiskFullError, match="disk is full"):
        work(db, sweep.name, options, pack_size=2)
    with Store(db) as store:
        assert store.counts()["pending"] == 2

    def broken(configs, **options):
        raise RuntimeError("cuDNN refused the grouped convolution")

    monkeypatch.setattr(packing, "run_pack", broken)
    assert work(db, sweep.name, options, pack_size=2) == 2
    with Store(db) as store:
        rows = store.rows()
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all(r["error"].startswith("RuntimeError: cuDNN refused") for r in rows)


def test_a_member_stopped_by_a_full_disk_is_given_back_the_others_recorded(tmp_path, fake,
                                                                           monkeypatch):
    sweep = expand(load_spec(_write(tmp_path, grid={"method": ["magnitude", "snip"], "c": [4],
                                                    "seed": [0]})))
    with Store(sweep.db) as store:
        store.add(sweep.name, sweep.jobs)

    def run_pack(configs, **options):
        results = fake.run_pack(configs, **options)
        return [MemberResult(r.config, error="DiskFullError: no space left to write m.pt")
                if r.config.method == "snip" else r for r in results]

    monkeypatch.setattr(packing, "run_pack", run_pack)
    with pytest.raises(DiskFullError, match="disk is full"):
        work(sweep.db, sweep.name, ExecOptions(sweep.out_dir, device="cpu"), pack_size=2)
    rows = _rows(Path(sweep.db))
    assert sorted((r["method"], r["status"], r["attempts"]) for r in rows.values()) == [
        ("magnitude", "done", 1), ("snip", "pending", 0)]


def test_imp_runs_alone_in_a_sweep_of_packs(tmp_path, fake):
    spec = _spec_with_imp(tmp_path)
    argv = ["sweep", str(spec), "--workers", "0", "--device", "cpu", "--no-progress",
            "--pack-size", "8"]
    assert main(argv) == 0
    assert fake.alone == ["imp"]  # through execute, on its own
    assert len(fake.packs) == 1 and sorted(m for m, _, _ in fake.packs[0]) == [
        "dense", "magnitude", "random", "snip"]
    with Store(tmp_path / "runs" / "ntksap.db") as store:
        assert store.counts() == {"pending": 0, "running": 0, "done": 5, "failed": 0}
        claims = {e["key"]: e["detail"] for e in store.events() if e["event"] == "claimed"}
    assert sorted(claims.values()) == ["", "pack of 4", "pack of 4", "pack of 4", "pack of 4"]
    assert claims[next(k for k in claims if "/imp-" in k)] == ""


def test_pack_size_1_claims_one_run_at_a_time_in_sweep_order(tmp_path, fake):
    spec = _spec_with_imp(tmp_path)
    assert main(["sweep", str(spec), "--workers", "0", "--device", "cpu", "--no-progress",
                 "--pack-size", "1"]) == 0
    assert fake.packs == [] and fake.alone == ["run"] * 4 + ["imp"]


def test_auto_is_one_on_a_cpu_and_what_free_gpu_memory_holds_on_a_gpu(tmp_path, fake,
                                                                      monkeypatch):
    sweep = expand(load_spec(_spec_with_imp(tmp_path)))
    assert packing.resolve_pack_size("auto", "cpu") == 1
    assert packing.resolve_pack_size("5", "cuda") == 5
    cifar = Job("a", "run", {"dataset": "cifar10", "train": {"batch_size": 128}})
    imagenet = Job("b", "run", {"dataset": "imagenet", "train": {"batch_size": 256}})
    tiny = Job("c", "run", {"dataset": "tinyimagenet", "train": {"batch_size": 128}})
    fit = packing.resolve_pack_size("auto", "cuda", lambda: 10 * GIB)  # 1 GiB at 32x32, 128
    assert (fit(cifar), fit(imagenet), fit(tiny)) == (10, 1, 2)
    assert packing.resolve_pack_size("auto", "cuda", lambda: 10 ** 6 * GIB)(cifar) == 64
    assert packing.resolve_pack_size("auto", "cuda", lambda: GIB // 10)(cifar) == 1

    with Store(sweep.db) as store:
        store.add(sweep.name, sweep.jobs)
    # QUICK's synthetic 32x32 images at batch 32: a quarter GiB per network; room for 3
    monkeypatch.setattr(packing, "free_device_bytes", lambda: 3 * GIB // 4)
    assert work(sweep.db, sweep.name, ExecOptions(sweep.out_dir, device="cuda"),
                pack_size="auto") == 5
    assert [len(p) for p in fake.packs] == [3, 1] and fake.alone == ["imp"]


# Claims --------------------------------------------------------------------------------------

def _jobs(*names: str) -> list[Job]:
    return [Job(f"p/{n}", "run", {"method": n.rstrip("0123456789"), "group": n[0]})
            for n in names]


def test_claim_pack_takes_one_key_sorted_and_a_given_back_pack_forms_again(tmp_path):
    def group(job):  # packs: runs of equal "group"; "i" runs alone
        return None if job.config["group"] == "i" else job.config["group"]

    db = tmp_path / "s.db"
    with Store(db) as store:
        store.add("s", _jobs("b2", "a1", "i1", "b1", "a2", "b3", "a3"))
        first = store.claim_pack("s", "w1", 2, group)
        assert [c.job.key for c in first] == ["p/b1", "p/b2"]  # b2 comes first in the sweep
        second = store.claim_pack("s", "w2", 2, group)
        assert [c.job.key for c in second] == ["p/a1", "p/a2"]
        for claim in first:
            store.release(claim, "stopped")
        again = store.claim_pack("s", "w1", 2, group)
        assert [c.job.key for c in again] == ["p/b1", "p/b2"]  # the same pack
        assert [c.job.key for c in store.claim_pack("s", "w1", 5, group)] == ["p/i1"]
        assert [c.job.key for c in store.claim_pack("s", "w1", 5, group)] == ["p/b3"]
        assert [c.job.key for c in store.claim_pack("s", "w1", lambda j: 5, group)] == [
            "p/a3"]
        assert store.claim_pack("s", "w1", 5, group) == []
        assert store.counts("s")["running"] == 7
        assert all(r["attempts"] == 1 for r in store.rows())


def _orphan_pack(db: str, ready) -> None:
    from ntksap.sweep.worker import Heartbeat

    store = Store(db)
    claims = store.claim_pack("s", None, 3, lambda job: "k")
    ready.set()
    Heartbeat(db, claims, 0.2, parent=os.getppid() + 10 ** 6).run()  # "the parent died"


def test_a_worker_whose_sweep_died_gives_its_whole_pack_back(tmp_path):
    from ntksap.sweep.worker import ORPHANED

    db = str(tmp_path / "s.db")
    with Store(db) as store:
        store.add("s", _jobs("a1", "a2", "a3"))
    fork = multiprocessing.get_context("fork")
    ready = fork.Event()
    child = fork.Process(target=_orphan_pack, args=(db, ready))
    child.start()
    child.join(30)
    assert ready.is_set() and child.exitcode == ORPHANED
    with Store(db) as store:
        assert store.counts("s")["pending"] == 3


# Dry run and bad input -----------------------------------------------------------------------

def test_dry_run_lists_the_packs_and_creates_nothing(tmp_path, capsys):
    spec = _write(tmp_path, grid={"method": ["magnitude", "snip"], "c": [4, 10], "seed": [0]},
                  groups=[{"name": "short"},
                          {"name": "long", "grid": {"method": ["random"]},
                           "fixed": {**QUICK, "epochs": 2}},
                          {"name": "imp", "grid": {"method": ["imp"], "c": [4]}}])
    jobs = expand(load_spec(spec)).jobs
    assert main(["sweep", str(spec), "--pack-size", "3", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    short = sorted(j.key for j in jobs if j.labels["group"] == "short")
    long = sorted(j.key for j in jobs if j.labels["group"] == "long")
    imp = next(j.key for j in jobs if j.method == "imp")
    expected = [("pack 1 (3 runs, preset cifar10-resnet20):", short[:3]),
                ("pack 2 (1 run, preset cifar10-resnet20):", short[3:]),
                ("pack 3 (2 runs, preset cifar10-resnet20):", long)]
    lines = iter(out)
    for header, keys in expected:
        assert next(lines) == header
        assert [next(lines).split()[0] for _ in keys] == keys
    assert next(lines).startswith(f"alone (imp): {imp}  [group=imp")
    assert next(lines).startswith("7 runs in 3 packs of up to 3 and 1 run alone; store ")
    assert not (tmp_path / "runs").exists()

    assert main(["sweep", str(spec), "--pack-size", "1", "--dry-run"]) == 0
    plain = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in plain[:-1]] == [j.key for j in jobs]
    assert plain[-1].startswith("7 runs; store ")


@pytest.mark.parametrize("size", ["0", "-2", "1.5", "many", ""])
def test_a_bad_pack_size_is_one_clear_line_and_creates_nothing(tmp_path, capsys, size):
    spec = _write(tmp_path, grid={"method": ["magnitude"], "c": [4], "seed": [0]})
    assert main(["sweep", str(spec), "--workers", "0", "--pack-size", size]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"ntksap sweep: error: --pack-size must be a whole number >= 1 or "
                            f"auto; got {size!r}\n")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="--pack-size"):
        run_sweep(expand(load_spec(spec)), workers=0, pack_size=0)
    assert not (tmp_path / "runs").exists()


# Ray -----------------------------------------------------------------------------------------

def test_ray_records_a_pack_task_run_by_run(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ntksap[ray]')")
    from ray.exceptions import WorkerCrashedError

    from ntksap.sweep.ray_backend import record_pack_result

    fake = FakeTrainer(tmp_path)
    sweep = expand(load_spec(_write(tmp_path, grid={"method": ["magnitude", "snip"], "c": [4],
                                                    "seed": [0]})))
    with Store(sweep.db) as store:
        store.add(sweep.name, sweep.jobs)
        claims = store.claim_pack(sweep.name, "ray", 2, packing.job_pack_key)
        configs = [packing.config_of(c.job) for c in claims]
        results = fake.run_pack(configs)
        results[1] = MemberResult(configs[1], error="diverged at epoch 1")
        assert record_pack_result(store, claims, lambda: results, 3) == ["done", "failed"]
        store.retry_failed()
        claims = store.claim_pack(sweep.name, "ray", 2, packing.job_pack_key)

        def died():
            raise WorkerCrashedError()

        assert record_pack_result(store, claims, died, 3) == ["pending"]
        rows = {r["method"]: r for r in store.rows()}
    assert rows["magnitude"]["status"] == "done" and rows["snip"]["status"] == "pending"


def test_ray_backend_trains_the_sweep_in_packs(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ntksap[ray]')")
    sweep = expand(load_spec(_spec_with_imp(tmp_path)))
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        counts = run_sweep(sweep, backend="ray", progress=False, pack_size=4)
    finally:
        ray.shutdown()
    assert counts == {"pending": 0, "running": 0, "done": 5, "failed": 0}
    with Store(sweep.db) as store:
        rows = store.rows()
        claims = [e["detail"] for e in store.events() if e["event"] == "claimed"]
    assert sorted(claims) == ["", "pack of 4", "pack of 4", "pack of 4", "pack of 4"]
    assert all(r["worker"].startswith("ray-driver:") and Path(r["run_dir"]).is_dir()
               for r in rows)


def test_the_pack_options_reach_run_pack_in_process_and_in_workers(tmp_path, monkeypatch):
    """--compile and --separate-unfusable go to run_pack (in this process), and onto a local
    worker's command line."""
    seen = []

    def run_pack(configs, **options):
        seen.append({k: options[k] for k in ("compile", "separate_unfusable")})
        return FakeTrainer(tmp_path).run_pack(configs)

    monkeypatch.setattr(packing, "run_pack", run_pack)
    spec = _write(tmp_path, grid={"method": ["magnitude", "snip"], "c": [4], "seed": [0]})
    assert main(["sweep", str(spec), "--workers", "0", "--device", "cpu", "--no-progress",
                 "--pack-size", "2", "--compile", "--separate-unfusable"]) == 0
    assert seen == [{"compile": True, "separate_unfusable": True}]
    from ntksap.sweep.local import Slot, _start

    launched = []
    monkeypatch.setattr("subprocess.Popen", lambda argv, **kw: launched.append(argv))
    _start(0, Slot("cpu", {}), tmp_path / "db", "s",
           ExecOptions(str(tmp_path), compile=True, separate_unfusable=True), 1.0, tmp_path, 2)
    assert "--compile" in launched[0] and "--separate-unfusable" in launched[0]
    from ntksap.sweep.worker import main as worker_main

    captured = {}
    monkeypatch.setattr("ntksap.sweep.worker.work",
                        lambda db, sweep, options, **kw: captured.update(options=options))
    worker_main(["--db", "x", "--compile", "--separate-unfusable"])
    assert captured["options"].compile and captured["options"].separate_unfusable
