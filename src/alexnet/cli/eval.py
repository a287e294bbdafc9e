"""``alexnet eval CHECKPOINT --data PREPARED [--split val] [--tta center|10crop] [--json]``."""

from __future__ import annotations

from ..engine.inference import TTA
from ..strict_json import dumps
from . import add_device_flag, add_progress_flag, add_workers_flag, show_progress
from .argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 error of a checkpoint, centre crop or the 10-patch test")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--split", default="val")
    p.add_argument("--tta", choices=TTA, default="center",
                   help="center: one centre patch; 10crop: 4 corners + centre and their reflections, softmax averaged")
    p.add_argument("--batch-size", type=positive_int, default=100)
    add_workers_flag(p)
    add_device_flag(p)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                   help="autocast dtype; auto: bf16 where the hardware has it (CUDA, AVX-512 BF16, AMX), else fp32")
    p.add_argument("--json", action="store_true", help="print {count, top1_acc, top5_acc, top1_err, top5_err}")
    add_progress_flag(p, "progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engine.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, tta=args.tta,
                              batch_size=args.batch_size, workers=args.workers, device=args.device,
                              precision=args.precision, progress=show_progress(args) and not args.json)
    if args.json:
        print(dumps(res))
    else:
        print(f"{res['count']} images, {args.split}, {args.tta}: "
              f"top-1 error {res['top1_err']:.2%} (accuracy {res['top1_acc']:.2%}), "
              f"top-5 error {res['top5_err']:.2%} (accuracy {res['top5_acc']:.2%})")
    return 0
