"""``alexnet demo [--out DIR]``: generate, prepare, train, evaluate, report."""

from __future__ import annotations

from . import add_device_flag, add_progress_flag, device_override, show_progress


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="end to end on the built-in dataset, on a CPU in minutes",
                       description="Generate the built-in dataset, prepare it, train alexnet-small with the demo "
                                   "recipe, evaluate (centre crop and 10-patch), and write the report.")
    p.add_argument("--out", default="alexnet-demo", help="folder for the data, the run and the report (default: alexnet-demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key of the demo recipe")
    add_device_flag(p, run_config=True)
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo
    from ..engine.config import load_config
    from ..fileio import check_output_dir

    overrides = device_override(args)
    load_config("demo", overrides)  # a bad --set is refused before any data is generated
    check_output_dir(args.out)
    run_demo(args.out, overrides, progress=show_progress(args),
             epoch_lines=not args.no_progress)  # into a log: no bars, one line per epoch
    return 0
