"""``alexnet data synth OUT [--classes 10] [--train-per-class N] [--val-per-class M] [--size 256 | --sizes imagenet]
[--layout folder|ilsvrc] [--workers N] [--seed S]``."""

from __future__ import annotations

import os

from .argtypes import count_int, int_at_least, positive_int
from . import add_progress_flag, show_progress

MAX_CLASSES = 1000  # alexnet.data.synth.MAX_CLASSES (not imported here: the CLI parser stays light)


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="the built-in dataset (alexnet data synth)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    s = actions.add_parser(
        "synth",
        help="generate the built-in dataset: drawn objects on textured, noisy backgrounds",
        description="Writes OUT/{train,val}/<class>/*.jpg: up to 10 classes are object shapes (circle, ring, "
                    "square, triangle, cross, star, crescent, arrow, bowtie, bars) at random position, scale, "
                    "rotation and colour over textured, noisy backgrounds; up to 100 the shapes also get an object "
                    "texture (striped, checked, dotted, ...), up to 1000 a background pattern (blobs, grid, "
                    "checker, ...): classes named shape-texture-background. Deterministic for a seed, whatever "
                    "--workers. Prepare it with `alexnet prepare`.")
    s.add_argument("out", help="output folder (new or empty)")
    s.add_argument("--classes", type=int_at_least(2, MAX_CLASSES), default=10,
                   help=f"number of classes, 2-{MAX_CLASSES} (default 10: the ten shapes)")
    s.add_argument("--train-per-class", type=positive_int, default=500, help="training images per class (default 500)")
    s.add_argument("--val-per-class", type=count_int, default=100, help="validation images per class (default 100)")
    s.add_argument("--size", type=int_at_least(8, 4096), default=None,
                   help="image side in pixels, with --sizes fixed (default 256)")
    s.add_argument("--sizes", choices=("fixed", "imagenet"), default="fixed",
                   help="fixed: square --size images (default); imagenet: ILSVRC-2012's spread of sizes and aspects "
                        "(about 400 x 350 on average, sides 100-2000 px, JPEG quality 90)")
    s.add_argument("--layout", choices=("folder", "ilsvrc"), default="folder",
                   help="folder: OUT/{train,val}/<class>/ (default); ilsvrc: ILSVRC-2012 as distributed "
                        "(train/<wnid>/, a flat val/ and the devkit's meta.mat and ground truth)")
    s.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="processes drawing images (default: every core, here %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_progress_flag(s, "progress bar")
    s.set_defaults(func=run_synth)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_synth(args) -> int:
    import time

    from ..data import generate_synth
    from ..errors import UserError
    from ..fileio import check_output_dir

    if args.size is not None and args.sizes != "fixed":
        raise UserError(f"--size is for --sizes fixed: --sizes {args.sizes} draws the sizes itself")
    size = 256 if args.size is None else args.size
    check_output_dir(args.out)
    t0 = time.perf_counter()
    out = generate_synth(args.out, classes=args.classes, train_per_class=args.train_per_class,
                         val_per_class=args.val_per_class, size=size, seed=args.seed, progress=show_progress(args),
                         sizes=args.sizes, layout=args.layout, workers=args.workers)
    n = args.classes * (args.train_per_class + args.val_per_class)
    dt = time.perf_counter() - t0
    shape = f"{size} px" if args.sizes == "fixed" else "ImageNet sizes"
    print(f"{n:,} images ({args.classes} classes x {args.train_per_class} train + {args.val_per_class} val, "
          f"{shape}, {args.layout} layout, seed {args.seed}) in {dt:.1f} s ({n / max(dt, 1e-9):,.0f} images/s, "
          f"{args.workers} workers) -> {out}")
    return 0
