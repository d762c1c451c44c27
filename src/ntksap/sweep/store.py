"""The results store: one embedded SQLite database (WAL mode), one row per run.

A row's ``status`` follows a small state machine::

    pending --claim--> running --finish--> done
                          |  \\--fail----> failed --retry--> pending
                          \\--release / worker died--> pending (or failed after max attempts)

Every transition is one ``BEGIN IMMEDIATE`` transaction, so two workers never claim the same
row, and a process killed at any moment leaves the database as it was before or after the
transaction (SQLite's journal), never in between. A claim carries a random token: only the
holder of the current claim may finish, fail or release the row, so a worker that was
presumed dead cannot overwrite the row of its successor. A running row records its worker's
host, pid and heartbeat; :meth:`Store.reclaim` returns the rows of dead workers (pid gone on
this host, or heartbeat older than ``stale_after`` anywhere) to ``pending``.
An append-only ``events`` table records every transition (claims, finishes, reclaims).
:meth:`Store.claim_pack` takes several rows in one transaction (a pack, trained together);
each row is still finished, failed or released on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runs.config import run_settings

STATUSES = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    preset TEXT, method TEXT, sparsity REAL, seed INTEGER,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    claim TEXT, worker TEXT, host TEXT, pid INTEGER, heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, run_dir TEXT, summary TEXT,
    final_test_acc REAL, best_test_acc REAL,
    created REAL NOT NULL, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS members (
    sweep TEXT NOT NULL, key TEXT NOT NULL REFERENCES runs(key), position INTEGER NOT NULL,
    PRIMARY KEY (sweep, key)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, key TEXT NOT NULL,
    event TEXT NOT NULL, worker TEXT, detail TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


@dataclasses.dataclass(frozen=True)
class Job:
    """One run to do: ``key`` names it (its run directory relative to the output folder),
    ``kind`` is its runner's job kind ("run" or "imp", :mod:`ntksap.runners`), ``config`` is
    its full config as JSON data and ``labels`` the sweep's names for it (group, c, ...)."""

    key: str
    kind: str
    config: dict[str, Any]
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def preset(self) -> str:
        return self._run().get("preset", "")

    @property
    def method(self) -> str:
        return self._run().get("method", "")

    @property
    def sparsity(self) -> float:
        return float(self._run().get("sparsity", 0.0))

    @property
    def seed(self) -> int:
        return int(self._run().get("seed", 0))

    def _run(self) -> dict[str, Any]:
        return run_settings(self.config)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A running row held by one worker: the job and the token that proves the claim."""

    job: Job
    token: str
    worker: str
    attempt: int


def worker_name(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


class StoreError(ConfigError):
    """A results store that cannot be opened: ``problem`` names the file and what is wrong,
    the message adds the fix."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{problem}; give the .db file a sweep wrote (ntksap sweep --db)")


def _writable(path: Path) -> bool:
    """Whether the store file and its folder (WAL mode keeps two files beside it) may be
    written; a store on a read-only mount (an archive of results) is opened read-only and
    immutable, so that it can still be read and reported."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


class Store:
    """The SQLite results store at ``path`` (created on first use; with ``create=False`` it
    must exist, and opening it writes nothing). One instance per process and thread; any
    number of processes may use the same file at once."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0,
                 create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"no results store at {str(self.path)!r}"
                             + (" (it is a folder)" if self.path.is_dir() else ""))
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = self.path if create else self.path.resolve().as_uri() + (
            "?mode=rw" if _writable(self.path) else "?mode=ro&immutable=1")
        try:
            self._db = sqlite3.connect(target, timeout=timeout, isolation_level=None,
                                       uri=not create)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA synchronous = FULL")
            if create:
                self._create()
            version = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                raise StoreError(f"{str(self.path)!r} is an SQLite database but not a results "
                                 "store") from err
            raise ConfigError(f"the results store {str(self.path)!r} cannot be opened or "
                              f"written ({err}); give a store (--db) and an output folder "
                              "(--out-dir) you may write, or read a read-only one with "
                              "ntksap report") from err
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{str(self.path)!r} is not an SQLite database ({err})") from err
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise StoreError(f"results store {str(self.path)!r} has schema "
                             f"{version[0] if version else 'none'}, this ntksap reads "
                             f"{SCHEMA_VERSION}")

    def _create(self) -> None:
        """WAL mode and the tables (if new)."""
        self._db.execute("PRAGMA journal_mode = WAL")
        with self._write():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                             (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its start."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _event(self, key: str, event: str, worker: str | None = None, detail: str = "") -> None:
        self._db.execute("INSERT INTO events (time, key, event, worker, detail) "
                         "VALUES (?, ?, ?, ?, ?)", (time.time(), key, event, worker, detail))

    # Filling -------------------------------------------------------------------------------
    def add(self, sweep: str, jobs: Iterable[Job], source: str | None = None) -> int:
        """Record ``jobs`` as members of ``sweep``, as pending rows unless the store already
        has them (in any state). All or nothing; returns how many rows are new. ``source``
        (the spec file's path) is recorded with the sweep's name the first time; another
        spec under the same name in the same store is a :class:`ConfigError` (its runs would
        mix with the first spec's under one name)."""
        now, new = time.time(), 0
        with self._write() as db:
            if source is not None:
                self._claim_name(db, sweep, source)
            for position, job in enumerate(jobs):
                cur = db.execute(
                    "INSERT OR IGNORE INTO runs (key, kind, config, labels, preset, method, "
                    "sparsity, seed, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job.key, job.kind, json.dumps(job.config, sort_keys=True),
                     json.dumps(job.labels, sort_keys=True), job.preset, job.method,
                     job.sparsity, job.seed, now))
                if cur.rowcount:
                    new += 1
                    self._event(job.key, "added", detail=sweep)
                db.execute("INSERT OR IGNORE INTO members (sweep, key, position) "
                           "VALUES (?, ?, ?)", (sweep, job.key, position))
        return new

    def _claim_name(self, db: sqlite3.Connection, sweep: str, source: str) -> None:
        """Record that ``sweep`` comes from the spec ``source``, or refuse another spec. A
        recorded spec file that is gone (the results folder and its spec were moved or
        copied) is replaced by ``source``."""
        key = f"source:{sweep}"
        row = db.execute("SELECT value FROM meta WHERE name=?", (key,)).fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES (?, ?)", (key, source))
        elif row[0] != source and not Path(row[0]).exists():
            db.execute("UPDATE meta SET value = ? WHERE name = ?", (source, key))
        elif row[0] != source:
            raise ConfigError(
                f"the store {self.path} already holds a sweep named {sweep!r} from another "
                f"spec ({row[0]}); its runs and this spec's would mix under one name: give "
                "this sweep another name (--name or the spec's name key) or another store "
                "(--db)")

    # Transitions ---------------------------------------------------------------------------
    def claim(self, sweep: str | None = None, worker: str | None = None,
              pid: int | None = None) -> Claim | None:
        """Atomically take the first pending row (of ``sweep``) and mark it running."""
        claims = self.claim_pack(sweep, worker, 1, lambda job: None, pid)
        return claims[0] if claims else None

    def claim_pack(self, sweep: str | None, worker: str | None,
                   size: int | Callable[[Job], int], key_of: Callable[[Job], str | None],
                   pid: int | None = None) -> list[Claim]:
        """Atomically take the next pack of pending rows (of ``sweep``) and mark them running:
        the rows :func:`choose_pack` picks (``size``: at most that many rows of one pack key,
        ``key_of``; a row whose key is None alone). Empty when no row is pending."""
        worker = worker or worker_name(pid)
        member = ("AND key IN (SELECT key FROM members WHERE sweep = ?)" if sweep else "")
        order = ("(SELECT position FROM members m WHERE m.key = runs.key AND m.sweep = ?)"
                 if sweep else "rowid")
        args = (sweep, sweep) if sweep else ()
        with self._write() as db:
            limit = "" if size != 1 else "LIMIT 1"  # one run: the first row, as always
            rows = db.execute(f"SELECT * FROM runs WHERE status = 'pending' {member} "
                              f"ORDER BY {order} {limit}", args).fetchall()
            attempts = {row["key"]: row["attempts"] for row in rows}
            chosen = choose_pack([_job(row) for row in rows], size, key_of)
            now = time.time()
            claims = []
            for job in chosen:
                token = uuid.uuid4().hex
                db.execute("UPDATE runs SET status = 'running', claim = ?, worker = ?, "
                           "host = ?, pid = ?, heartbeat = ?, started = ?, "
                           "attempts = attempts + 1, error = NULL "
                           "WHERE key = ? AND status = 'pending'",
                           (token, worker, socket.gethostname(), pid or os.getpid(), now,
                            now, job.key))
                self._event(job.key, "claimed", worker,
                            f"pack of {len(chosen)}" if len(chosen) > 1 else "")
                claims.append(Claim(job, token, worker, attempts[job.key] + 1))
        return claims

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's heartbeat; False if the claim was lost (row reclaimed)."""
        with self._write() as db:
            cur = db.execute("UPDATE runs SET heartbeat = ? WHERE key = ? AND claim = ? "
                             "AND status = 'running'", (time.time(), claim.job.key, claim.token))
        return cur.rowcount == 1

    def finish(self, claim: Claim, summary: dict[str, Any]) -> bool:
        """Mark the claimed row done with its summary (metrics); False if the claim was lost."""
        return self._close(claim, "done", summary=summary)

    def fail(self, claim: Claim, error: str) -> bool:
        """Mark the claimed row failed with ``error``; False if the claim was lost."""
        return self._close(claim, "failed", error=error)

    def release(self, claim: Claim, reason: str = "released") -> bool:
        """Give the claimed row back (pending, its attempt not counted): a worker that stops
        before the run ends. False if the claim was lost."""
        with self._write() as db:
            cur = db.execute("UPDATE runs SET status = 'pending', claim = NULL, "
                             "attempts = MAX(attempts - 1, 0) WHERE key = ? AND claim = ? AND "
                             "status = 'running'", (claim.job.key, claim.token))
            if cur.rowcount:
                self._event(claim.job.key, "released", claim.worker, reason)
        return cur.rowcount == 1

    def _close(self, claim: Claim, status: str, *, summary: dict[str, Any] | None = None,
               error: str | None = None) -> bool:
        summary = summary or {}
        with self._write() as db:
            cur = db.execute(
                "UPDATE runs SET status = ?, claim = NULL, finished = ?, summary = ?, "
                "error = ?, run_dir = COALESCE(?, run_dir), final_test_acc = ?, "
                "best_test_acc = ? WHERE key = ? AND claim = ? AND status = 'running'",
                (status, time.time(), json.dumps(summary, default=str) if summary else None,
                 error, summary.get("run_dir"), summary.get("final_test_acc"),
                 summary.get("best_test_acc"), claim.job.key, claim.token))
            if cur.rowcount:
                self._event(claim.job.key, status, claim.worker, (error or "")[:2000])
        return cur.rowcount == 1

    def reclaim(self, sweep: str | None = None, *, stale_after: float = 120.0,
                max_attempts: int = 3) -> list[str]:
        """Return running rows whose worker died to ``pending`` (or ``failed`` once they have
        been tried ``max_attempts`` times). A worker is dead when its pid is gone (or a
        zombie) on this host, or its heartbeat is older than ``stale_after`` seconds."""
        host, now, reclaimed = socket.gethostname(), time.time(), []
        with self._write() as db:
            member = "AND key IN (SELECT key FROM members WHERE sweep = ?)" if sweep else ""
            rows = db.execute(f"SELECT * FROM runs WHERE status = 'running' {member}",
                              (sweep,) if sweep else ()).fetchall()
            for row in rows:
                dead = ((row["host"] == host and row["pid"] and not _alive(row["pid"]))
                        or now - (row["heartbeat"] or 0) > stale_after)
                if dead:
                    self._died(row, f"worker {row['worker']} died", max_attempts)
                    reclaimed.append(row["key"])
        return reclaimed

    def worker_died(self, claim: Claim, why: str, max_attempts: int = 3) -> str | None:
        """Record that the claimed row's worker died (``why``): the attempt counts, and the
        row goes back to ``pending``, or to ``failed`` once it has been tried
        ``max_attempts`` times (as :meth:`reclaim` does). Returns the row's new status, None
        if the claim was lost."""
        with self._write() as db:
            row = db.execute("SELECT * FROM runs WHERE key = ? AND claim = ? AND "
                             "status = 'running'", (claim.job.key, claim.token)).fetchone()
            return None if row is None else self._died(row, why, max_attempts)

    def _died(self, row: sqlite3.Row, why: str, max_attempts: int) -> str:
        """Inside a write transaction: the running ``row`` lost its worker."""
        why = f"{why} (attempt {row['attempts']})"
        if row["attempts"] >= max_attempts:
            self._db.execute("UPDATE runs SET status = 'failed', claim = NULL, error = ?, "
                             "finished = ? WHERE key = ?",
                             (f"{why}; gave up after {row['attempts']} attempts (raise "
                              "--max-attempts, or look for the cause in the worker logs)",
                              time.time(), row["key"]))
            self._event(row["key"], "failed", row["worker"], why)
            return "failed"
        self._db.execute("UPDATE runs SET status = 'pending', claim = NULL WHERE key = ?",
                         (row["key"],))
        self._event(row["key"], "reclaimed", row["worker"], why)
        return "pending"

    def retry_failed(self, sweep: str | None = None) -> int:
        """Put the failed rows (of ``sweep``) back to pending, with their attempts reset."""
        member = "AND key IN (SELECT key FROM members WHERE sweep = ?)" if sweep else ""
        with self._write() as db:
            keys = [r[0] for r in db.execute(f"SELECT key FROM runs WHERE status = 'failed' "
                                             f"{member}", (sweep,) if sweep else ())]
            for key in keys:
                db.execute("UPDATE runs SET status = 'pending', attempts = 0 WHERE key = ?",
                           (key,))
                self._event(key, "retry")
        return len(keys)

    def requeue_missing(self, sweep: str | None = None,
                        out_dir: str | Path | None = None) -> list[str]:
        """Put the done rows (of ``sweep``) whose run directory is gone back to pending (the
        run is done again; a rerun of the sweep would otherwise report a run it no longer
        has); returns their keys. A run found at its key below ``out_dir`` (the results
        folder was moved or copied) is not gone: its row is pointed there."""
        member = "AND key IN (SELECT key FROM members WHERE sweep = ?)" if sweep else ""
        with self._write() as db:
            rows = db.execute(f"SELECT key, run_dir FROM runs WHERE status = 'done' {member}",
                              (sweep,) if sweep else ()).fetchall()
            gone = [(key, run_dir) for key, run_dir in rows
                    if run_dir and not Path(run_dir).is_dir()]
            keys = []
            for key, run_dir in gone:
                moved = Path(out_dir).resolve() / key if out_dir is not None else None
                if moved is not None and moved.is_dir():
                    db.execute("UPDATE runs SET run_dir = ? WHERE key = ?", (str(moved), key))
                    self._event(key, "moved", detail=f"found at {moved}, not {run_dir}")
                else:
                    keys.append(key)
            for key in keys:
                db.execute("UPDATE runs SET status = 'pending', attempts = 0 WHERE key = ?",
                           (key,))
                self._event(key, "requeued", detail="its run directory is missing")
        return keys

    # Reading -------------------------------------------------------------------------------
    def counts(self, sweep: str | None = None) -> dict[str, int]:
        """Rows per status (every status present, 0 if none)."""
        member = "WHERE key IN (SELECT key FROM members WHERE sweep = ?)" if sweep else ""
        got = dict(self._db.execute(f"SELECT status, COUNT(*) FROM runs {member} GROUP BY "
                                    "status", (sweep,) if sweep else ()).fetchall())
        return {s: got.get(s, 0) for s in STATUSES}

    def rows(self, sweep: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """The rows as dicts (``config``, ``labels``, ``summary`` decoded), in sweep order."""
        where, args = [], []
        if sweep:
            where.append("m.sweep = ?")
            args.append(sweep)
        if status:
            where.append("r.status = ?")
            args.append(status)
        query = ("SELECT r.*, MIN(m.position) AS position FROM runs r LEFT JOIN members m "
                 "ON m.key = r.key" + (" WHERE " + " AND ".join(where) if where else "")
                 + " GROUP BY r.key ORDER BY r.rowid")
        out = []
        for row in self._db.execute(query, args):
            record = dict(row)
            for name in ("config", "labels", "summary"):
                record[name] = json.loads(record[name]) if record[name] else {}
            out.append(record)
        return out

    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM events" + (" WHERE key = ?" if key else "") + " ORDER BY id"
        return [dict(r) for r in self._db.execute(query, (key,) if key else ())]

    def sweeps(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT sweep FROM members ORDER BY 1")]


def choose_pack(pending: Sequence[Job], size: int | Callable[[Job], int],
                key_of: Callable[[Job], str | None]) -> list[Job]:
    """The next pack among ``pending`` (the pending rows in sweep order): the first row and,
    when it has a pack key (``key_of``; None: a row that runs alone), the other rows of that
    key, sorted by run key, at most ``size`` rows (a number, or a function of the first row).
    The same pending rows give the same pack, so a pack given back re-forms as it was."""
    if not pending:
        return []
    first = pending[0]
    group = key_of(first)
    limit = size(first) if callable(size) else size
    if group is None or limit <= 1:
        return [first]
    same = sorted((job for job in pending if key_of(job) == group), key=lambda job: job.key)
    return same[:limit]


def _job(row: sqlite3.Row) -> Job:
    return Job(row["key"], row["kind"], json.loads(row["config"]), json.loads(row["labels"]))
