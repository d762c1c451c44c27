"""Sweeps: a grid of runs from a YAML spec, a crash-safe results store, local or Ray workers.

``run_sweep(expand(load_spec("configs/smoke.yaml")))`` records the grid in the store
(``Store``, SQLite in WAL mode; finished runs are kept, not redone), then runs the pending rows
with local worker processes or as Ray tasks, one run at a time or in packs (``pack_size``:
runs of one preset trained together, :mod:`ntksap.pack`). ``ntksap sweep`` is the
command-line form.
"""

from __future__ import annotations

import sys
from typing import Any

from ..runs.checks import auto_device
from ..runs.imp import ImpConfig, imp_config, imp_dir, run_imp
from ..train.config import LoggingConfig
from ..train.hooks import check_logging
from .jobs import ExecOptions, execute, make_job
from .local import plan_slots, run_local
from .packing import job_pack_key, parse_pack_size, plan_packs, resolve_pack_size
from .ray_backend import run_ray
from .spec import Sweep, expand, load_spec, sparsity_of_c
from .store import Claim, Job, Store, StoreError

BACKENDS = ("local", "ray")


def run_sweep(sweep: Sweep, *, backend: str | None = None, workers: int | None = None,
              device: str | None = None, retry_failed: bool = False, progress: bool = True,
              ray_address: str | None = None, gpus_per_trial: float | None = None,
              pack_size: int | str = "auto", compile: bool = False,
              separate_unfusable: bool = False, logging: LoggingConfig | None = None,
              **kwargs: Any) -> dict[str, int]:
    """Record ``sweep``'s runs in its store and run every pending one; returns the counts
    per status. ``retry_failed`` first puts the failed runs back in the queue.
    ``pack_size``: up to that many runs of one pack key trained together (a whole number,
    or "auto": 1 on a CPU, as free GPU memory allows on a GPU; :mod:`.packing`); ``compile``
    runs each pack's fused model through ``torch.compile``; ``separate_unfusable`` trains the
    runs of a model that a pack cannot fuse one by one (else they fail, naming the layer).
    ``logging`` sends each run's epochs to TensorBoard (``<run>/tensorboard/``) and/or W&B
    (one W&B run per run directory, named after it, its config and per-layer densities as
    the config): for dense and pruned runs trained one at a time (packs and IMP refuse it)."""
    from ..errors import ConfigError

    backend = backend or sweep.backend
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    workers = sweep.workers if workers is None else workers
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be >= 1 (or 0: run in this process); got {workers}")
    if gpus_per_trial is not None and gpus_per_trial < 0:
        raise ConfigError(f"--gpus-per-trial must be >= 0; got {gpus_per_trial}")
    pack_size = parse_pack_size(pack_size)
    logging = logging or LoggingConfig()
    if logging != LoggingConfig():
        check_logging(logging)
        on_cpu = auto_device(device or sweep.device) == "cpu"
        if pack_size != 1 and not (pack_size == "auto" and on_cpu):  # auto: 1 on a CPU
            raise ConfigError("--tensorboard/--wandb log runs trained one at a time: add "
                              "--pack-size 1 (packs do not log per run)")
        if any(job.kind == "imp" for job in sweep.jobs):
            raise ConfigError("--tensorboard/--wandb log dense and pruned runs; this sweep "
                              "has IMP runs: drop them (--only method=...) or the logging")
    options = ExecOptions(sweep.out_dir, sweep.data_dir, sweep.download,
                          device or sweep.device, compile=compile,
                          separate_unfusable=separate_unfusable, logging=logging)
    with Store(sweep.db) as store:
        store.add(sweep.name, sweep.jobs, source=sweep.source or None)
        if sweep.queue != sweep.name:
            store.add(sweep.queue, sweep.jobs)
        if retry_failed:
            store.retry_failed(sweep.queue)
        missing = store.requeue_missing(sweep.queue, sweep.out_dir)
    if missing:
        print(f"ntksap sweep: warning: {len(missing)} finished run(s) have lost their run "
              f"directory and run again: {', '.join(missing[:3])}"
              + (" ..." if len(missing) > 3 else ""), file=sys.stderr)
    max_attempts = kwargs.pop("max_attempts", sweep.max_attempts)
    if backend == "ray":
        return run_ray(sweep.db, sweep.queue, options, address=ray_address,
                       gpus_per_trial=gpus_per_trial, progress=progress,
                       max_attempts=max_attempts, pack_size=pack_size, **kwargs)
    return run_local(sweep.db, sweep.queue, options, device=options.device,
                     workers=workers, progress=progress,
                     max_attempts=max_attempts, pack_size=pack_size, **kwargs)


__all__ = [
    "BACKENDS", "Claim", "ExecOptions", "ImpConfig", "Job", "Store", "StoreError", "Sweep",
    "execute",
    "expand", "imp_config", "imp_dir", "job_pack_key", "load_spec", "make_job",
    "parse_pack_size", "plan_packs", "plan_slots", "resolve_pack_size", "run_imp", "run_local",
    "run_ray", "run_sweep", "sparsity_of_c",
]
