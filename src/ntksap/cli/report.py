"""``ntksap report RUNS_OR_DB --out DIR``: the results table (CSV, Markdown), accuracy-vs-
sparsity plots with the paper's numbers, per-layer density plots, NTK spectra, layer-collapse
flags, and one self-contained HTML page (DIR/index.html) gathering them.

Failed, unfinished and unreadable runs (a truncated config.json or summary.json) are listed on
the page and in results.md with their directory; a source without any run is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any

from .helpformat import DefaultsFormatter, description


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables, plots and an HTML page from a sweep's runs",
                       description=description(__doc__), formatter_class=DefaultsFormatter)
    p.add_argument("source", metavar="RUNS_OR_DB",
                   help="a results store (the sweep's .db file) or a folder of run directories")
    p.add_argument("--out", required=True, metavar="DIR", help="where the report is written")
    p.add_argument("--sweep", help="report only this sweep of the store")
    p.add_argument("--title", default="NTK-SAP reproduction report")
    p.add_argument("--sparsity-axis", choices=("nominal", "effective"), default="nominal",
                   help="plot accuracy against the nominal sparsity or the effective one (kept "
                        "weights on no input-output path counted as pruned)")
    p.add_argument("--overlap-sparsity", type=float, default=None, metavar="S",
                   help="sparsity (a fraction, e.g. 0.982) of the mask-overlap heatmap across "
                        "methods (default: the highest with masks of two methods)")
    p.add_argument("--json", action="store_true",
                   help="print the table as one JSON object (its rows, with the files "
                        "written) instead of the summary lines")


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    report = build_report(args.source, args.out, sweep=args.sweep, title=args.title,
                          sparsity_axis=args.sparsity_axis,
                          overlap_sparsity=args.overlap_sparsity)
    done = sum(p.status == "done" for p in report.points)
    flagged = sum(bool(p.collapse and (p.collapse["layers"] or p.collapse.get("disconnected")))
                  for p in report.points)
    diverged = sum(p.diverged_epoch is not None for p in report.points)
    if args.json:
        print(json.dumps(_as_json(report), allow_nan=False, default=str))
        return 0 if report.figures else 1
    print(f"report of {done} finished networks ({len(report.rows)} table rows, "
          f"{len(report.figures)} figures, {flagged} with layer collapse, {diverged} "
          f"diverged): {report.html}")
    print(f"  table: {report.csv}, {report.markdown}")
    left_out = [p for p in report.points if p.status != "done" and p.diverged_epoch is None]
    if left_out:
        counts = {s: sum(p.status == s for p in left_out) for s in
                  dict.fromkeys(p.status for p in left_out)}
        print("  not in the table: " + ", ".join(f"{n} {s}" for s, n in counts.items())
              + " (listed on the page and in results.md)")
    problems = 0
    for p in report.points:
        if p.status == "unreadable":
            print(f"  unreadable run {p.run_dir}: {p.error}")
            problems += 1
        for f in p.unreadable:
            print(f"  unreadable file {f}")
            problems += 1
    if not report.figures:
        print(f"ntksap report: error: no figure could be drawn ({problems} unreadable runs or "
              "files, listed above); fix or remove them and run the report again",
              file=sys.stderr)
        return 1
    return 0


def _as_json(report: Any) -> dict[str, Any]:
    """The report as data: its table rows (each field of a row; NaN as null) and the files
    it wrote."""
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in dataclasses.asdict(row).items()} for row in report.rows]
    return {"rows": rows, "html": str(report.html), "csv": str(report.csv),
            "markdown": str(report.markdown), "figures": [str(f) for f in report.figures],
            "runs": {s: sum(p.status == s for p in report.points)
                     for s in dict.fromkeys(p.status for p in report.points)}}
