"""``alexnet``: one command for the whole system.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)``, which registers the parser and sets ``func``.
A :class:`~alexnet.errors.UserError`, a failed file operation (``OSError``)
and a bad argument each become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import UserError, one_line

# Subcommand modules, in the order ``alexnet --help`` lists them.
COMMANDS = ["demo", "info", "data", "prepare", "train", "eval", "convert", "export", "features", "neighbors", "predict", "serve", "viz", "report", "ablate"]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _names_as_bytes() -> None:
    """Print file names that are not valid UTF-8 as the bytes they are, instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError):  # not a text stream we may reconfigure
            pass


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="alexnet",
        description="AlexNet (Krizhevsky et al. 2012): the paper's network, data pipeline, training and analysis.",
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _names_as_bytes()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad argument (already reported in one line)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"alexnet {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that vanished, no permission, a full disk: the user's to fix, no traceback
        name = f"{e.filename}: " if e.filename and str(e.filename) not in (e.strerror or "") else ""
        print(f"alexnet {args.command}: error: {one_line(name)}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
