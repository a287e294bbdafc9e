"""Argument types that check ranges where the number is parsed (argparse reports them in one line)."""

from __future__ import annotations

import argparse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def int_at_least(low: int, high: int | None = None):
    """An ``int`` type for argparse accepting ``low <= n`` (``<= high`` when given)."""

    def parse(text: str) -> int:
        n = _int(text)
        if n < low or (high is not None and n > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, not {n}")
        return n

    parse.__name__ = "int"
    return parse


positive_int = int_at_least(1)
count_int = int_at_least(0)
