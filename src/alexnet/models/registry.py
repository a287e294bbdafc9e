"""Model registry: ``create(name, checkpoint_path=None, **options)``, ``from_checkpoint(ckpt)`` and ``names()``."""

from __future__ import annotations

import os
from typing import Any, Callable

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


def create(name: str, checkpoint_path: str | os.PathLike | None = None, **options) -> nn.Module:
    """Build a registered model, e.g. ``create("alexnet", num_classes=10, lrn="off")``.

    ``checkpoint_path``: a trained checkpoint (``.ckpt``), an exported
    ``.safetensors`` file, or a folder holding one (a run's best.ckpt or
    last.ckpt first); the model is built with the options stored there
    (``options`` override them) and its weights loaded, and its
    ``pretrained_cfg`` says how to feed it. Problems with the file are
    one-line :class:`alexnet.errors.UserError`.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(names())}") from None
    if checkpoint_path is not None:
        from .pretrained import load

        return load(name, checkpoint_path, options, builder)
    return builder(**options)


def from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike | None = None, **overrides) -> nn.Module:
    """The model a loaded checkpoint dict describes (:func:`alexnet.checkpoint.load_checkpoint`), weights loaded;
    ``overrides`` replace stored options. Problems are one-line :class:`alexnet.errors.UserError` naming ``path``."""
    from ..checkpoint import build_model

    return build_model(ckpt, create, path, **overrides)
