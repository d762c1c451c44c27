"""The results store: atomic claims under concurrent writers, killed workers, the state machine."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time

import pytest

from ntksap.errors import ConfigError
from ntksap.sweep.store import Job, Store

FORK = multiprocessing.get_context("fork")


def _jobs(n: int, prefix: str = "p/run") -> list[Job]:
    return [Job(f"{prefix}{i}", "run", {"preset": "p", "method": "snip", "sparsity": 0.5,
                                        "seed": i}, {"i": i}) for i in range(n)]


def _drain(db: str, sweep: str, worker: str, results: multiprocessing.Queue) -> None:
    """A worker process: claim and finish rows until none is left."""
    store = Store(db)
    ran = []
    while (claim := store.claim(sweep, worker)) is not None:
        store.heartbeat(claim)
        assert store.finish(claim, {"final_test_acc": 0.5, "best_test_acc": 0.6,
                                    "by": worker})
        ran.append(claim.job.key)
    results.put(ran)


def _claim_and_hang(db: str, ready: multiprocessing.Event) -> None:
    store = Store(db)
    store.claim("s")
    ready.set()
    time.sleep(600)


def _lock_and_hang(db: str, ready: multiprocessing.Event) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE runs SET status = 'failed', error = 'torn' WHERE key = 'p/run0'")
    ready.set()
    time.sleep(600)


def _kill(proc: multiprocessing.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()


def test_concurrent_writers_claim_every_row_exactly_once(tmp_path):
    db = str(tmp_path / "store.db")
    with Store(db) as store:
        assert store.add("s", _jobs(120)) == 120
        assert store.add("s", _jobs(120)) == 0  # idempotent: nothing duplicated
    results = FORK.Queue()
    procs = [FORK.Process(target=_drain, args=(db, "s", f"w{i}", results)) for i in range(4)]
    for p in procs:
        p.start()
    ran = [key for _ in procs for key in results.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(ran) == sorted(j.key for j in _jobs(120))  # no run lost, none twice
    with Store(db) as store:
        assert store.counts("s") == {"pending": 0, "running": 0, "done": 120, "failed": 0}
        rows = store.rows("s")
        assert all(r["attempts"] == 1 and r["best_test_acc"] == 0.6 for r in rows)
        claims = [e["key"] for e in store.events() if e["event"] == "claimed"]
        assert len(claims) == len(set(claims)) == 120
        assert [r["labels"]["i"] for r in rows] == list(range(120))  # sweep order kept


def test_a_killed_worker_is_reclaimed_and_its_late_result_refused(tmp_path):
    db = str(tmp_path / "store.db")
    with Store(db) as store:
        store.add("s", _jobs(3))
        ready = FORK.Event()
        proc = FORK.Process(target=_claim_and_hang, args=(db, ready))
        proc.start()
        assert ready.wait(30)
        assert store.counts("s")["running"] == 1
        assert store.reclaim("s") == []  # alive: not taken over
        _kill(proc)
        assert store.reclaim("s") == ["p/run0"]
        assert store.counts("s") == {"pending": 3, "running": 0, "done": 0, "failed": 0}
        first = store.claim("s", "w1")
        assert first.job.key == "p/run0" and first.attempt == 2
        # a worker presumed dead (stale heartbeat) loses its claim to the next one
        store._db.execute("UPDATE runs SET heartbeat = 0, host = 'elsewhere' WHERE key = ?",
                          (first.job.key,))
        assert store.reclaim("s", stale_after=60) == ["p/run0"]
        second = store.claim("s", "w2")
        assert second.job.key == "p/run0"
        assert not store.finish(first, {"best_test_acc": 0.1})
        assert not store.heartbeat(first)
        assert store.finish(second, {"best_test_acc": 0.9})
        done = store.rows("s", "done")
        assert [(r["key"], r["best_test_acc"], r["worker"]) for r in done] == [
            ("p/run0", 0.9, "w2")]


def test_a_worker_killed_inside_a_write_transaction_leaves_the_store_intact(tmp_path):
    db = str(tmp_path / "store.db")
    with Store(db, timeout=20) as store:
        store.add("s", _jobs(2))
        ready = FORK.Event()
        proc = FORK.Process(target=_lock_and_hang, args=(db, ready))
        proc.start()
        assert ready.wait(30)
        _kill(proc)  # dies holding the write lock, its update uncommitted
        claim = store.claim("s", "w")  # the lock died with it
        assert claim is not None and claim.job.key == "p/run0"
        assert store.rows("s", "failed") == []
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_state_machine_failures_retries_and_gave_up_runs(tmp_path):
    with Store(tmp_path / "store.db") as store:
        store.add("s", _jobs(2))
        store.add("other", _jobs(1, "q/run"))
        claim = store.claim("s", "w")
        assert store.fail(claim, "ValueError: boom")
        assert store.rows("s", "failed")[0]["error"] == "ValueError: boom"
        assert store.claim("s", "w").job.key == "p/run1"  # failed rows are not retried...
        assert store.claim("s", "w") is None  # ...and other sweeps' rows are not taken
        assert store.retry_failed("s") == 1  # ...until asked
        again = store.claim("s", "w")
        assert again.job.key == "p/run0" and again.attempt == 1
        assert store.release(again)
        assert store.counts("s")["pending"] == 1
        # a run whose worker keeps dying is given up after max_attempts
        for _ in range(2):
            claim = store.claim("s", "w", pid=2 ** 22 + 7)  # a pid that does not exist
            store.reclaim("s", max_attempts=2)
        row = store.rows("s")[0]
        assert row["status"] == "failed" and "gave up after 2 attempts" in row["error"]
        assert store.sweeps() == ["other", "s"]


def test_store_rejects_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="is not an SQLite database .*ntksap sweep --db"):
        Store(path)
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_opening_a_store_without_create_writes_nothing(tmp_path):
    missing = tmp_path / "sub" / "none.db"
    with pytest.raises(ConfigError, match="no results store at"):
        Store(missing, create=False)
    assert not (tmp_path / "sub").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ConfigError, match="an SQLite database but not a results store"):
        Store(other, create=False)
    with Store(tmp_path / "s.db") as store:
        store.add("s", _jobs(1))
    before = sorted(p.name for p in tmp_path.iterdir())
    with Store(tmp_path / "s.db", create=False) as store:
        assert store.counts("s")["pending"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_store_uses_wal_and_full_sync(tmp_path):
    with Store(tmp_path / "s.db") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
