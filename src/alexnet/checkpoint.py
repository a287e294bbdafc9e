"""Checkpoint files: the one module that reads and writes ``.ckpt`` and ``.safetensors`` weights.

Everything that takes trained weights goes through here: ``models.create(name,
checkpoint_path=...)``, :class:`alexnet.engine.inference.Checkpoint`, the
trainer, ``alexnet export`` and the converters. This module sits below
:mod:`alexnet.models` and :mod:`alexnet.engine` and imports neither: it builds
the network a checkpoint describes with the model factory it is handed
(:func:`build_model`; :func:`alexnet.models.from_checkpoint` hands it
``models.create``).

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

import base64
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import UserError, state_dict_mismatch
from .fileio import atomic_write, require_file
from .strict_json import dumps

SCHEMA = 2  # 2: data_stats in pixel units and eval_transform["scale"]; 1: [0, 1] units
RUN_CHECKPOINTS = ("best.ckpt", "last.ckpt")  # what `alexnet train --out RUN` writes

# An exported .safetensors file (alexnet.interop.export writes it) carries these keys as JSON strings in its
# metadata, and the config.json beside it holds the same as JSON values.
FORMAT_TAG = "alexnet-export/1"
META_KEYS = ("format", "schema", "model", "classes", "class_names", "eval_transform", "data_stats", "input")
CONFIG_FILE = "config.json"  # beside a .safetensors export
MEAN_IMAGE_KEY = "mean_image"  # the mean image's tensor in a .safetensors export (no module's key: those hold a dot)


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


def weights_file(path: str | os.PathLike) -> Path:
    """The checkpoint a path names: a file, or in a folder a run's best.ckpt / last.ckpt or its one .safetensors."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in RUN_CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    what = f"{len(found)} .safetensors files" if found else "no best.ckpt, last.ckpt or .safetensors file"
    raise UserError(f"checkpoint folder {path} holds {what}: name the file")


def build_model(ckpt: dict[str, Any], create: Callable[..., torch.nn.Module], path: str | os.PathLike | None = None,
                **overrides: Any) -> torch.nn.Module:
    """The checkpoint's model, built by ``create(name, **options)`` (``overrides`` replace stored options),
    with its weights loaded strictly. Every problem is a one-line :class:`UserError` (naming ``path``)."""
    where = f"checkpoint {path}" if path is not None else "checkpoint"
    spec = ckpt["model"]
    name = spec.get("name") if isinstance(spec, dict) else None
    options = spec.get("options", {}) if isinstance(spec, dict) else None
    if not isinstance(name, str) or not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise UserError(f"{where} names a model this alexnet cannot build: its model entry is not "
                        "{name: str, options: {str: value}}")
    try:
        model = create(name, **{**options, **overrides})
    except (ValueError, TypeError) as e:
        raise UserError(f"{where} names a model this alexnet cannot build: {str(e)[:300]}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        opts = f" with options {overrides}" if overrides else ""
        raise UserError(f"{where}: its weights do not fit model {name}{opts}: {state_dict_mismatch(e)}") from None
    return model


def check_compatible(ckpt: dict[str, Any], model_name: str, num_classes: int, path: str | os.PathLike = "checkpoint") -> None:
    """Refuse a checkpoint whose model or class count differs from the run's."""
    name = ckpt["model"]["name"]
    if name != model_name:
        raise UserError(f"{path} holds model {name!r}, but this run trains {model_name!r}")
    n = ckpt["model"].get("options", {}).get("num_classes")
    if n is not None and n != num_classes:
        raise UserError(f"{path} has {n} classes, but the data has {num_classes}")


# -------------------------------------------------------------- safetensors
def _array_from_json(d: dict) -> torch.Tensor:
    a = np.frombuffer(base64.b64decode(d["base64"]), dtype="<f4").reshape(d["shape"])
    return torch.from_numpy(a.copy())


def checkpoint_from_metadata(meta: dict[str, str], state_dict: dict[str, torch.Tensor], path) -> dict[str, Any]:
    """The checkpoint dict (model, weights, classes, transform, statistics) that :func:`metadata` describes.

    A mean image stored as a tensor of the file is taken out of ``state_dict``.
    """
    if meta.get("format") != FORMAT_TAG:
        raise UserError(f"{path} carries no alexnet metadata (not written by `alexnet export`, and no {CONFIG_FILE} "
                        f"beside it names it); for torchvision weights use `alexnet convert torchvision`")
    state_dict = dict(state_dict)
    try:
        values = {k: json.loads(v) for k, v in meta.items() if k in META_KEYS and k != "format"}
        stats = values.get("data_stats") or {}
        data_stats = {}
        if "mean_rgb" in stats:
            data_stats["mean_rgb"] = torch.tensor(stats["mean_rgb"], dtype=torch.float32)
        if "mean_image" in stats:
            ref = stats["mean_image"]
            if "tensor" in ref:
                if ref["tensor"] not in state_dict:
                    raise KeyError(f"mean image tensor {ref['tensor']!r} missing from the weights")
                data_stats["mean_image"] = state_dict.pop(ref["tensor"]).float()
            else:
                data_stats["mean_image"] = _array_from_json(ref)
        ckpt = {"schema": int(values["schema"]), "model": values["model"], "state_dict": state_dict,
                "classes": values["classes"], "class_names": values["class_names"],
                "eval_transform": values["eval_transform"], "data_stats": data_stats}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: damaged alexnet metadata ({type(e).__name__}: {e})") from None
    if ckpt["schema"] > SCHEMA:
        raise UserError(f"{path} has checkpoint schema {ckpt['schema']}; this alexnet reads up to {SCHEMA}: upgrade alexnet")
    return ckpt


def _config_beside(path: Path) -> dict[str, str] | None:
    """The metadata strings of the config.json beside ``path`` that names it as its weights, if there is one."""
    config = path.parent / CONFIG_FILE
    if not config.is_file():
        return None
    try:
        values = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{config}: not a readable JSON file ({type(e).__name__})") from None
    if not isinstance(values, dict) or values.get("weights") != path.name or values.get("format") != FORMAT_TAG:
        return None
    return {k: v if k == "format" else dumps(v) for k, v in values.items() if k in META_KEYS}


def load_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint dict from a ``.safetensors`` file written by :func:`export_checkpoint`: its own
    metadata, or (the weights re-saved without it) that of the config.json beside it naming it."""
    from safetensors import safe_open

    path = require_file(path, "checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # truncated, not safetensors
        raise UserError(f"cannot read {path}: not a safetensors file, or truncated ({type(e).__name__})") from None
    if meta.get("format") != FORMAT_TAG:
        meta = _config_beside(path) or meta
    return checkpoint_from_metadata(meta, state_dict, path)


def write_safetensors(out: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, str],
                      config: dict[str, Any]) -> None:
    """Write ``tensors`` with metadata strings ``meta`` to ``out`` and ``config`` (JSON values) as the
    config.json beside it, adding ``weights`` and ``weights_sha256``. The weights go first and config.json
    last, each atomically, so a config.json whose sha256 matches describes a complete pair."""
    import hashlib

    from safetensors.torch import save

    out = Path(out)
    data = save(tensors, metadata=meta)
    config = {**config, "weights": out.name, "weights_sha256": hashlib.sha256(data).hexdigest()}
    atomic_write(out, data)
    atomic_write(out.parent / CONFIG_FILE, (dumps(config, indent=1) + "\n").encode())
