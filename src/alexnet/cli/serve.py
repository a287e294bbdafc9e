"""``alexnet serve CHECKPOINT [--neighbors PREPARED|FEATURES.npy] [--host 127.0.0.1] [--port 8000]``."""

from __future__ import annotations

from . import add_device_flag, add_progress_flag, add_workers_flag, show_progress
from .argtypes import positive_int


def _positive_float(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not {text}")
    return v


def add_parser(sub) -> None:
    from ..serve.limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, Limits

    d = Limits()
    p = sub.add_parser(
        "serve", help="the network as a web page and a JSON API (pip install 'alexnet[serve]')",
        description="Serve a checkpoint (or an exported .safetensors, or converted weights: whatever predict takes) "
                    "over HTTP: a page to drop an image on (top-5, centre crop vs the 10-patch test, conv1's "
                    "filters and, with --neighbors, the nearest training images in fc7 and in pixel space) and "
                    "a JSON API (POST /v1/predict, /v1/neighbors; GET /v1/model, /healthz, /openapi.json). "
                    "Binds 127.0.0.1 unless --host says otherwise; see docs/serve.md.")
    p.add_argument("checkpoint", help="checkpoint file (e.g. RUN/best.ckpt)")
    p.add_argument("--neighbors", metavar="PREPARED|FEATURES.npy",
                   help="prepared data folder whose train split is searched (features cached beside the checkpoint), "
                        "or fc7 features of it written by `alexnet features`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed)")
    p.add_argument("--max-upload-bytes", type=positive_int, default=DEFAULT_MAX_UPLOAD_BYTES,
                   help=f"largest image upload (default {DEFAULT_MAX_UPLOAD_BYTES})")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest width x height an image may declare (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--max-batch", type=positive_int, default=d.max_batch,
                   help=f"network inputs per forward pass (default {d.max_batch}; a 10-patch request is 10)")
    p.add_argument("--max-wait-ms", type=_positive_float, default=d.max_wait_ms,
                   help=f"how long a request waits for others to share its forward pass (default {d.max_wait_ms:g})")
    p.add_argument("--max-inflight", type=positive_int, default=d.max_inflight,
                   help=f"requests holding an image at once; more are answered 503 (default {d.max_inflight})")
    p.add_argument("--read-timeout", type=_positive_float, default=d.read_timeout_s,
                   help=f"seconds a client has to send its body (default {d.read_timeout_s:g})")
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    add_workers_flag(p)
    add_device_flag(p)
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..serve import require_serve

    require_serve()  # before the checkpoint is loaded
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, not {args.port}")
    if args.read_timeout <= 0:
        raise UserError("--read-timeout must be more than 0")
    from ..serve import bind, run_server
    from ..serve.limits import Limits
    from ..serve.service import Service

    bind(args.host, args.port).close()  # an address in use or not ours fails now, not after the feature pass
    limits = Limits(max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels, max_batch=args.max_batch,
                    max_wait_ms=args.max_wait_ms, max_inflight=args.max_inflight, read_timeout_s=args.read_timeout)
    service = Service(args.checkpoint, neighbors=args.neighbors, device=args.device, limits=limits,
                      progress=show_progress(args), workers=args.workers)
    return run_server(service, args.host, args.port, access_log=not args.no_access_log)
