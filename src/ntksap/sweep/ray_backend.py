"""The Ray backend: the same sweep on a Ray cluster, one Ray task per run (or per pack of runs,
``pack_size``), placed by Ray's own scheduler with ``gpus_per_trial`` GPUs (default 1 where
the cluster has GPUs) each.

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

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import SweepError
from ..pack import MemberResult
from ..runs.checks import auto_device
from .jobs import ExecOptions, describe_error, disk_full, execute, sweep_disk_full
from .packing import PackKeys, PackSize, parse_pack_size, record_pack, resolve_pack_size, train_pack
from .store import Claim, Job, Store, worker_name


def _trial(job: Job, options: ExecOptions) -> dict[str, Any]:
    """What one Ray task runs: the job, on the GPU Ray gave it (if any)."""
    device = auto_device("auto")
    return execute(job, dataclasses.replace(options, device=device, progress=False))


def _pack_trial(jobs: list[Job], options: ExecOptions) -> list[MemberResult]:
    """What one Ray task of a pack runs: the pack, on the GPU Ray gave it (if any)."""
    return train_pack(jobs, dataclasses.replace(options, device="auto", progress=False))


def _free_gpu_bytes() -> int:
    """Free memory of the GPU a Ray task is given (0 without one)."""
    import torch

    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0


def _pack_size(ray: Any, pack_size: int | str, gpus_per_trial: float) -> PackSize:
    """``pack_size`` for Ray tasks: ``auto`` is 1 without GPUs, else what the free memory of
    the GPU a probe task gets holds (its share, ``gpus_per_trial``), as local workers do."""
    if parse_pack_size(pack_size) != "auto" or gpus_per_trial <= 0:
        return resolve_pack_size(pack_size, "cpu")
    probe = ray.remote(num_gpus=gpus_per_trial, num_cpus=0, max_retries=0)(_free_gpu_bytes)
    free = int(ray.get(probe.remote()) * min(1.0, gpus_per_trial))
    return resolve_pack_size(pack_size, "cuda", lambda: free) if free > 0 else 1


def run_ray(db: str | Path, sweep: str, options: ExecOptions, *, address: str | None = None,
            gpus_per_trial: float | None = None, cpus_per_trial: float = 1.0,
            progress: bool = True, heartbeat: float = 10.0, stale_after: float = 120.0,
            max_attempts: int = 3, init_kwargs: dict[str, Any] | None = None,
            task: Callable[[Job, ExecOptions], dict[str, Any]] = _trial,
            pack_size: int | str = 1,
            pack_task: Callable[[list[Job], ExecOptions], list[MemberResult]] = _pack_trial,
            ) -> dict[str, int]:
    """Run every pending row of ``sweep`` as Ray tasks; returns the final counts.

    ``address``: a running cluster ("auto", "ray://host:10001"); None starts a local Ray
    instance (or joins the one RAY_ADDRESS names). A run that raises is failed; a run whose
    worker (or node) dies is submitted again, ``max_attempts`` attempts in all, with the
    accounting of the local backend (:meth:`Store.worker_died`). ``task`` is what each Ray
    task runs (default: the job itself).

    ``pack_size`` (a number or "auto"): submit up to that many runs of one pack key as one
    task (``pack_task``, default :func:`ntksap.pack.run_pack`), each run recorded on its own
    row; 1 submits one task per run.
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
    resources = dict(num_gpus=gpus_per_trial, num_cpus=cpus_per_trial, max_retries=0)
    remote = ray.remote(**resources)(task)
    remote_pack = ray.remote(**resources)(pack_task)
    size = _pack_size(ray, pack_size, gpus_per_trial)
    keys = PackKeys() if size != 1 else None
    out_dir = str(Path(options.out_dir).resolve())
    options = dataclasses.replace(options, out_dir=out_dir, device="auto")
    store = Store(db)
    me = f"ray-driver:{worker_name()}"
    store.reclaim(sweep, stale_after=stale_after, max_attempts=max_attempts)
    counts = store.counts(sweep)
    bar = tqdm(total=sum(counts.values()), initial=counts["done"] + counts["failed"],
               desc=f"sweep {sweep} (ray)", unit="run", disable=not progress,
               dynamic_ncols=True)
    flying: dict[Any, list[Claim]] = {}  # a task's rows (a pack's, or one run's)
    packs: set[Any] = set()  # the tasks that train packs

    def submit_pending() -> None:
        while claims := _claim(store, sweep, me, size, keys):
            if keys is not None and keys(claims[0].job) is not None:
                ref = remote_pack.remote([claim.job for claim in claims], options)
                packs.add(ref)
            else:
                ref = remote.remote(claims[0].job, options)
            flying[ref] = claims

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
                claims = flying.pop(ref)
                if ref in packs:
                    packs.discard(ref)
                    statuses = record_pack_result(store, claims, lambda r=ref: ray.get(r),
                                                  max_attempts)
                else:
                    statuses = [record_result(store, claims[0], lambda r=ref: ray.get(r),
                                              max_attempts)]
                bar.update(sum(status in ("done", "failed") for status in statuses))
            submit_pending()  # rows given back after a worker died
            if time.time() - beat >= heartbeat:
                beat = time.time()
                for claims in flying.values():
                    for claim in claims:
                        store.heartbeat(claim)
        return store.counts(sweep)
    except BaseException:
        for ref, claims in flying.items():
            ray.cancel(ref, force=True)
            for claim in claims:
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


def _claim(store: Store, sweep: str, worker: str, size: PackSize,
           keys: PackKeys | None) -> list[Claim]:
    """The next pending rows to submit: one row, or with ``keys`` the next pack."""
    if keys is None:
        claim = store.claim(sweep, worker)
        return [claim] if claim is not None else []
    return store.claim_pack(sweep, worker, size, keys)


def record_pack_result(store: Store, claims: list[Claim],
                       result: Callable[[], list[MemberResult]],
                       max_attempts: int) -> list[str | None]:
    """Record the outcome of a pack's Ray task run by run (:func:`.packing.record_pack`). If
    the task raised, every row fails with its error (a full disk gives the rows back and
    raises); if its worker or node died, every row goes back to pending until it has had
    ``max_attempts`` attempts. Returns each row's new status (None if its claim was lost)."""
    from ray.exceptions import RayError, RayTaskError

    try:
        results = result()
    except RayTaskError as err:  # the pack's own error, raised again by ray.get
        cause = err.cause or err
        if disk_full(cause):
            for claim in claims:
                store.release(claim, "the disk is full")
            raise sweep_disk_full(cause) from err
        error = describe_error(cause)
        return ["failed" if store.fail(claim, error) else None for claim in claims]
    except RayError as err:  # the process running the task died
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        why = (f"the Ray worker running its pack died ({type(err).__name__}"
               f"{': ' + first if first else ''})")
        return [store.worker_died(claim, why, max_attempts) for claim in claims]
    return record_pack(store, claims, results)
