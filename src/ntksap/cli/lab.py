"""``ntksap lab``: rerun the small NTK-theory experiments behind NTK-SAP, one figure each.

    ntksap lab dynamics  --out DIR   kernel prediction exp(-Kt) u(0) against gradient descent
    ntksap lab frequency --out DIR   NTK eigenvectors: zero crossings against eigenvalue index
    ntksap lab asi       --out DIR   sin(4x) from 10 points: no trick, ASI, doubling, RND
"""

from __future__ import annotations

import argparse
import json
import time

from ..lab import EXPERIMENTS
from ..lab.asi import VARIANTS
from ..lab.nets import ACTIVATIONS
from .helpformat import DefaultsFormatter, description


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="NTK-theory experiments (dynamics, frequency, asi)",
                       description=description(__doc__), formatter_class=DefaultsFormatter)
    experiments = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    fmt = DefaultsFormatter

    d = experiments.add_parser("dynamics", formatter_class=fmt,
                               help="kernel prediction against gradient-descent training")
    d.add_argument("--width", type=int, default=10_000, help="hidden units m")
    d.add_argument("--points", type=int, default=20, help="training points")
    d.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh",
                   help="the hidden units' nonlinearity")
    d.add_argument("--steps", type=int, default=4000, help="gradient-descent steps")
    d.add_argument("--lr-scale", type=float, default=0.05,
                   help="step = lr_scale / largest eigenvalue of K")

    f = experiments.add_parser("frequency", formatter_class=fmt,
                               help="eigenvectors of the NTK and their zero crossings")
    f.add_argument("--points", type=int, default=3000, help="1-D inputs in [-1, 1]")
    f.add_argument("--width", type=int, default=2000, help="hidden ReLU units")
    f.add_argument("--indices", type=int, default=60, help="eigenvectors counted")

    a = experiments.add_parser("asi", formatter_class=fmt,
                               help="sin(4x) with no trick, ASI, doubling trick and RND")
    a.add_argument("--widths", type=int, nargs="+", default=[1, 5000, 5000, 1],
                   help="layer widths from the input (1) to the output (1)")
    a.add_argument("--std", type=float, default=10.0, help="initialization std sigma_w")
    a.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh",
                   help="the hidden units' nonlinearity")
    a.add_argument("--train-points", type=int, default=10, help="evenly spaced in [-1, 1]")
    a.add_argument("--steps", type=int, default=1000, help="gradient-descent steps")
    a.add_argument("--lr-scale", type=float, default=0.5,
                   help="step = lr_scale / largest eigenvalue of the plain network's K")
    a.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="the networks compared")
    a.add_argument("--no-check-kernel", action="store_true",
                   help="skip comparing the ASI and doubling kernels with the plain one")
    a.add_argument("--device", default="cpu", help="cpu or cuda")

    for e in (d, f, a):
        e.add_argument("--out", required=True, help="folder for the figure")
        e.add_argument("--seed", type=int, default=0, help="seeds the network and the data")
        e.add_argument("--json", action="store_true", help="print one JSON object")
        e.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items()
               if k not in ("command", "experiment", "out", "json", "no_progress",
                            "no_check_kernel")}
    if args.experiment == "asi":
        options["check_kernel"] = not args.no_check_kernel
    start = time.perf_counter()
    result = EXPERIMENTS[args.experiment](args.out, progress=not args.no_progress, **options)
    report = {**result.to_json(), "seconds": time.perf_counter() - start}
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0
