"""``alexnet predict CHECKPOINT IMAGE... [--topk 5] [--tta center|10crop] [--json]``."""

from __future__ import annotations

import sys

from ..engine.inference import TTA
from ..errors import one_line
from ..strict_json import dumps
from . import add_device_flag
from .argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="class names and probabilities for image files",
                       description="Classify image files with a checkpoint. Each image is preprocessed as the "
                                   "checkpoint's eval transform says (shorter side to 256, centre crop); 10crop "
                                   "averages the softmax of the four corners, the centre and their reflections.")
    p.add_argument("checkpoint", help="checkpoint file (e.g. RUN/best.ckpt)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes to list per image (default 5)")
    p.add_argument("--tta", choices=TTA, default="center", help="test-time views (default center)")
    p.add_argument("--json", action="store_true",
                   help='print [{"image", "top": [{"class", "id", "index", "prob"}, ...]}]')
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_device_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engine.predict import predict

    results = predict(args.checkpoint, args.images, topk=args.topk, tta=args.tta, device=args.device,
                      batch_size=args.batch_size, errors="report")
    failed = [r for r in results if "error" in r]
    for r in failed:  # each bad file on its own line; the others are still predicted
        print(f"alexnet predict: error: {one_line(r['error'])}", file=sys.stderr)
    done = [r for r in results if "error" not in r]
    if args.json:
        print(dumps(done))
    else:
        for r in done:
            print(one_line(r["image"]))
            for t in r["top"]:
                name = t["class"] if t["class"] == t["id"] else f"{t['class']} ({t['id']})"
                print(f"  {100 * t['prob']:6.2f}%  {name}")
    return 2 if failed else 0
