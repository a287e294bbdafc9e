"""``alexnet info [MODEL] [--input-size N] [--json]``: the layer table, and the JPEG decoder this machine uses."""

from __future__ import annotations

from ..errors import UserError
from .. import models
from ..models.summary import format_table, summarize
from ..strict_json import dumps
from .argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="per-layer output shapes, parameters and multiply-adds of a model",
                       description="The model's layer table (output shapes, parameters, multiply-adds), and the "
                                   "JPEG decoder that prepare and the loader use here (torchvision, torchcodec or "
                                   "pillow: the first that works, alexnet.data.shards.select_decoder).")
    p.add_argument("model", nargs="?", default="alexnet", help=f"one of: {', '.join(models.names())}")
    p.add_argument("--input-size", type=positive_int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--num-classes", type=positive_int, default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (with a jpeg_decoder key)")
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
    decoder = jpeg_decoder_name()
    if args.json:
        print(dumps({**summary, "jpeg_decoder": decoder}))
    else:
        print(format_table(summary))
        print(f"JPEG decoder (prepare, loader): {decoder}")
    return 0


def jpeg_decoder_name() -> str:
    """The name of the JPEG decoder this process selects, or why none works (info reports, it does not fail)."""
    from ..data.shards import jpeg_decoder

    try:
        return jpeg_decoder().name
    except RuntimeError as e:
        return f"none ({e})"
