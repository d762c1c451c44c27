# PYTHON_ARGCOMPLETE_OK (shell completion: see _complete)
"""The ``ntksap`` command: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import errno
import sys
import warnings

from .. import __version__
from ..errors import NtksapError
from . import compare_masks, export, lab, ntk, prune, report, run, sweep

COMMANDS = {"prune": prune, "run": run, "sweep": sweep, "report": report, "ntk": ntk, "lab": lab,
            "compare-masks": compare_masks, "export": export}


# what an interrupted command left (the last completed step is on disk, written atomically)
RESUMES = {"run": "; run the same command again to resume from the last completed epoch",
           "sweep": "; run the same command again to resume (finished runs are kept)"}


def os_problem(err: OSError) -> str:
    """One line for an operating-system error of any command: what could not be done to
    which file, and the fix. Nothing half-written stays (every output is written
    atomically)."""
    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or type(err).__name__
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{what}:{where} (a read-only or protected file or folder); give paths you may "
                "read and write (--out, --out-dir)")
    return f"{what}{':' if where else ''}{where}; check the path and the disk, then run again"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ntksap", description="Prune neural networks at initialization (NTK-SAP and "
        "baselines), train them, and look at their tangent kernels.")
    parser.add_argument("--version", action="version", version=f"ntksap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    _complete(parser)
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line(args.command)
            return COMMANDS[args.command].run(args) or 0
    except (NtksapError, FileNotFoundError) as err:
        print(f"ntksap {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only, protected or vanished output: one line, no traceback
        print(f"ntksap {args.command}: error: {os_problem(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ntksap {args.command}: interrupted{RESUMES.get(args.command, '')}",
              file=sys.stderr)
        return 130


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion through argcomplete (bash, zsh): when the shell asks for completions
    (``eval "$(register-python-argcomplete ntksap)"``), print them and exit; otherwise
    nothing. Without argcomplete installed, nothing."""
    try:
        import argcomplete
    except ImportError:  # pragma: no cover - a dependency; kept optional at run time
        return
    argcomplete.autocomplete(parser)


def _one_line(command: str):
    """Print a warning as one line, ``ntksap COMMAND: warning: ...`` (no file and line)."""
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"ntksap {command}: warning: {message}", file=sys.stderr)
    return show


if __name__ == "__main__":
    raise SystemExit(main())
