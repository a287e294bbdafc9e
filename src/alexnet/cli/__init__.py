"""The ``alexnet`` command. Each subcommand is a module here with ``add_parser``."""

import sys


def add_progress_flag(parser, what: str = "progress bars") -> None:
    """``--no-progress`` (``--quiet`` is the same flag): one spelling for every command."""
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                        help=f"no {what} (they are off anyway when stderr is not a terminal)")


def show_progress(args) -> bool:
    """Bars only when asked for and drawn on a terminal: never into a log file or a pipe."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()
