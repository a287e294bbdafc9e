"""The limits of one server: what a request may send and how much the server holds at once.

Kept apart from :mod:`~alexnet.serve.service` so that ``alexnet --help`` can
show the defaults without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UserError

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "Limits"]

DEFAULT_MAX_UPLOAD_BYTES = 8 << 20  # 8 MiB: any photo a phone takes; the body is refused past it, while streaming
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels declared in the header; decoding one takes ~120 MB of RGB


@dataclass(frozen=True)
class Limits:
    """What one request may send, and how much the server holds at once."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES  # body of one request
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height an image may declare
    max_batch: int = 32  # network inputs (views) in one forward pass
    max_wait_ms: float = 5.0  # how long a lone request waits for others to join its batch
    max_inflight: int = 64  # requests (so images) held at once; the next is answered 503
    read_timeout_s: float = 15.0  # a client that has not sent its whole body by then is answered 408
    max_k: int = 50  # neighbours one request may ask for

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_pixels", "max_batch", "max_inflight", "max_k"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.read_timeout_s <= 0:
            raise UserError("--max-wait-ms must be 0 or more and --read-timeout positive")

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)
