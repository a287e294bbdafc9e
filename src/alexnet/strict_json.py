"""JSON that every parser reads: no ``NaN`` or ``Infinity`` (they become ``null``)."""

from __future__ import annotations

import json
import math
from typing import Any


def plain(obj: Any) -> Any:
    """``obj`` with non-finite floats as None, numpy scalars as Python numbers, tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        return plain(obj.item())
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`plain` ``(obj)``; refuses anything that would not be strict JSON."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)
