"""The local backend: worker processes on this machine (one per GPU, or N CPU processes)
that take runs from the store, with a progress bar over the whole sweep.

The coordinator only starts workers, watches the store and reclaims the rows of dead
workers; each run happens inside a worker (``python -m ntksap.sweep``), so a crash of
any run, worker or of the coordinator itself loses nothing: the store says what is done, and
run directories hold the checkpoints to resume from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import DiskFullError, SweepError
from ..runs.checks import auto_device
from .jobs import ExecOptions
from .store import Store
from .worker import DISK_FULL, work


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: its device and the environment it adds."""

    device: str
    env: dict[str, str]
    threads: int = 0


def plan_slots(device: str = "auto", workers: int | None = None) -> list[Slot]:
    """One slot per GPU for ``cuda`` (each worker sees one GPU through CUDA_VISIBLE_DEVICES;
    ``workers`` > GPUs shares them round-robin), else ``workers`` CPU processes (default 1)
    that split the CPU cores between them."""
    if workers is not None and workers < 1:
        raise SweepError(f"{workers} workers: give --workers 1 or more")
    device = auto_device(device)
    if device == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = ([g for g in visible.split(",") if g.strip()] if visible
                else [str(i) for i in range(torch.cuda.device_count())])
        if not gpus:
            raise SweepError("--device cuda but no GPU is visible; use --device cpu")
        n = workers or len(gpus)
        return [Slot("cuda", {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}) for i in range(n)]
    n = workers or 1
    threads = max(1, (os.cpu_count() or 1) // n)
    return [Slot(device, {"OMP_NUM_THREADS": str(threads)}, threads) for _ in range(n)]


def run_local(db: str | Path, sweep: str, options: ExecOptions, *, device: str = "auto",
              workers: int | None = None, progress: bool = True, poll: float = 0.5,
              heartbeat: float = 10.0, stale_after: float = 120.0, max_attempts: int = 3,
              log_dir: str | Path | None = None, pack_size: int | str = 1) -> dict[str, int]:
    """Run every pending row of ``sweep`` with local workers; returns the final counts.
    ``pack_size``: runs each worker trains together as one pack (a number or "auto", which
    each worker resolves on its own device; :mod:`.packing`).

    ``workers=0`` runs the rows in this process instead (no isolation: for debugging).
    Rows that other live processes are running are waited for, not taken over.
    """
    store = Store(db)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sweep)
    log_dir = Path(log_dir or Path(db).parent / "logs" / safe)
    log_dir.mkdir(parents=True, exist_ok=True)
    store.reclaim(sweep, stale_after=stale_after, max_attempts=max_attempts)
    if workers == 0:
        work(db, sweep, options, heartbeat=heartbeat, pack_size=pack_size)
        counts = store.counts(sweep)
        store.close()
        return counts
    slots = plan_slots(device, workers)
    procs: dict[int, subprocess.Popen] = {}
    counts = store.counts(sweep)
    bar = tqdm(total=sum(counts.values()), initial=counts["done"] + counts["failed"],
               desc=f"sweep {sweep}", unit="run", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    deaths, finished, shown = 0, counts["done"] + counts["failed"], None
    try:
        while True:
            store.reclaim(sweep, stale_after=stale_after, max_attempts=max_attempts)
            counts = store.counts(sweep)
            ended = counts["done"] + counts["failed"]
            if ended > finished:
                finished, deaths = ended, 0
            if counts != shown:  # redraw on change only (a log file gets one line each)
                shown = counts
                bar.n = ended
                bar.set_postfix(running=counts["running"], pending=counts["pending"],
                                failed=counts["failed"], refresh=False)
                bar.refresh()
            for index, proc in list(procs.items()):
                if proc.poll() is not None:
                    del procs[index]
                    deaths += proc.returncode != 0
                    if proc.returncode == DISK_FULL:
                        raise DiskFullError(
                            f"the disk is full (a worker stopped: see "
                            f"{log_dir / f'worker-{index}.log'}); free some space and run the "
                            "same command again: the sweep resumes where it stopped (finished "
                            "runs are kept, interrupted ones resume from their checkpoints)")
            if counts["pending"] == 0 and counts["running"] == 0:
                break
            if deaths > 3 * len(slots):
                raise SweepError(f"the sweep's workers keep dying without finishing a run; "
                                 f"see their logs in {log_dir}")
            free = [i for i in range(len(slots)) if i not in procs]
            for index in free[:counts["pending"]]:
                procs[index] = _start(index, slots[index], db, sweep, options, heartbeat,
                                      log_dir, pack_size)
            time.sleep(poll)
        for proc in procs.values():
            proc.wait()
    except BaseException:
        _stop(procs)
        raise
    finally:
        bar.close()
        store.close()
    return counts


def _start(index: int, slot: Slot, db: str | Path, sweep: str, options: ExecOptions,
           heartbeat: float, log_dir: Path, pack_size: int | str = 1) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ntksap.sweep", "--db", str(db), "--sweep", sweep,
            "--out-dir", str(options.out_dir), "--device", slot.device,
            "--heartbeat", str(heartbeat), "--parent", str(os.getpid()),
            "--threads", str(slot.threads), "--pack-size", str(pack_size)]
    if options.data_dir:
        argv += ["--data-dir", str(options.data_dir)]
    if options.download:
        argv.append("--download")
    argv += [flag for flag, on in (("--compile", options.compile),
                                   ("--separate-unfusable", options.separate_unfusable),
                                   ("--tensorboard", options.logging.tensorboard),
                                   ("--wandb", options.logging.wandb)) if on]
    log = open(log_dir / f"worker-{index}.log", "ab")  # the child keeps its own copy
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **slot.env})
    finally:
        log.close()


def _stop(procs: dict[int, subprocess.Popen], grace: float = 30.0) -> None:
    """SIGTERM every worker (each gives its run back), then wait; SIGKILL stragglers."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
