"""Failure handling of sweep, report, ntk and lab (issue 10, items 14-16): Ray retries with the
local backend's attempt accounting, unreadable runs listed by the report, and one clear line
(``ntksap <cmd>: error: ...``, exit 2, nothing written) for each bad input."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from ntksap.cli import main
from ntksap.sweep import Store
from ntksap.sweep.jobs import ExecOptions
from ntksap.sweep.store import Job

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = {"dataset": "synthetic", "model": "convnet", "limit_per_class": 4, "epochs": 1,
         "batch_size": 16}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _error_line(capsys) -> str:
    """The CLI's stderr: exactly one line, no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# Item 14: Ray retries a run whose worker died, as the local backend does ---------------------

def test_ray_resubmits_a_run_whose_worker_died(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ntksap[ray]')")
    from ntksap.sweep import run_ray

    db = str(tmp_path / "s.db")
    with Store(db) as store:
        store.add("s", [Job("p/dies-once", "run", {})])
    tally = tmp_path / "attempts"

    def task(job: Job, options: ExecOptions) -> dict:
        tries = int(tally.read_text()) + 1 if tally.exists() else 1
        tally.write_text(str(tries))
        if tries == 1:
            os._exit(1)  # the worker process dies, as on a segfault or an OOM kill
        return {"run_dir": str(tmp_path), "best_test_acc": 0.5, "final_test_acc": 0.5}

    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        counts = run_ray(db, "s", ExecOptions(str(tmp_path)), progress=False, max_attempts=2,
                         task=task)
    finally:
        ray.shutdown()
    assert counts == {"pending": 0, "running": 0, "done": 1, "failed": 0}
    with Store(db) as store:
        row = store.rows("s")[0]
        events = [e["event"] for e in store.events("p/dies-once")]
    assert row["attempts"] == 2 and tally.read_text() == "2"
    assert events == ["added", "claimed", "reclaimed", "claimed", "done"]


def test_ray_gives_a_run_up_after_max_attempts_and_fails_a_raising_run_at_once(tmp_path):
    """The Ray driver's handling of each task's outcome (what run_ray calls on ray.get)."""
    exceptions = pytest.importorskip("ray.exceptions", reason="Ray is not installed")
    from ntksap.sweep.ray_backend import record_result

    def crash() -> dict:
        raise exceptions.WorkerCrashedError()

    def raises() -> dict:
        try:
            raise ValueError("lr must be positive")
        except ValueError as err:
            raise exceptions.RayTaskError("_trial", "traceback", err) from err

    db = str(tmp_path / "s.db")
    with Store(db) as store:
        store.add("s", [Job("p/crashes", "run", {}), Job("p/raises", "run", {})])
        statuses = [record_result(store, store.claim("s"), crash, 3) for _ in range(3)]
        assert statuses == ["pending", "pending", "failed"]
        assert record_result(store, store.claim("s"), raises, 3) == "failed"
        rows = {r["key"]: r for r in store.rows("s")}
    crashed, raised = rows["p/crashes"], rows["p/raises"]
    assert crashed["attempts"] == 3 and "WorkerCrashedError" in crashed["error"]
    assert "gave up after 3 attempts" in crashed["error"]
    assert raised["attempts"] == 1 and raised["error"].startswith(
        "ValueError: lr must be positive")


def test_a_dead_worker_counts_an_attempt_like_a_reclaimed_local_worker(tmp_path):
    """Store.worker_died (the Ray driver's transition) and Store.reclaim (the local backend's)
    give the same rows the same attempts, status and error."""
    results = {}
    for backend in ("local", "ray"):
        db = str(tmp_path / f"{backend}.db")
        with Store(db) as store:
            store.add("s", [Job("p/a", "run", {})])
            for _ in range(3):
                claim = store.claim("s", pid=2 ** 22 + 1 if backend == "local" else None)
                if backend == "local":  # its pid does not exist: the worker died
                    assert store.reclaim("s", max_attempts=2) == ["p/a"]
                else:
                    store.worker_died(claim, f"worker {claim.worker} died", max_attempts=2)
                if claim.attempt == 2:
                    break
            row = store.rows("s")[0]
            results[backend] = (row["status"], row["attempts"], row["error"].split(" died")[1])
    assert results["local"] == results["ray"] == (
        "failed", 2, " (attempt 2); gave up after 2 attempts (raise --max-attempts, or look for "
        "the cause in the worker logs)")


# Item 15 and the report's bad input -----------------------------------------------------------

def _run_dir(root: Path, name: str, method: str = "dense", *, config: str | None = None,
             summary: str | None = None, densities: str | None = None) -> Path:
    """A run directory as ntksap run leaves it (no masks); ``config``/``summary``/``densities``
    replace the files' text (e.g. a truncated one)."""
    directory = root / "cifar10-resnet20" / name
    directory.mkdir(parents=True)
    record = {"kind": "run", "config": {"preset": "cifar10-resnet20", "method": method,
                                        "sparsity": 0.0 if method == "dense" else 0.5,
                                        "seed": 0, "dataset": "synthetic", "model": "convnet"}}
    (directory / "config.json").write_text(config if config is not None else json.dumps(record))
    (directory / "summary.json").write_text(
        summary if summary is not None else json.dumps({"final_test_acc": 0.5,
                                                        "best_test_acc": 0.6}))
    if densities is not None:
        (directory / "densities.json").write_text(densities)
    return directory


def test_report_lists_unreadable_runs_with_their_path(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run_dir(runs, "dense-ok")
    bad_config = _run_dir(runs, "snip-bad-config", "snip", config='{"kind": "run", "conf')
    bad_summary = _run_dir(runs, "snip-bad-summary", "snip", summary='{"final_test_acc": 0.')
    bad_densities = _run_dir(runs, "snip-bad-densities", "snip", densities="[{")
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    page = (out / "index.html").read_text()
    table = (out / "results.md").read_text()
    for directory, name in ((bad_config, "config.json"), (bad_summary, "summary.json"),
                            (bad_densities, "densities.json")):
        path = str(directory / name)
        assert path in page and path in table and path in printed
    assert "Failed, unfinished and unreadable runs" in page
    assert "2 unreadable" in printed and "JSONDecodeError" in table
    assert "| dense |" in table and "| snip |" in table  # the readable runs are reported


@pytest.mark.parametrize("source, message", [
    ("missing.db", "does not exist"),
    ("junk.db", "is not an SQLite database"),
    ("other.db", "an SQLite database but not a results store"),
    ("empty", "nothing to report: no run directories"),
    ("empty.db", "nothing to report: the results store"),
])
def test_report_refuses_a_bad_source_before_writing_anything(tmp_path, capsys, source,
                                                               message):
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 64)
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "empty").mkdir()
    Store(tmp_path / "empty.db").close()
    before = _files(tmp_path)
    assert main(["report", str(tmp_path / source), "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert line.startswith("ntksap report: error: ") and message in line
    assert "--db" not in line  # report has no such flag
    assert _files(tmp_path) == before  # no OUT/figures left behind, the store untouched


def test_report_refuses_an_out_that_is_a_file(tmp_path, capsys):
    _run_dir(tmp_path / "runs", "dense-ok")
    target = tmp_path / "report.html"
    target.write_text("mine")
    assert main(["report", str(tmp_path / "runs"), "--out", str(target)]) == 2
    assert "is a file; give a folder" in _error_line(capsys)
    assert target.read_text() == "mine"


# Sweep --------------------------------------------------------------------------------------

def _spec(tmp_path: Path, **spec) -> Path:
    spec = {"name": "s", "preset": "cifar10-resnet20", "out_dir": str(tmp_path / "runs"),
            "fixed": dict(QUICK), "grid": {"method": ["random"], "c": [2], "seed": [0]},
            **spec}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("flags, spec, message", [
    (["--workers", "-1"], {}, "--workers must be >= 1 (or 0"),
    ([], {"workers": -2}, "workers (spec key, or --workers) must be an integer >= 0"),
    (["--max-attempts", "0"], {}, "--max-attempts) must be an integer >= 1"),
    (["--backend", "ray", "--gpus-per-trial", "-1"], {}, "--gpus-per-trial must be >= 0"),
])
def test_sweep_refuses_bad_running_options_before_creating_anything(tmp_path, capsys, flags,
                                                                     spec, message):
    path = _spec(tmp_path, **spec)
    assert main(["sweep", str(path), "--no-progress", *flags]) == 2  # used to wait forever
    assert message in _error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_sweep_status_reads_the_store_without_creating_or_changing_it(tmp_path, capsys):
    path = _spec(tmp_path, grid={"method": ["random", "magnitude"], "c": [2], "seed": [0]})
    assert main(["sweep", str(path), "--status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (state["pending"], state["done"]) == (2, 0)
    assert not (tmp_path / "runs").exists()
    db = tmp_path / "runs" / "ntksap.db"
    with Store(db) as store:  # one of the two runs finished, recorded under another sweep
        store.add("other", [j for j in load_jobs(path) if j.method == "random"])
        store.finish(store.claim("other"), {"best_test_acc": 0.5})
        events = len(store.events())
    before = db.read_bytes()
    assert main(["sweep", str(path), "--status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (state["pending"], state["done"]) == (1, 1)
    with Store(db) as store:
        assert store.sweeps() == ["other"] and len(store.events()) == events
    assert db.read_bytes() == before


def load_jobs(path: Path) -> list[Job]:
    from ntksap.sweep import expand, load_spec

    return expand(load_spec(path)).jobs


def test_duplicate_grid_points_are_run_once_with_a_warning(tmp_path, capsys):
    path = _spec(tmp_path, grid={"method": ["random"], "c": [2, 2], "seed": [0]},
                 groups=[{"name": "main"}, {"name": "again", "grid": {"c": [2, 4]}}])
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("2 runs")
    warning = err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("ntksap sweep: warning: 2 point(s)")
    assert "{c: 2, method: random, seed: 0} (group 'main')" in warning[0]  # YAML sorts keys
    assert "(group 'again' and 'main')" in warning[0]


def test_dense_points_of_a_sanity_sweep_are_not_duplicates(tmp_path, capsys):
    path = _spec(tmp_path, grid={"method": ["random", "dense"], "c": [2], "seed": [0]},
                 sanity=["shuffle", "invert"])
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("4 runs") and err == ""


def _disk_full_store(monkeypatch, method: str) -> None:
    """Make the store's ``method`` fail once as SQLite does on a full disk."""
    real = getattr(Store, method)
    calls = {"n": 0}

    def full(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, method, full)


def test_a_full_disk_in_the_store_stops_the_sweep_in_one_line_and_a_rerun_resumes(
        tmp_path, capsys, monkeypatch):
    path = _spec(tmp_path)
    argv = ["sweep", str(path), "--workers", "0", "--device", "cpu", "--no-progress"]
    _disk_full_store(monkeypatch, "claim")
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith("ntksap sweep: error: the disk is full (")
    assert "database or disk is full" in line and "resumes where it stopped" in line
    with Store(tmp_path / "runs" / "ntksap.db") as store:
        assert store.counts("s") == {"pending": 1, "running": 0, "done": 0, "failed": 0}
    monkeypatch.undo()
    assert main(argv) == 0  # the same command again, space freed
    with Store(tmp_path / "runs" / "ntksap.db") as store:
        assert store.counts("s")["done"] == 1


def test_a_full_disk_during_a_run_gives_the_run_back_instead_of_failing_it(
        tmp_path, capsys, monkeypatch):
    import errno

    from ntksap.sweep import worker

    def execute(job, options):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/init.pt")

    monkeypatch.setattr(worker, "execute", execute)
    path = _spec(tmp_path)
    assert main(["sweep", str(path), "--workers", "0", "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "the disk is full" in line and "No space left on device" in line
    with Store(tmp_path / "runs" / "ntksap.db") as store:
        row = store.rows("s")[0]
    assert (row["status"], row["attempts"], row["error"]) == ("pending", 0, None)


# ntk and lab ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--inputs", "-3"], "--inputs must be >= 1"),
    (["--num-classes", "0"], "--num-classes must be >= 1"),
    (["--input-shape", "3", "32", "32"], "cannot take inputs of shape (3, 32, 32)"),
    (["--input-shape", "0", "28"], "--input-shape needs sizes >= 1"),
])
def test_ntk_refuses_bad_numbers_in_one_line(tmp_path, capsys, flags, message):
    out = tmp_path / "ntk"
    assert main(["ntk", "--model", "mlp", "--out", str(out), "--no-progress", *flags]) == 2
    line = _error_line(capsys)
    assert line.startswith("ntksap ntk: error: ") and message in line
    assert not out.exists()


def test_ntk_names_the_shape_the_model_takes(capsys, tmp_path):
    assert main(["ntk", "--model", "mlp", "--out", str(tmp_path / "o"),
                 "--input-shape", "3", "32", "32"]) == 2
    assert "give the shape it expects (1, 28, 28)" in _error_line(capsys)


def test_ntk_runs_refuse_a_bad_input_count(tmp_path, capsys):
    assert main(["ntk", "--runs", str(tmp_path), "--inputs", "0"]) == 2
    assert "--inputs must be >= 1" in _error_line(capsys)


@pytest.mark.parametrize("argv, message", [
    (["dynamics", "--width", "0"], "--width must be an integer >= 1; got 0"),
    (["dynamics", "--points", "-1"], "--points must be an integer >= 1"),
    (["dynamics", "--steps", "0"], "--steps must be an integer >= 1"),
    (["dynamics", "--lr-scale", "-0.1"], "--lr-scale must be a positive number"),
    (["dynamics", "--lr-scale", "nan"], "--lr-scale must be a positive number"),
    (["frequency", "--width", "0"], "--width must be an integer >= 1"),
    (["frequency", "--points", "0"], "--points must be an integer >= 1"),
    (["frequency", "--indices", "0"], "--indices must be an integer >= 1"),
    (["asi", "--widths", "1", "0", "1"], "--widths must be an integer >= 1"),
    (["asi", "--widths", "3", "8", "1"], "must start and end with 1"),
    (["asi", "--std", "0"], "--std must be a positive number"),
    (["asi", "--train-points", "0"], "--train-points must be an integer >= 1"),
    (["asi", "--steps", "-5"], "--steps must be an integer >= 1"),
    (["asi", "--lr-scale", "inf"], "--lr-scale must be a positive number"),
])
def test_lab_refuses_bad_numbers_in_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "lab"
    assert main(["lab", *argv, "--out", str(out), "--no-progress"]) == 2
    line = _error_line(capsys)
    assert line.startswith("ntksap lab: error: ") and message in line
    assert not out.exists()


def test_lab_refuses_an_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "figure.png"
    target.write_text("mine")
    assert main(["lab", "dynamics", "--width", "4", "--points", "3", "--steps", "1",
                 "--out", str(target)]) == 2
    assert "is a file; give a folder" in _error_line(capsys) and target.read_text() == "mine"


# Help text -------------------------------------------------------------------------------------

HELP = [["prune"], ["run"], ["sweep"], ["report"], ["ntk"], ["lab"], ["lab", "dynamics"],
        ["lab", "frequency"], ["lab", "asi"]]


def _options(help_text: str) -> list[str]:
    """Each option's entry of a help text, its wrapped lines joined."""
    entries: list[str] = []
    for line in help_text.splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
        elif line.startswith("   ") and entries:
            entries[-1] += " " + line.strip()
        elif not line.startswith(" "):  # a group title or a blank line ends an entry
            entries.append("")
    return [e for e in entries if e]


@pytest.mark.parametrize("command", HELP, ids=" ".join)
def test_help_states_each_default_once_and_descriptions_end_their_sentences(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    options = _options(text)
    assert len(options) > 1
    for option in options:
        assert "(default: None)" not in option and "(default: False)" not in option, option
        assert option.count("(default") <= 1, option
    if command in (["sweep"], ["report"]):
        description = " ".join(text.split("positional arguments:")[0].split("\n\n", 1)[1]
                               .split())
        assert description.endswith("."), description
