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

    schema          2, the only layout this alexnet reads (a dict not yet saved has none)
    model           {"name": str, "options": {num_classes, input_size, ...}}:
                    models.create(name, **options) rebuilds the network
    state_dict      weights of the unwrapped model (no module./_orig_mod. prefixes)
    classes         class ids (folder names or synset ids), index = output unit
    class_names     human-readable names, same order
    eval_transform  the preprocessing the weights expect, a plain dict:
                    {resize, crop, mean, scale, normalize, channels}
                    (alexnet.data.transforms.eval_spec)
    data_stats      {"mean_image": H x W x C, "mean_rgb": C} float32 tensors of
                    the training data in pixel units 0..255,
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

from .errors import UserError, short_repr, state_dict_mismatch
from .fileio import atomic_write, require_file
from .strict_json import dumps

SCHEMA = 2  # data_stats in pixel units and eval_transform["scale"]; no other layout is read
RUN_CHECKPOINTS = ("best.ckpt", "last.ckpt")  # what `alexnet train --out RUN` writes

# An exported .safetensors file (alexnet.interop.export writes it) carries these keys as JSON strings in its
# metadata, and the config.json beside it holds the same as JSON values.
FORMAT_TAG = "alexnet-export/1"
META_KEYS = ("format", "schema", "model", "classes", "class_names", "eval_transform", "data_stats", "input")
CONFIG_FILE = "config.json"  # beside a .safetensors export
MEAN_IMAGE_KEY = "mean_image"  # the mean image's tensor in a .safetensors export (no module's key: those hold a dot)
MAX_CONFIG_BYTES = 64 << 20  # a config.json beside a .safetensors export


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
        ckpt = load_safetensors(path)
        check_entries(ckpt, path)
        return ckpt
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
    check_entries(ckpt, path)
    return ckpt


# ------------------------------------------------------- what a file may say
MAX_CLASSES = 100_000  # class ids and names a checkpoint may list
MAX_NAME = 1_000  # characters of one class id or name
MAX_SIDE = 4_096  # pixels: the largest eval resize, and the largest mean image side
_SCALARS = (bool, int, float, str, type(None))


def _fail(path, what: str) -> None:
    raise UserError(f"{path}: {what}")


def _check_strings(ckpt: dict, key: str, path) -> None:
    values = ckpt.get(key)
    if values is None:
        return
    if not isinstance(values, (list, tuple)) or len(values) > MAX_CLASSES:
        _fail(path, f"{key} must be a list of at most {MAX_CLASSES} strings, not {short_repr(values)}")
    for v in values:
        if not isinstance(v, (str, int)) or isinstance(v, bool) or len(str(v)) > MAX_NAME:
            _fail(path, f"{key} must hold strings of at most {MAX_NAME} characters, not {short_repr(v)}")


def _check_transform(spec: Any, path) -> None:
    if spec is None:
        return
    if not isinstance(spec, dict):
        _fail(path, f"eval_transform must be a dict, not {short_repr(spec)}")
    for key in ("crop", "resize"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_SIDE):
            _fail(path, f"eval_transform {key} must be a whole number of pixels in [1, {MAX_SIDE}], not {short_repr(v)}")
    crop, resize = spec.get("crop"), spec.get("resize")
    if crop and resize and not crop <= resize <= 2 * crop:
        _fail(path, f"eval_transform resize {resize} must be from its crop {crop} to twice that")
    if spec.get("mean", "image") not in ("image", "rgb"):
        _fail(path, f"eval_transform mean must be 'image' or 'rgb', not {short_repr(spec.get('mean'))}")
    scale = spec.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale <= 1e6:
        _fail(path, f"eval_transform scale must be a positive number, not {short_repr(scale)}")
    norm = spec.get("normalize")
    if norm is not None:
        ok = isinstance(norm, dict) and all(
            isinstance(norm.get(k), (list, tuple)) and 1 <= len(norm[k]) <= 64
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in norm[k]) for k in ("mean", "std"))
        if not ok or any(x <= 0 for x in norm["std"]):
            _fail(path, f"eval_transform normalize must be {{mean: [numbers], std: [positive numbers]}}, not {short_repr(norm)}")


def _check_stats(stats: Any, path) -> None:
    if stats is None:
        return
    if not isinstance(stats, dict):
        _fail(path, f"data_stats must be a dict, not {short_repr(stats)}")
    image, rgb = stats.get("mean_image"), stats.get("mean_rgb")
    if image is not None:
        shape = tuple(getattr(image, "shape", ()))
        if len(shape) != 3 or not all(1 <= d <= MAX_SIDE for d in shape[:2]) or shape[2] not in range(1, 65):
            _fail(path, f"data_stats mean_image must be H x W x C (sides up to {MAX_SIDE}), not of shape {short_repr(shape)}")
    if rgb is not None and (len(tuple(getattr(rgb, "shape", ()))) != 1 or not 1 <= rgb.shape[0] <= 64):
        _fail(path, f"data_stats mean_rgb must be one value per channel, not of shape {short_repr(tuple(getattr(rgb, 'shape', ())))}")


def check_entries(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> None:
    """Refuse, in one line naming ``path``, a checkpoint whose entries have the wrong types or sizes, before
    anything is built from them: the model entry, the class ids and names, the eval transform, the data
    statistics, the schema. Sizes that depend on the model (the class count) are checked by :func:`build_model`."""
    schema = ckpt.get("schema", SCHEMA)  # make_checkpoint's dict has none until save_checkpoint adds it
    if not isinstance(schema, int) or isinstance(schema, bool):
        _fail(path, f"schema must be a whole number, not {short_repr(schema)}")
    if schema > SCHEMA:
        _fail(path, f"checkpoint schema {schema}; this alexnet reads up to {SCHEMA}: upgrade alexnet")
    if schema < SCHEMA:
        _fail(path, f"checkpoint schema {schema} (statistics in [0, 1] units) is not supported; this alexnet reads "
                    f"schema {SCHEMA}: train or convert the weights again")
    spec = ckpt["model"]
    options = spec.get("options", {}) if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(options, dict):
        _fail(path, f"its model entry must be {{name: str, options: {{...}}}}, not {short_repr(spec)}")
    for key, value in options.items():
        if not isinstance(key, str) or not isinstance(value, _SCALARS):
            _fail(path, f"model option {short_repr(key)} must be a number, string or bool, not {short_repr(value)}")
    if not isinstance(ckpt["state_dict"], dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["state_dict"].items()):
        _fail(path, "its state_dict must map names to tensors")
    _check_strings(ckpt, "classes", path)
    _check_strings(ckpt, "class_names", path)
    classes, names = ckpt.get("classes") or [], ckpt.get("class_names") or []
    if classes and names and len(classes) != len(names):
        _fail(path, f"{len(classes)} classes but {len(names)} class names")
    _check_transform(ckpt.get("eval_transform"), path)
    _check_stats(ckpt.get("data_stats"), path)


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


def _fit_error(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state_dict`` from loading into ``model`` (shapes and names only), or None."""
    want = model.state_dict()
    missing = [k for k in want if k not in state_dict]
    unexpected = [k for k in state_dict if k not in want]
    sizes = [f"size mismatch for {k}: the checkpoint has {list(state_dict[k].shape)}, the model {list(want[k].shape)}"
             for k in want if k in state_dict and tuple(state_dict[k].shape) != tuple(want[k].shape)]
    problems = sizes + ([f"missing keys {short_repr(missing)}"] if missing else []) + (
        [f"unexpected keys {short_repr(unexpected)}"] if unexpected else [])
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def build_model(ckpt: dict[str, Any], create: Callable[..., torch.nn.Module], path: str | os.PathLike | None = None,
                **overrides: Any) -> torch.nn.Module:
    """The checkpoint's model, built by ``create(name, **options)`` (``overrides`` replace stored options),
    with its weights loaded strictly. Every problem is a one-line :class:`UserError` (naming ``path``).

    The network is first built on the meta device (shapes, no memory) and compared with the weights, so a
    checkpoint whose options describe a network larger than its own tensors is refused before anything
    is allocated."""
    where = f"checkpoint {path}" if path is not None else "checkpoint"
    check_entries(ckpt, path if path is not None else "checkpoint")
    name, options = ckpt["model"]["name"], {**ckpt["model"].get("options", {}), **overrides}
    try:
        with torch.device("meta"):
            probe = create(name, **options)
    except (ValueError, TypeError, OverflowError) as e:
        raise UserError(f"{where} names a model this alexnet cannot build: {str(e)[:300]}") from None
    opts = f" with options {short_repr(overrides, 200)}" if overrides else ""
    problem = _fit_error(probe, ckpt["state_dict"])
    if problem:
        raise UserError(f"{where}: its weights do not fit model {name}{opts}: {problem}")
    n = getattr(probe, "num_classes", None)
    classes = ckpt.get("classes") or []
    if n is not None and classes and len(classes) != n and "num_classes" not in overrides:
        raise UserError(f"{where} lists {len(classes)} classes for a model with {n} outputs")
    model = create(name, **options)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise UserError(f"{where}: its weights do not fit model {name}{opts}: {state_dict_mismatch(e)}") from None
    return model


def check_compatible(ckpt: dict[str, Any], model_name: str, num_classes: int, path: str | os.PathLike = "checkpoint",
                     classes: Sequence[str] | None = None) -> None:
    """Refuse a checkpoint whose model, class count or class ids differ from the run's (``classes``: the
    data's ids, index = label); the error names the first class that differs."""
    name = ckpt["model"]["name"]
    if name != model_name:
        raise UserError(f"{path} holds model {name!r}, but this run trains {model_name!r}")
    n = ckpt["model"].get("options", {}).get("num_classes")
    if n is not None and n != num_classes:
        raise UserError(f"{path} has {n} classes, but the data has {num_classes}")
    theirs = [str(c) for c in ckpt.get("classes") or []]
    if classes is not None and theirs:
        ours = [str(c) for c in classes]
        if ours != theirs:
            i = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            a = short_repr(theirs[i]) if i < len(theirs) else "nothing"
            b = short_repr(ours[i]) if i < len(ours) else "nothing"
            raise UserError(f"{path} was trained on other classes: output {i} is {a} there and {b} in the data; "
                            "resuming would train that unit as another class")

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
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise UserError(f"{path}: damaged alexnet metadata ({type(e).__name__}: {str(e)[:200]})") from None
    if ckpt["schema"] > SCHEMA:
        raise UserError(f"{path} has checkpoint schema {ckpt['schema']}; this alexnet reads up to {SCHEMA}: upgrade alexnet")
    return ckpt


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_beside(path: Path, own_metadata: bool) -> dict[str, str] | None:
    """The metadata strings of the config.json beside ``path`` that names it as its weights, if there is one.

    Its ``weights_sha256`` is checked: where the file carries its own metadata (an export pair), a
    difference is an error; weights re-saved without metadata (fine-tuned by other code) differ by
    design, and load with a warning."""
    config = path.parent / CONFIG_FILE
    if not config.is_file():
        return None
    if config.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{config}: {config.stat().st_size} bytes; a config.json is at most {MAX_CONFIG_BYTES}")
    try:
        values = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{config}: not a readable JSON file ({type(e).__name__})") from None
    if not isinstance(values, dict) or values.get("weights") != path.name or values.get("format") != FORMAT_TAG:
        return None
    want = values.get("weights_sha256")
    if want is not None and _sha256(path) != want:
        if own_metadata:  # the file says it is an export, and its config.json describes other bytes
            raise UserError(f"{path}: its sha256 differs from the weights_sha256 that {config} records "
                            "(the weights were changed or damaged after export)")
        warnings.warn(f"{path} is not the file exported with {config} (sha256 differs): its weights are "
                      f"read with that config.json's classes and transform", UserWarning, stacklevel=3)
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
        meta = _config_beside(path, own_metadata=False) or meta
    else:
        _config_beside(path, own_metadata=True)  # an export pair: its config.json's sha256 must match
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
