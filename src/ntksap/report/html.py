"""One self-contained HTML page: the tables, every figure (PNG inlined as base64), the layer
collapse flags and the failed runs. No script, no external resource."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from html import escape

from .records import Point
from .table import Row, pivot

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em;
     margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.paper td { color: #666; font-style: italic; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.warn { background: #fff3f3; border-left: 4px solid #d62728; padding: .5em 1em; }
.ok { background: #f3fff3; border-left: 4px solid #2ca02c; padding: .5em 1em; }
.meta { color: #555; font-size: .9em; }
pre { white-space: pre-wrap; font-size: .8em; margin: 0; }
"""


@dataclass
class Figure:
    """A PNG figure of a setting's section."""

    setting: str
    title: str
    caption: str
    png: bytes
    filename: str


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode()
    return (f'<figure><img alt="{escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{escape(fig.title)}.</b> {escape(fig.caption)}</figcaption>"
            "</figure>")


def _table(setting: str, rows: list[Row]) -> str:
    columns, lines = pivot([r for r in rows if r.setting == setting])[setting]
    head = "".join(f"<th>{c:.2f} %</th>" for c in columns)
    body = []
    for name, cells in lines:
        cls = ' class="paper"' if name.endswith("(paper)") else ""
        tds = "".join(f"<td>{escape(cells.get(c, ''))}</td>" for c in columns)
        body.append(f"<tr{cls}><td>{escape(name)}</td>{tds}</tr>")
    return (f'<table class="results"><thead><tr><th>method \\ sparsity</th>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table>")


def slug(text: str) -> str:
    """An HTML id for ``text``: alphanumerics kept, the rest dashes, lower case."""
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def page(title: str, source: str, points: list[Point], rows: list[Row],
         figures: list[Figure]) -> str:
    """The report page as one HTML string."""
    settings = list(dict.fromkeys(r.setting for r in rows))
    status: dict[str, int] = {}
    for p in points:
        status[p.status] = status.get(p.status, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f'<link rel="icon" href="data:,"><title>{escape(title)}</title>'
             f"<style>{CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f'<p class="meta">From <code>{escape(source)}</code>, {now}: {counts or "no runs"}. '
             "Accuracies are best-epoch test accuracies in %, mean ± std over seeds. Hollow "
             "markers on dotted lines: the paper's numbers (Wang, Li, Sun, ICLR 2023; ~ read "
             "off its figures), shown where a setting runs the paper's data and model.</p>",
             _collapse_section(points), _diverged_section(points)]
    if settings:
        parts.append("<nav><b>Settings:</b> " + " · ".join(
            f'<a href="#{slug(s)}">{escape(s)}</a>' for s in settings) + "</nav>")
    for setting in settings:
        parts.append(f'<section id="{slug(setting)}"><h2>{escape(setting)}</h2>')
        parts.append(_table(setting, rows))
        parts += [_img(f) for f in figures if f.setting == setting]
        parts.append("</section>")
    parts.append(_failed_section(points))
    parts.append("</body></html>")
    return "\n".join(parts)


def _collapse_section(points: list[Point]) -> str:
    flagged = [p for p in points if p.collapse and (p.collapse["layers"]
                                                    or p.collapse.get("disconnected"))]
    checked = sum(1 for p in points if p.collapse)
    if not flagged:
        return (f'<section id="collapse" class="ok"><b>Layer collapse:</b> none in the '
                f"{checked} pruned networks checked (no layer without weights, an input-output "
                "path survives in every network).</section>")
    items = []
    for p in flagged:
        what = []
        if p.collapse["layers"]:
            what.append("layers with no weight: " + ", ".join(p.collapse["layers"]))
        if p.collapse.get("disconnected"):
            what.append("no path from input to output survives")
        items.append(f"<li><code>{escape(p.key)}</code> ({escape(p.method)}, sparsity "
                     f"{100 * p.sparsity:.2f} %, seed {p.seed}): {escape('; '.join(what))}</li>")
    return (f'<section id="collapse" class="warn"><b>Layer collapse in {len(flagged)} of '
            f"{checked} pruned networks</b> (flagged ⚠ in the tables, red circles in the "
            f"plots):<ul>{''.join(items)}</ul></section>")


def _diverged_section(points: list[Point]) -> str:
    """The runs whose training loss stopped being finite, with the epoch (empty if none)."""
    diverged = [p for p in points if p.diverged_epoch is not None]
    if not diverged:
        return ""
    items = "".join(f"<li><code>{escape(p.key)}</code> ({escape(p.method)}, sparsity "
                    f"{100 * p.sparsity:.2f} %, seed {p.seed}): loss not finite in epoch "
                    f"{p.diverged_epoch}</li>" for p in diverged)
    return (f'<section id="diverged" class="warn"><b>Training diverged in {len(diverged)} '
            "networks</b> (✗ in the tables, left out of the means and plots):"
            f"<ul>{items}</ul></section>")


def _failed_section(points: list[Point]) -> str:
    """The runs the tables leave out (failed, unfinished, unreadable: their directory and
    error) and the files that could not be read."""
    left_out = [p for p in points if p.status == "failed"] + [
        p for p in points if p.status not in ("done", "failed")]
    files = [(p, f) for p in points for f in p.unreadable]
    if not left_out and not files:
        return ""
    rows = "".join(f"<tr><td><code>{escape(p.key)}</code></td><td>{escape(p.status)}</td>"
                   f"<td><code>{escape(str(p.run_dir or ''))}</code></td>"
                   f"<td><pre>{escape((p.error or '').strip()[:1500])}</pre></td></tr>"
                   for p in left_out)
    rows += "".join(f"<tr><td><code>{escape(p.key)}</code></td><td>{escape(p.status)}, a file "
                    f"unreadable</td><td><code>{escape(str(p.run_dir or ''))}</code></td>"
                    f"<td><pre>{escape(f)}</pre></td></tr>" for p, f in files)
    return ('<section id="failed"><h2>Failed, unfinished and unreadable runs</h2>'
            '<table><thead><tr><th>run</th><th>status</th><th>directory</th><th>error</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></section>")
