"""``ntksap sweep SPEC.yaml``: run a grid of experiments (methods x sparsities x seeds, ablations,
sanity checks, IMP) into a crash-safe results store, with local workers or on a Ray cluster.

Finished runs are skipped, interrupted ones resume from their checkpoints, failed ones are
recorded with their error (``--retry-failed`` runs them again). Rerunning the same command
after a crash (even ``kill -9``) completes the sweep without losing or repeating a run.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..sweep import BACKENDS, Store, expand, load_spec, run_sweep


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments from a YAML spec",
                       description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
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
    sets, only = _overrides(args)
    sweep = expand(load_spec(args.spec, sets), only)
    if args.dry_run:
        for job in sweep.jobs:
            labels = ", ".join(f"{k}={v}" for k, v in job.labels.items())
            print(f"{job.key}  [{labels}]")
        print(f"{len(sweep.jobs)} runs; store {sweep.db}; run directories under "
              f"{sweep.out_dir}")
        return 0
    if args.status:
        with Store(sweep.db) as store:
            store.add(sweep.name, sweep.jobs)
            store.add(sweep.queue, sweep.jobs)
            _print_state(store, sweep.queue, args.json)
        return 0
    counts = run_sweep(sweep, workers=args.workers, retry_failed=args.retry_failed,
                       progress=not args.no_progress, ray_address=args.ray_address,
                       gpus_per_trial=args.gpus_per_trial)
    with Store(sweep.db) as store:
        _print_state(store, sweep.queue, args.json)
    if counts["failed"]:
        print(f"{counts['failed']} run(s) failed; fix the cause and rerun with --retry-failed",
              file=sys.stderr)
        return 1
    return 0


def _print_state(store: Store, sweep: str, as_json: bool) -> None:
    counts = store.counts(sweep)
    failed = store.rows(sweep, "failed")
    if as_json:
        print(json.dumps({"sweep": sweep, "db": str(store.path), **counts,
                          "failed_runs": {r["key"]: r["error"] for r in failed}}))
        return
    print(f"sweep {sweep} ({store.path}): " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for row in failed:
        print(f"  failed {row['key']}: {(row['error'] or '').splitlines()[0]}")
