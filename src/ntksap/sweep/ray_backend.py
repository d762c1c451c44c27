"""The Ray backend: the same sweep on a Ray cluster, one Ray task per run, placed by Ray's own
scheduler with ``gpus_per_trial`` GPUs (default 1 where the cluster has GPUs) each.

The driver (the ``ntksap sweep`` process) keeps the store: it claims every pending row, submits
one task per row, heartbeats the rows while their tasks are queued or running, and records
each result as it arrives. Run directories go to ``out_dir``, which must be a filesystem
that every node sees (NFS, a mounted bucket) for a resubmitted run to resume from its
checkpoint; the store itself stays on the driver's machine. A task whose worker or node dies
is submitted again (Ray's own retries are off, so that the store counts every attempt), up to
``max_attempts`` attempts as with local workers. If the driver dies, Ray ends its tasks (their
owner is gone) and the next sweep reclaims the rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import SweepError
from .jobs import ExecOptions, describe_error, disk_full, execute, sweep_disk_full
from .store import Claim, Job, Store, worker_name


def _trial(job: Job, options: ExecOptions) -> dict[str, Any]:
    """What one Ray task runs: the job, on the GPU Ray gave it (if any)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return execute(job, ExecOptions(options.out_dir, options.data_dir, options.download,
                                    device, progress=False))


def run_ray(db: str | Path, sweep: str, options: ExecOptions, *, address: str | None = None,
            gpus_per_trial: float | None = None, cpus_per_trial: float = 1.0,
            progress: bool = True, heartbeat: float = 10.0, stale_after: float = 120.0,
            max_attempts: int = 3, init_kwargs: dict[str, Any] | None = None,
            task: Callable[[Job, ExecOptions], dict[str, Any]] = _trial) -> dict[str, int]:
    """Run every pending row of ``sweep`` as Ray tasks; returns the final counts.

    ``address``: a running cluster ("auto", "ray://host:10001"); None starts a local Ray
    instance (or joins the one RAY_ADDRESS names). A run that raises is failed; a run whose
    worker (or node) dies is submitted again, ``max_attempts`` attempts in all, with the
    accounting of the local backend (:meth:`Store.worker_died`). ``task`` is what each Ray
    task runs (default: the job itself).
    """
    try:
        import ray
    except ImportError as err:
        raise SweepError("the Ray backend needs Ray: pip install 'ntksap[ray]' (or "
                         "'ray[default]'), or use --backend local") from err
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **(init_kwargs or {}))
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    remote = ray.remote(num_gpus=gpus_per_trial, num_cpus=cpus_per_trial, max_retries=0)(task)
    out_dir = str(Path(options.out_dir).resolve())
    options = ExecOptions(out_dir, options.data_dir, options.download, "auto")
    store = Store(db)
    me = f"ray-driver:{worker_name()}"
    store.reclaim(sweep, stale_after=stale_after, max_attempts=max_attempts)
    counts = store.counts(sweep)
    bar = tqdm(total=sum(counts.values()), initial=counts["done"] + counts["failed"],
               desc=f"sweep {sweep} (ray)", unit="run", disable=not progress,
               dynamic_ncols=True)
    flying: dict[Any, Claim] = {}

    def submit_pending() -> None:
        while (claim := store.claim(sweep, me)) is not None:
            flying[remote.remote(claim.job, options)] = claim

    try:
        submit_pending()
        beat = time.time()
        while flying or store.counts(sweep)["running"]:
            if not flying:  # rows that another live process runs: wait for them
                time.sleep(1.0)
                store.reclaim(sweep, stale_after=stale_after, max_attempts=max_attempts)
                submit_pending()
                continue
            ready, _ = ray.wait(list(flying), num_returns=1, timeout=1.0)
            for ref in ready:
                status = record_result(store, flying.pop(ref), lambda r=ref: ray.get(r),
                                       max_attempts)
                if status in ("done", "failed"):
                    bar.update(1)
            submit_pending()  # rows given back after a worker died
            if time.time() - beat >= heartbeat:
                beat = time.time()
                for claim in flying.values():
                    store.heartbeat(claim)
        return store.counts(sweep)
    except BaseException:
        for ref, claim in flying.items():
            ray.cancel(ref, force=True)
            store.release(claim, "the Ray driver stopped")
        raise
    finally:
        bar.close()
        store.close()
        if started_here:
            ray.shutdown()


def record_result(store: Store, claim: Claim, result: Callable[[], dict[str, Any]],
                  max_attempts: int) -> str | None:
    """Record the outcome of ``claim``'s Ray task (``result()`` returns its summary or raises
    what ``ray.get`` raises): done, failed (the run raised), or, when its worker or node
    died, back to pending until it has had ``max_attempts`` attempts. Returns the row's new
    status (None if the claim was lost). A full disk gives the row back and raises
    :class:`~ntksap.errors.DiskFullError`."""
    from ray.exceptions import RayError, RayTaskError

    try:
        summary = result()
    except RayTaskError as err:  # the run's own error, raised again by ray.get
        cause = err.cause or err
        if disk_full(cause):  # not the run's fault: give it back, stop the sweep
            store.release(claim, "the disk is full")
            raise sweep_disk_full(cause) from err
        store.fail(claim, describe_error(cause))
        return "failed"
    except RayError as err:  # the process running the task died (crash, OOM kill, node lost)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return store.worker_died(claim, f"the Ray worker running it died ({type(err).__name__}"
                                 f"{': ' + first if first else ''})", max_attempts)
    return "done" if store.finish(claim, summary) else None
