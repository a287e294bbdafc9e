"""Checked values: a key's type, its allowed values or range, and the one-line error that names them.

The training config (:mod:`alexnet.engine.config`) and the model options
(:mod:`alexnet.models.options`) check every value they take through
:func:`check_value`, so a recipe, a ``--set``, ``models.create(...)`` and a
checkpoint's stored options are refused in the same words: the key, what it
must be, and the value (cut short). The error is a :class:`BadValue`, both a
:class:`~alexnet.errors.UserError` (the CLI prints it as one line) and a
``ValueError`` (what the model factory raises).
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from typing import Any, Callable

from .errors import UserError, short_repr

Limits = tuple[Callable[[Any], bool], str]  # (test, what the error says the value must be)


class BadValue(UserError, ValueError):
    """A value of the wrong type, not among the allowed ones, or out of range."""


class _NotFinite(BadValue):
    """A float key given NaN, an infinity, or an int no float holds: said as such, also for ``float | None``."""


def value_range(lo=None, hi=None, *, above: bool = False, below: bool = False) -> Limits:
    """(test, words) for ``lo <= v <= hi`` (``above``: ``lo < v``; ``below``: ``v < hi``; None: no bound)."""
    def test(v) -> bool:
        return ((lo is None or (v > lo if above else v >= lo))
                and (hi is None or (v < hi if below else v <= hi)))

    def num(x) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    words = []
    if lo is not None:
        words.append(f"{'greater than' if above else 'at least'} {num(lo)}")
    if hi is not None:
        words.append(f"{'below' if below else 'at most'} {num(hi)}")
    return test, " and ".join(words)


def show(value: Any) -> str:
    """``value`` for an error line: a long number cut short."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def check_type(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` (bool, int, float, str or a union of them and None) or raise BadValue naming ``key``."""
    if isinstance(tp, (types.UnionType,)) or typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return check_type(key, value, a)
            except _NotFinite:
                raise
            except BadValue:
                pass
        names = " or ".join("null" if a is type(None) else a.__name__ for a in args)
        raise BadValue(f"{key} must be {names}, not {short_repr(value)}")
    if tp is float and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and not math.isfinite(number):
            raise _NotFinite(f"{key} must be a finite number, not {short_repr(value)}")
    ok = (  # a numpy integer is an int, and a numpy float a float (models.create's callers pass them)
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, numbers.Integral) and not isinstance(value, bool))
        or (tp is float and isinstance(value, numbers.Real) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise BadValue(f"{key} must be {tp.__name__}, not {type(value).__name__} {short_repr(value)}")
    if tp is int:
        value = int(value)
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an int past 1.8e308
            raise _NotFinite(f"{key} must be a finite number, not {show(value)}") from None
        if not math.isfinite(value):
            raise _NotFinite(f"{key} must be a finite number, not {value}")
    return value


def choice_words(choices: tuple) -> str:
    """The allowed values as a recipe spells them (null, true, false)."""
    return ", ".join("null" if c is None else str(c).lower() if isinstance(c, bool) else str(c) for c in choices)


def check_value(key: str, value: Any, tp: Any, choices: tuple | None = None, limits: Limits | None = None) -> Any:
    """``value`` checked against its type ``tp``, then its ``choices`` (a bool is not 1) or its ``limits``
    (None passes them: a ``| None`` type already let it in); a BadValue naming ``key`` otherwise."""
    value = check_type(key, value, tp)
    if choices is not None and not any(value == c and type(value) is type(c) for c in choices):
        raise BadValue(f"{key} must be one of {choice_words(choices)}, not {show(repr(value))}")
    if limits is not None and value is not None and not limits[0](value):
        raise BadValue(f"{key} must be {limits[1]}, not {show(repr(value) if isinstance(value, str) else value)}")
    return value
