"""A sweep worker: claim a pending run from the store, run it, record it; repeat until none is
left. ``python -m ntksap.sweep --db DB --sweep NAME ...`` is what the local backend
starts, one process per GPU (or N CPU processes).

While a run goes on, a heartbeat thread refreshes the row every ``--heartbeat`` seconds and
watches the parent: if the sweep process that started this worker dies, the worker gives its
run back (pending; its run directory keeps the checkpoint to resume from) and exits. SIGTERM
does the same.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from ..errors import DiskFullError
from .jobs import ExecOptions, describe_error, disk_full, execute, sweep_disk_full
from .store import Claim, Store, worker_name

ORPHANED = 3  # exit code of a worker whose sweep process died
DISK_FULL = 4  # exit code of a worker stopped by a full disk (its run given back)


class Heartbeat(threading.Thread):
    """Refresh ``claim``'s heartbeat; with ``parent``, release the claim and end the process
    once the parent process is gone."""

    def __init__(self, db: str | Path, claim: Claim, interval: float,
                 parent: int | None = None) -> None:
        super().__init__(daemon=True, name="ntksap-heartbeat")
        self.db, self.claim, self.interval, self.parent = db, claim, interval, parent
        self._stop_event = threading.Event()

    def run(self) -> None:
        store = Store(self.db)
        waited = 0.0
        tick = min(1.0, self.interval)
        while not self._stop_event.wait(tick):
            waited += tick
            if self.parent and os.getppid() != self.parent:
                store.release(self.claim, "the sweep process died")
                os._exit(ORPHANED)
            if waited >= self.interval:
                waited = 0.0
                store.heartbeat(self.claim)
        store.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def work(db: str | Path, sweep: str | None, options: ExecOptions, *, heartbeat: float = 10.0,
         parent: int | None = None, worker: str | None = None) -> int:
    """Run pending rows of ``sweep`` until none is left; returns how many this worker ran.
    A full disk is not the run's fault: its row is given back and :class:`DiskFullError`
    raised."""
    store = Store(db)
    worker = worker or worker_name()
    ran = 0
    try:
        while not (parent and os.getppid() != parent) and (
                claim := store.claim(sweep, worker)) is not None:
            beat = Heartbeat(db, claim, heartbeat, parent)
            beat.start()
            try:
                summary = execute(claim.job, options)
            except (KeyboardInterrupt, SystemExit):
                beat.stop()
                store.release(claim, "the worker was stopped")
                raise
            except Exception as err:  # any failure of the run is recorded, not fatal
                beat.stop()
                if disk_full(err):
                    _give_back(store, claim)
                    raise sweep_disk_full(err) from err
                store.fail(claim, describe_error(err))
                print(f"run {claim.job.key} failed: {err}", file=sys.stderr, flush=True)
            else:
                beat.stop()
                store.finish(claim, summary)
                print(f"run {claim.job.key} done: best test accuracy "
                      f"{summary.get('best_test_acc')}", file=sys.stderr, flush=True)
            ran += 1
    finally:
        store.close()
    return ran


def _give_back(store: Store, claim: Claim) -> None:
    """Release ``claim`` if the disk lets us (else the next sweep reclaims it)."""
    try:
        store.release(claim, "the disk is full")
    except Exception:  # noqa: BLE001 - the store's disk may be the full one
        pass


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ntksap.sweep", description=__doc__)
    p.add_argument("--db", required=True)
    p.add_argument("--sweep", default=None)
    p.add_argument("--out-dir", default="runs")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--heartbeat", type=float, default=10.0)
    p.add_argument("--parent", type=int, default=None, help="exit when this process dies")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    options = ExecOptions(args.out_dir, args.data_dir, args.download, args.device)
    try:
        work(args.db, args.sweep, options, heartbeat=args.heartbeat, parent=args.parent)
    except DiskFullError as err:
        print(f"worker stopped: {err}", file=sys.stderr, flush=True)
        return DISK_FULL
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
