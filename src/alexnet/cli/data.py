"""``alexnet data synth OUT [--classes 10] [--train-per-class N] [--val-per-class M] [--size 256] [--seed S]``."""

from __future__ import annotations

from .argtypes import count_int, int_at_least, positive_int
from . import add_progress_flag, show_progress


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="the built-in dataset (alexnet data synth)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    s = actions.add_parser(
        "synth",
        help="generate the built-in dataset: drawn objects on textured, noisy backgrounds",
        description="Writes OUT/{train,val}/<class>/*.jpg: ten object classes (circle, ring, square, triangle, "
                    "cross, star, crescent, arrow, bowtie, bars) at random position, scale, rotation and colour "
                    "over textured, noisy backgrounds. Deterministic for a seed. Prepare it with `alexnet prepare`.")
    s.add_argument("out", help="output folder (new or empty)")
    s.add_argument("--classes", type=int_at_least(2, 10), default=10, help="number of classes, 2-10 (default 10)")
    s.add_argument("--train-per-class", type=positive_int, default=500, help="training images per class (default 500)")
    s.add_argument("--val-per-class", type=count_int, default=100, help="validation images per class (default 100)")
    s.add_argument("--size", type=int_at_least(8, 4096), default=256, help="image side in pixels (default 256)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_progress_flag(s, "progress bar")
    s.set_defaults(func=run_synth)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_synth(args) -> int:
    import time

    from ..data import generate_synth
    from ..fileio import check_output_dir

    check_output_dir(args.out)
    t0 = time.perf_counter()
    out = generate_synth(args.out, classes=args.classes, train_per_class=args.train_per_class,
                         val_per_class=args.val_per_class, size=args.size, seed=args.seed, progress=show_progress(args))
    n = args.classes * (args.train_per_class + args.val_per_class)
    print(f"{n:,} images ({args.classes} classes x {args.train_per_class} train + {args.val_per_class} val, "
          f"{args.size} px, seed {args.seed}) in {time.perf_counter() - t0:.1f} s -> {out}")
    return 0
