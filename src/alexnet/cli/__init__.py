"""The ``alexnet`` command. Each subcommand is a module here with ``add_parser``."""

import argparse
import sys


def add_progress_flag(parser, what: str = "progress bars") -> None:
    """``--no-progress``: one spelling for every command (``--quiet`` still works, undocumented, for old scripts)."""
    parser.add_argument("--no-progress", dest="no_progress", action="store_true",
                        help=f"no {what} (they are off anyway when stderr is not a terminal)")
    parser.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)


def add_device_flag(parser, run_config: bool = False) -> None:
    """``--device``: one spelling for every command that runs a network. ``run_config``: the command
    trains, and the flag sets ``run.device`` (the same as ``--set run.device=...``)."""
    where = " (sets run.device)" if run_config else ""
    parser.add_argument("--device", default=None if run_config else "auto", metavar="DEVICE",
                        help=f"auto | cpu | cuda | cuda:N{where}; auto: CUDA when there is a GPU, else the CPU")


def device_override(args) -> list[str]:
    """``--set`` overrides with ``run.device`` from ``--device`` appended when it was given."""
    return [*args.overrides, f"run.device={args.device}"] if getattr(args, "device", None) else list(args.overrides)


def add_workers_flag(parser) -> None:
    """``--workers N``: loader processes, by default 0 for small images (read straight from the page cache)."""
    from ..data.meta import SMALL_IMAGE_SIDE
    from .argtypes import count_int

    parser.add_argument("--workers", type=count_int, default=None,
                        help=f"loader processes (default: 0 for images of {SMALL_IMAGE_SIDE} px or less, else 2)")


def show_progress(args) -> bool:
    """Bars only when asked for and drawn on a terminal: never into a log file or a pipe."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()
