"""``alexnet viz filters|neighbors|curves|confusion ...``: the paper's figures as PNG."""

from __future__ import annotations

from pathlib import Path

from ..engine.inference import TTA
from ..errors import UserError
from . import add_device_flag, add_progress_flag, add_workers_flag, show_progress
from .argtypes import positive_int


def _common(p, out_default: str) -> None:
    p.add_argument("--out", default=out_default, help=f"PNG file to write (default {out_default})")


def add_parser(sub) -> None:
    p = sub.add_parser("viz", help="figures: conv1 kernels, neighbours, training curves, confusion matrix",
                       description="Draw the paper's figures (PNG) for a checkpoint or a run.")
    vs = p.add_subparsers(dest="figure", metavar="FIGURE")

    f = vs.add_parser("filters", help="conv1's kernels, one grid per tower side by side (Figure 3)")
    f.add_argument("checkpoint")
    f.add_argument("--layer", default="conv1", help="convolution whose kernels to show (default conv1)")
    _common(f, "filters.png")

    n = vs.add_parser("neighbors", help="query images each followed by their nearest training images (Figure 4)")
    n.add_argument("checkpoint")
    n.add_argument("--data", required=True, help="prepared data folder")
    n.add_argument("--query", nargs="+", metavar="IMAGE", help="query image files (default: images of --split)")
    n.add_argument("--split", default="val", help="split to take queries from when no --query (default val)")
    n.add_argument("--count", type=positive_int, default=6, help="queries taken from --split (default 6)")
    n.add_argument("-k", type=positive_int, default=6, help="neighbours per query (default 6)")
    add_workers_flag(n)
    add_device_flag(n)
    add_progress_flag(n, "progress bar")
    _common(n, "neighbors.png")

    c = vs.add_parser("curves", help="training loss, validation error and learning rate from metrics.jsonl")
    c.add_argument("run", help="run folder or its metrics.jsonl")
    c.add_argument("--out", default=None, help="PNG file to write (default RUN/curves.png)")

    m = vs.add_parser("confusion", help="confusion matrix of a split")
    m.add_argument("checkpoint")
    m.add_argument("--data", required=True, help="prepared data folder")
    m.add_argument("--split", default="val")
    m.add_argument("--tta", choices=TTA, default="center")
    m.add_argument("--batch-size", type=positive_int, default=256)
    add_workers_flag(m)
    add_device_flag(m)
    add_progress_flag(m, "progress bar")
    _common(m, "confusion.png")

    p.set_defaults(func=run, _viz_parser=p)


def run(args) -> int:
    from ..engine.inference import Checkpoint
    from ..fileio import check_output_file
    from ..viz import figures

    kind = getattr(args, "figure", None)
    if kind is None:
        args._viz_parser.print_help()
        return 2
    if kind == "curves" and args.out is None:
        run_path = Path(args.run)
        args.out = str((run_path if run_path.is_dir() else run_path.parent) / "curves.png")
    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"figures are PNG files: --out should end in .png, not {Path(args.out).name!r}")
    check_output_file(args.out)
    if kind == "filters":
        ck = Checkpoint.load(args.checkpoint, "cpu")
        fig = figures.filters_figure(ck.model, args.layer, f"{args.layer} kernels of {ck.path.name} ({ck.name})")
    elif kind == "neighbors":
        from ..features.neighbors import neighbor_panels, split_neighbor_panels

        ck = Checkpoint.load(args.checkpoint, args.device)
        kw = dict(k=args.k, workers=args.workers, progress=show_progress(args))
        if args.query:
            panels = neighbor_panels(ck, args.data, args.query, **kw)
        else:
            panels = split_neighbor_panels(ck, args.data, args.split, count=args.count, **kw)
        fig = figures.neighbors_figure(panels)
    elif kind == "curves":
        run_path = Path(args.run)
        records = figures.read_metrics(run_path)
        fig = figures.curves_figure(records, f"{run_path.resolve().name}")
    elif kind == "confusion":
        from ..engine.evaluate import confusion_matrix

        ck = Checkpoint.load(args.checkpoint, args.device)
        cm = confusion_matrix(ck, args.data, args.split, tta=args.tta, batch_size=args.batch_size, workers=args.workers,
                              progress=show_progress(args))
        fig = figures.confusion_figure(cm, ck.class_names)
    else:  # argparse rejects anything else
        raise UserError(f"unknown figure {kind!r}")
    out = figures.save_figure(fig, args.out)
    print(f"wrote {out}")
    return 0
