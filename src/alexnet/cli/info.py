"""``alexnet info [MODEL] [--input-size N] [--json]``: the layer table."""

from __future__ import annotations

from ..errors import UserError
from .. import models
from ..models.summary import format_table, summarize
from ..strict_json import dumps
from .argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="per-layer output shapes, parameters and multiply-adds of a model")
    p.add_argument("model", nargs="?", default="alexnet", help=f"one of: {', '.join(models.names())}")
    p.add_argument("--input-size", type=positive_int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--num-classes", type=positive_int, default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    options = {"num_classes": args.num_classes}
    if args.input_size is not None:
        options["input_size"] = args.input_size
    try:
        model = models.create(args.model, **options)
    except ValueError as e:  # unknown model, or an input too small for the network
        raise UserError(str(e)) from None
    summary = summarize(model)
    if args.json:
        print(dumps(summary))
    else:
        print(format_table(summary))
    return 0
