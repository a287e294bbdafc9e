"""Errors that are the user's to fix: the CLI prints them as one line, exit 2."""

from __future__ import annotations

import reprlib
from typing import Any


class UserError(Exception):
    """Bad input: a missing path, a corrupt file, a wrong flag or checkpoint."""


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``...): a file name cannot break the line."""
    return "".join(c.encode("unicode_escape").decode("ascii") if c < " " or c == "\x7f" else c for c in str(text))


def state_dict_mismatch(error: Exception, limit: int = 200) -> str:
    """The first informative line of a ``load_state_dict`` error (torch puts a bare header line first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    details = [line for line in lines if not line.startswith("Error(s) in loading state_dict")] or lines
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return (details[0] if details else type(error).__name__)[:limit] + more


_SHORT = reprlib.Repr()
for _name, _limit in (("maxlevel", 2), ("maxtuple", 4), ("maxlist", 4), ("maxarray", 4), ("maxdict", 4), ("maxset", 4),
                      ("maxfrozenset", 4), ("maxdeque", 4), ("maxstring", 60), ("maxlong", 40), ("maxother", 40)):
    setattr(_SHORT, _name, _limit)


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to a few items per level, two levels and ``limit`` characters: an error line stays
    one short line, and costs little, whatever a recipe's value holds (YAML aliases can nest a value that
    would print as gigabytes, and so can a checkpoint's entries)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
