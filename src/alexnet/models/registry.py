"""Model registry: ``create(name, **options)`` and ``names()``."""

from __future__ import annotations

from typing import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered."""


def register(name: str):
    """Decorator: register a builder ``fn(**options) -> nn.Module`` under ``name``."""

    def wrap(fn):
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = fn
        fn.model_name = name
        return fn

    return wrap


def names() -> list[str]:
    """Registered model names, in registration order."""
    return list(_BUILDERS)


def create(name: str, **options) -> nn.Module:
    """Build a registered model, e.g. ``create("alexnet", num_classes=10, lrn="off")``."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(names())}") from None
    return builder(**options)
