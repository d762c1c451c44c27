"""``ntksap sweep SPEC.yaml``: run a grid of experiments (methods x sparsities x seeds, ablations,
sanity checks, IMP) into a crash-safe results store, with local workers or on a Ray cluster.

Finished runs are skipped, interrupted ones resume from their checkpoints, failed ones are
recorded with their error (``--retry-failed`` runs them again). Rerunning the same command
after a crash (even ``kill -9``) or a full disk completes the sweep without losing or repeating
a run. A spec point that is the same run as an earlier one is run once (a warning says so).
With ``--pack-size M`` a worker trains up to M runs of one preset together as one fused model
(a pack); each run is still recorded on its own, exactly as if it had run alone.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NtksapError
from ..sweep import BACKENDS, Store, Sweep, expand, load_spec, run_sweep
from ..sweep.jobs import disk_full, sweep_disk_full
from ..sweep.packing import PackKeys, parse_pack_size, plan_packs, resolve_pack_size
from ..sweep.store import STATUSES
from ..train.cliargs import add_dataclass_args, dataclass_from_args
from ..train.config import LoggingConfig
from .helpformat import DefaultsFormatter, description


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments from a YAML spec",
                       description=description(__doc__), formatter_class=DefaultsFormatter)
    p.add_argument("spec", metavar="SPEC.yaml", help="the sweep spec (see configs/)")
    g = p.add_argument_group("overrides of the spec")
    g.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="set a spec entry (YAML value), e.g. fixed.epochs=2, grid.seed=[0,1]")
    g.add_argument("--only", action="append", default=[], metavar="FIELD=V1,V2",
                   help="keep only the runs whose FIELD is one of the values, e.g. c=2,18")
    g.add_argument("--methods", help="shorthand for --only method=M1,M2")
    g.add_argument("--seeds", help="comma-separated seeds: sets grid.seed")
    g.add_argument("--epochs", type=int, help="sets fixed.epochs")
    g.add_argument("--limit-per-class", type=int, help="sets fixed.limit_per_class")
    g.add_argument("--dataset", help="sets fixed.dataset (e.g. synthetic, folder)")
    g.add_argument("--model", help="sets fixed.model")
    g.add_argument("--name", help="the sweep's name in the store")
    g.add_argument("--out-dir", help="run directories go below this folder")
    g.add_argument("--db", help="the results store (SQLite file)")
    g.add_argument("--data-dir", help="where the dataset lies")
    g.add_argument("--download", action="store_true", default=None,
                   help="let torchvision download CIFAR")
    r = p.add_argument_group("running")
    r.add_argument("--backend", choices=BACKENDS, help="local worker processes or Ray")
    r.add_argument("--workers", type=int, help="local workers (default: one per GPU, or 1 "
                   "on CPU; 0 runs in this process)")
    r.add_argument("--device", help="auto, cpu or cuda")
    r.add_argument("--ray-address", help="Ray cluster address (default: start a local one)")
    r.add_argument("--gpus-per-trial", type=float, help="GPUs per Ray task (default 1 if any)")
    r.add_argument("--pack-size", default="auto", metavar="M",
                   help="train up to M runs of one preset together as one fused model (a pack; "
                   "IMP runs always run alone); 1 runs one at a time. auto: on a GPU as many as "
                   "its free memory holds (a rough 1 GiB per network at 32x32 images and batch "
                   "128, scaled by image area and batch size; at most 64), on a CPU 1, since "
                   "CPU packs only pay off for tiny fully connected nets (give M for those)")
    r.add_argument("--compile", action="store_true",
                   help="packs: run each pack's fused model through torch.compile (same "
                   "recipe; float results may differ in the last bits)")
    r.add_argument("--separate-unfusable", action="store_true",
                   help="packs: train the runs of a model that cannot be fused (a layer packs "
                   "do not fuse) one by one instead of failing them")
    add_dataclass_args(r, LoggingConfig)  # --tensorboard, --wandb
    r.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    r.add_argument("--max-attempts", type=int,
                   help="give a run up after its worker died this often (default 3)")
    r.add_argument("--dry-run", action="store_true", help="list the runs, change nothing")
    r.add_argument("--status", action="store_true", help="show the store's state, run nothing")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    r.add_argument("--json", action="store_true", help="print the final counts as JSON")


def _overrides(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    sets, only = list(args.set), list(args.only)
    for flag, key in (("epochs", "fixed.epochs"), ("limit_per_class", "fixed.limit_per_class"),
                      ("dataset", "fixed.dataset"), ("model", "fixed.model"), ("name", "name"),
                      ("out_dir", "out_dir"), ("db", "db"), ("data_dir", "data_dir"),
                      ("download", "download"), ("backend", "backend"), ("device", "device"),
                      ("max_attempts", "max_attempts")):
        value = getattr(args, flag)
        if value is not None:
            sets.append(f"{key}={json.dumps(value)}")
    if args.seeds:
        sets.append(f"grid.seed=[{args.seeds}]")
    if args.methods:
        only.append(f"method={args.methods}")
    return sets, only


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (OSError, sqlite3.Error, NtksapError) as err:
        if disk_full(err):
            raise sweep_disk_full(err) from err
        if isinstance(err, sqlite3.Error):  # e.g. a store that became read-only mid-sweep
            raise ConfigError(f"the results store cannot be written "
                              f"({str(err).splitlines()[0]}); give a store (--db) and an "
                              "output folder (--out-dir) you may write") from err
        raise


def _run(args: argparse.Namespace) -> int:
    pack_size = parse_pack_size(args.pack_size)
    sets, only = _overrides(args)
    sweep = expand(load_spec(args.spec, sets), only)
    sweep.source = str(Path(args.spec).resolve())
    for line in _duplicates(sweep):
        print(f"ntksap sweep: warning: {line}", file=sys.stderr)
    if args.dry_run:
        size = resolve_pack_size(pack_size, sweep.device)
        if size == 1:
            for job in sweep.jobs:
                print(f"{job.key}  [{_labels(job)}]")
            summary = f"{len(sweep.jobs)} runs"
        else:
            summary = _print_packs(sweep, size, pack_size)
        print(f"{summary}; store {sweep.db}; run directories under {sweep.out_dir}")
        return 0
    if args.status:
        counts, failed = _status(sweep)
        _print_state(sweep.queue, sweep.db, counts, failed, args.json)
        return 0
    counts = run_sweep(sweep, workers=args.workers, retry_failed=args.retry_failed,
                       progress=not args.no_progress, ray_address=args.ray_address,
                       gpus_per_trial=args.gpus_per_trial, pack_size=pack_size,
                       compile=args.compile, separate_unfusable=args.separate_unfusable,
                       logging=dataclass_from_args(LoggingConfig, args))
    with Store(sweep.db) as store:
        _print_state(sweep.queue, sweep.db, store.counts(sweep.queue),
                     store.rows(sweep.queue, "failed"), args.json)
    if counts["failed"]:
        print(f"{counts['failed']} run(s) failed; fix the cause and rerun with --retry-failed",
              file=sys.stderr)
        return 1
    return 0


def _labels(job: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in job.labels.items())


def _print_packs(sweep: Sweep, size: Any, pack_size: int | str) -> str:
    """List the runs grouped in the packs a worker forms (all runs pending, in claim order);
    returns the summary line's start."""
    packs, alone, keys = 0, 0, PackKeys()
    for pack in plan_packs(sweep.jobs, size, keys):
        if keys(pack[0]) is None:
            alone += 1
            print(f"alone ({pack[0].kind}): {pack[0].key}  [{_labels(pack[0])}]")
            continue
        packs += 1
        print(f"pack {packs} ({len(pack)} run{'s' * (len(pack) > 1)}, preset "
              f"{pack[0].preset}):")
        for job in pack:
            print(f"  {job.key}  [{_labels(job)}]")
    shown = f"{len(sweep.jobs)} runs in {packs} pack{'s' * (packs != 1)} of up to {pack_size}"
    return shown + (f" and {alone} run{'s' * (alone > 1)} alone" if alone else "")


def _duplicates(sweep: Sweep) -> list[str]:
    """A warning line about the spec's points dropped as duplicates (three named)."""
    n = len(sweep.duplicates)
    if not n:
        return []
    shown = "; ".join(sweep.duplicates[:3]) + (f"; and {n - 3} more" if n > 3 else "")
    return [f"{n} point(s) of the spec repeat an earlier point's run and are dropped (each run "
            f"is done once): {shown}"]


def _status(sweep: Sweep) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Counts and failed rows of the spec's runs, read from the store without writing it;
    runs the store has not seen (or no store yet) count as pending."""
    rows: dict[str, dict[str, Any]] = {}
    if Path(sweep.db).exists():
        with Store(sweep.db, create=False) as store:
            rows = {r["key"]: r for r in store.rows()}
    counts = dict.fromkeys(STATUSES, 0)
    for job in sweep.jobs:
        counts[rows[job.key]["status"] if job.key in rows else "pending"] += 1
    failed = [rows[j.key] for j in sweep.jobs
              if j.key in rows and rows[j.key]["status"] == "failed"]
    return counts, failed


def _print_state(sweep: str, db: str, counts: dict[str, int], failed: list[dict[str, Any]],
                 as_json: bool) -> None:
    if as_json:
        print(json.dumps({"sweep": sweep, "db": str(db), **counts,
                          "failed_runs": {r["key"]: r["error"] for r in failed}}))
        return
    print(f"sweep {sweep} ({db}): " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for row in failed:
        print(f"  failed {row['key']}: {(row['error'] or '').splitlines()[0]}")
