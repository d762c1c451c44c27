"""``ntksap report RUNS_OR_DB --out DIR``: the results table (CSV, Markdown), accuracy-vs-
sparsity plots with the paper's numbers, per-layer density plots, NTK spectra, layer-collapse
flags, and one self-contained HTML page (DIR/index.html) gathering them."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables, plots and an HTML page from a sweep's runs",
                       description=__doc__.splitlines()[0])
    p.add_argument("source", metavar="RUNS_OR_DB",
                   help="a results store (the sweep's .db file) or a folder of run directories")
    p.add_argument("--out", required=True, metavar="DIR", help="where the report is written")
    p.add_argument("--sweep", help="report only this sweep of the store")
    p.add_argument("--title", default="NTK-SAP reproduction report")
    p.add_argument("--sparsity-axis", choices=("nominal", "effective"), default="nominal",
                   help="plot accuracy against the nominal sparsity or the effective one (kept "
                        "weights on no input-output path counted as pruned)")


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    report = build_report(args.source, args.out, sweep=args.sweep, title=args.title,
                          sparsity_axis=args.sparsity_axis)
    done = sum(p.status == "done" for p in report.points)
    flagged = sum(bool(p.collapse and (p.collapse["layers"] or p.collapse.get("disconnected")))
                  for p in report.points)
    print(f"report of {done} finished networks ({len(report.rows)} table rows, "
          f"{len(report.figures)} figures, {flagged} with layer collapse): {report.html}")
    print(f"  table: {report.csv}, {report.markdown}")
    return 0
