"""A sweep worker: claim a pending run (or a pack of runs, ``--pack-size``) from the store, run
it, record each run; repeat until none is left. ``python -m ntksap.sweep --db DB --sweep NAME
...`` is what the local backend starts, one process per GPU (or N CPU processes).

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
from collections.abc import Sequence
from pathlib import Path

from ..errors import DiskFullError
from ..train.config import LoggingConfig
from .jobs import ExecOptions, describe_error, disk_full, execute, sweep_disk_full
from .packing import PackKeys, record_pack, resolve_pack_size, train_pack
from .store import Claim, Store, worker_name

ORPHANED = 3  # exit code of a worker whose sweep process died
DISK_FULL = 4  # exit code of a worker stopped by a full disk (its run given back)


class Heartbeat(threading.Thread):
    """Refresh the heartbeat of ``claim`` (one claim, or the claims of a pack); with
    ``parent``, release the claims and end the process once the parent process is gone."""

    def __init__(self, db: str | Path, claim: Claim | Sequence[Claim], interval: float,
                 parent: int | None = None) -> None:
        super().__init__(daemon=True, name="ntksap-heartbeat")
        self.db, self.interval, self.parent = db, interval, parent
        self.claims = [claim] if isinstance(claim, Claim) else list(claim)
        self._stop_event = threading.Event()

    def run(self) -> None:
        store = Store(self.db)
        waited = 0.0
        tick = min(1.0, self.interval)
        while not self._stop_event.wait(tick):
            waited += tick
            if self.parent and os.getppid() != self.parent:
                for claim in self.claims:
                    store.release(claim, "the sweep process died")
                os._exit(ORPHANED)
            if waited >= self.interval:
                waited = 0.0
                for claim in self.claims:
                    store.heartbeat(claim)
        store.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def work(db: str | Path, sweep: str | None, options: ExecOptions, *, heartbeat: float = 10.0,
         parent: int | None = None, worker: str | None = None,
         pack_size: int | str = 1) -> int:
    """Run pending rows of ``sweep`` until none is left; returns how many this worker ran.
    ``pack_size`` (a number or "auto", :mod:`.packing`): take up to that many rows of one pack
    key at a time and train them as one pack; 1 runs one row at a time. A full disk is not
    the run's fault: its rows are given back and :class:`DiskFullError` raised."""
    store = Store(db)
    worker = worker or worker_name()
    size = resolve_pack_size(pack_size, options.device)
    keys = PackKeys() if size != 1 else None
    ran = 0
    try:
        while not (parent and os.getppid() != parent):
            if keys is None:
                claim = store.claim(sweep, worker)
                claims = [claim] if claim is not None else []
            else:
                claims = store.claim_pack(sweep, worker, size, keys)
            if not claims:
                break
            if keys is not None and keys(claims[0].job) is not None:
                _run_pack(store, db, claims, options, heartbeat, parent)
            else:
                _run_one(store, db, claims[0], options, heartbeat, parent)
            ran += len(claims)
    finally:
        store.close()
    return ran


def _run_one(store: Store, db: str | Path, claim: Claim, options: ExecOptions,
             heartbeat: float, parent: int | None) -> None:
    """Run one claimed row to its end and record it."""
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


def _run_pack(store: Store, db: str | Path, claims: list[Claim], options: ExecOptions,
              heartbeat: float, parent: int | None) -> None:
    """Train the claimed rows as one pack and record each row on its own. If the pack as a
    whole fails (not one member), every row fails with its error, or is given back when the
    worker is stopped or the disk is full."""
    beat = Heartbeat(db, claims, heartbeat, parent)
    beat.start()
    print(f"pack of {len(claims)} runs: {', '.join(c.job.key for c in claims)}",
          file=sys.stderr, flush=True)
    try:
        results = train_pack([claim.job for claim in claims], options)
    except (KeyboardInterrupt, SystemExit):
        beat.stop()
        for claim in claims:
            store.release(claim, "the worker was stopped")
        raise
    except Exception as err:  # the pack's failure is each of its runs' failure, not fatal
        beat.stop()
        if disk_full(err):
            for claim in claims:
                _give_back(store, claim)
            raise sweep_disk_full(err) from err
        error = describe_error(err)
        for claim in claims:
            store.fail(claim, error)
        print(f"pack of {len(claims)} runs failed: {err}", file=sys.stderr, flush=True)
    else:
        beat.stop()
        for claim, result in zip(claims, results, strict=True):
            outcome = (f"failed: {result.error}" if result.failed else "done: best test "
                       f"accuracy {(result.summary or {}).get('best_test_acc')}")
            print(f"run {claim.job.key} {outcome}", file=sys.stderr, flush=True)
        record_pack(store, claims, results)


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
    p.add_argument("--pack-size", default="1", help="runs per pack (a number, or auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile each pack's model")
    p.add_argument("--separate-unfusable", action="store_true",
                   help="train the runs of a model a pack cannot fuse one by one")
    p.add_argument("--tensorboard", action="store_true", help="log each run to TensorBoard")
    p.add_argument("--wandb", action="store_true", help="log each run to W&B")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    options = ExecOptions(args.out_dir, args.data_dir, args.download, args.device,
                          compile=args.compile, separate_unfusable=args.separate_unfusable,
                          logging=LoggingConfig(args.tensorboard, args.wandb))
    try:
        work(args.db, args.sweep, options, heartbeat=args.heartbeat, parent=args.parent,
             pack_size=args.pack_size)
    except DiskFullError as err:
        print(f"worker stopped: {err}", file=sys.stderr, flush=True)
        return DISK_FULL
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
