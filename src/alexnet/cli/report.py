"""``alexnet report RUN_DIR [--data PREPARED] [--checkpoint CKPT]``: one self-contained HTML page."""

from __future__ import annotations

from .argtypes import positive_int
from . import add_device_flag, add_progress_flag, add_workers_flag, show_progress


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="self-contained HTML report of a run (config, curves, metrics, figures)",
                       description="Write RUN_DIR/report.html: config, training curves, final metrics (centre "
                                   "and 10-patch), conv1 kernels, fc7 neighbours, kNN scores and confusion matrix, "
                                   "figures embedded as base64 PNG. Missing parts are noted in the page.")
    p.add_argument("run", metavar="RUN_DIR", help="run folder written by alexnet train")
    p.add_argument("--data", help="prepared data folder for neighbours, kNN and confusion matrix")
    p.add_argument("--checkpoint", help="checkpoint to describe (default RUN_DIR/best.ckpt, else last.ckpt)")
    p.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--split", default="val", help="split for queries, kNN and confusion (default val)")
    p.add_argument("-k", type=positive_int, default=6, help="neighbours per query (default 6)")
    p.add_argument("--queries", type=positive_int, default=6, help="query images shown (default 6)")
    p.add_argument("--no-knn", action="store_true", help="skip the fc7-vs-pixels kNN scores")
    add_workers_flag(p)
    add_device_flag(p)
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import UserError
    from ..fileio import check_output_file
    from ..viz.report import write_report

    if not Path(args.run).is_dir():
        raise UserError(f"run folder not found: {args.run}")
    check_output_file(args.out or Path(args.run) / "report.html")
    if not args.no_knn:
        check_output_file(Path(args.run) / "knn.json")
    path = write_report(args.run, data=args.data, checkpoint=args.checkpoint, out=args.out, k=args.k,
                        queries=args.queries, split=args.split, knn=not args.no_knn, device=args.device,
                        workers=args.workers, progress=show_progress(args))
    print(path)
    return 0
