"""One checkpoint layout, written atomically, read without unpickling code.

A checkpoint is a ``torch.save`` of plain data (tensors, numbers, strings,
lists, dicts) so it loads with ``torch.load(..., weights_only=True)``; a file
that needs anything else (a hostile pickle, say) is refused.

:func:`make_checkpoint` builds the layout (the trainer, ``alexnet convert``
and the tests all go through it) and :func:`save_checkpoint` writes it,
adding ``schema``. Layout (``schema`` 2)::

    schema          2 (1: statistics in [0, 1] units, no eval_transform["scale"])
    model           {"name": str, "options": {num_classes, input_size, ...}}:
                    models.create(name, **options) rebuilds the network
    state_dict      weights of the unwrapped model (no module./_orig_mod. prefixes)
    classes         class ids (folder names or synset ids), index = output unit
    class_names     human-readable names, same order
    eval_transform  the preprocessing the weights expect, a plain dict:
                    {resize, crop, mean, scale, normalize, channels}
                    (alexnet.data.transforms.eval_spec)
    data_stats      {"mean_image": H x W x C, "mean_rgb": C} float32 tensors of
                    the training data in pixel units 0..255 (schema 1: [0, 1]),
                    so prediction needs no prepared data folder; left out when
                    the eval transform normalises without them
    ...             whatever the writer adds:
      trainer       config (the resolved training config, a dict); epoch, step,
                    batch_in_epoch (> 0: saved mid-epoch; the loader skips that
                    many batches on resume), loss_sum, seen (this epoch so
                    far), world_size; optimizer, schedule, scaler, rng (the
                    training state, for --resume); metrics (last and best
                    validation metrics)
      convert       metrics (a note on the source's accuracy), source
"""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import UserError, state_dict_mismatch
from ..fileio import atomic_write, require_file

SCHEMA = 2  # 2: data_stats in pixel units and eval_transform["scale"]; 1: [0, 1] units


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model under DDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def make_checkpoint(name: str, options: dict[str, Any], state_dict: dict[str, torch.Tensor], classes: Sequence[str],
                    class_names: Sequence[str] | None, eval_transform: dict[str, Any],
                    stats: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The layout of the module docstring: model ``name`` built with ``options``, its weights, what its
    outputs mean (``class_names`` default to the ids) and how to feed it (``eval_transform``, and the mean
    image and mean colour of ``stats``, numpy or torch, pixel units); ``extra`` keys are added as they are."""
    ckpt = {
        "model": {"name": name, "options": dict(options)},
        "state_dict": state_dict,
        "classes": list(classes),
        "class_names": list(classes if class_names is None else class_names),
        "eval_transform": eval_transform,
    }
    if stats is not None:
        ckpt["data_stats"] = {key: torch.tensor(np.asarray(stats[key], dtype=np.float32))
                              for key in ("mean_image", "mean_rgb")}
    return {**ckpt, **extra}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plain data only) atomically, adding the schema version."""
    payload = {"schema": SCHEMA, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (or an exported ``.safetensors``); every problem is a one-line :class:`UserError`."""
    path = require_file(path, "checkpoint")
    if path.suffix == ".safetensors":  # written by `alexnet export --format safetensors`
        from .export import load_safetensors

        return load_safetensors(path)
    try:
        with warnings.catch_warnings():  # torch warns about a raw pickle's protocol before refusing it: one line is ours
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # not a refused import: bytes that are no pickle at all
            raise UserError(f"cannot read checkpoint {path}: not a torch checkpoint, or truncated") from None
        raise UserError(f"refusing to load {path}: it holds more than plain tensors and data "
                        f"(loading it would run code from the file)") from None
    except Exception as e:  # truncated, not a torch file, ...
        raise UserError(f"cannot read checkpoint {path}: not a torch checkpoint, or truncated ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path} is not an alexnet checkpoint (no model/state_dict entries)")
    if ckpt.get("schema", 0) > SCHEMA:
        raise UserError(f"{path} has checkpoint schema {ckpt['schema']}; this alexnet reads up to {SCHEMA}: upgrade alexnet")
    return ckpt


def build_model(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Create the checkpoint's model and load its weights (strictly)."""
    from .. import models

    spec = ckpt["model"]
    try:
        model = models.create(spec["name"], **spec.get("options", {}))
    except ValueError as e:
        raise UserError(f"checkpoint names a model this alexnet cannot build: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not fit model {spec['name']}: {state_dict_mismatch(e)}") from None
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)`` from a checkpoint file."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt).to(device).eval()
    return model, ckpt


def check_compatible(ckpt: dict[str, Any], model_name: str, num_classes: int, path: str | os.PathLike = "checkpoint") -> None:
    """Refuse a checkpoint whose model or class count differs from the run's."""
    name = ckpt["model"]["name"]
    if name != model_name:
        raise UserError(f"{path} holds model {name!r}, but this run trains {model_name!r}")
    n = ckpt["model"].get("options", {}).get("num_classes")
    if n is not None and n != num_classes:
        raise UserError(f"{path} has {n} classes, but the data has {num_classes}")
