"""Weights out of the project: safetensors, ONNX, TorchScript, ``torch.export``.

Every exported file carries what a deployer needs to feed the network, as
strings (JSON values) under these keys: safetensors metadata, ONNX
``metadata_props``, TorchScript and ``torch.export`` extra files::

    format          "alexnet-export/1"
    schema          the checkpoint's schema (2: statistics in pixel units)
    model           {"name": ..., "options": {...}}: models.create(name, **options) rebuilds it
    classes         class ids (folder names or synset ids), index = output unit
    class_names     human-readable names, same order
    eval_transform  resize, crop, mean ("image" | "rgb"), scale, normalize, channels
                    (alexnet.data.transforms.eval_spec): input = (pixel - mean) * scale / 255,
                    or (pixel / 255 - mean) / std when normalize is set; the image is first
                    scaled to shorter side `resize` and centre-squared, and "image" means the
                    mean image (resized to resize x resize) is taken off before the centre crop
    data_stats      {"mean_rgb": [C], "mean_image": {"shape", "dtype", "base64"}} in pixel units
                    (schema 1: [0, 1] units); base64 of little-endian float32, H x W x C
    input           {"name": "image", "shape": ["batch", C, crop, crop], "output": "logits"}

The programs take ``batch x C x crop x crop`` float32 images (any batch size)
and return logits. LRN is exported as plain tensor ops (``models/lrn.py``), so
no program needs this package or its compiled kernel. A ``.safetensors`` file
written here holds exactly the checkpoint's ``state_dict`` (it loads into
``models.create(...)`` as is) and reads back as a checkpoint
(:func:`load_safetensors`; ``load_checkpoint`` does so for any ``.safetensors``
path), so every command that takes a checkpoint takes it.
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_write, atomic_write_bytes, require_file
from ..strict_json import dumps
from .checkpoint import SCHEMA, build_model, load_checkpoint
from .inference import eval_transform

FORMATS = ("safetensors", "onnx", "torchscript", "torch-export")
SUFFIXES = {"safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".pt", "torch-export": ".pt2"}  # the usual names
FORMAT_TAG = "alexnet-export/1"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
META_KEYS = ("format", "schema", "model", "classes", "class_names", "eval_transform", "data_stats", "input")


# ---------------------------------------------------------------- metadata
def _array_to_json(t) -> dict:
    a = np.ascontiguousarray(np.asarray(t, dtype=np.float32))
    return {"shape": list(a.shape), "dtype": "float32", "base64": base64.b64encode(a.astype("<f4").tobytes()).decode()}


def _array_from_json(d: dict) -> torch.Tensor:
    a = np.frombuffer(base64.b64decode(d["base64"]), dtype="<f4").reshape(d["shape"])
    return torch.from_numpy(a.copy())


def metadata(ckpt: dict[str, Any], model: torch.nn.Module) -> dict[str, str]:
    """The keys of the module doc, as strings, for checkpoint ``ckpt`` of ``model``."""
    spec = eval_transform(ckpt, model)
    stats = ckpt.get("data_stats") or {}
    data_stats = {}
    if stats.get("mean_rgb") is not None:
        data_stats["mean_rgb"] = np.asarray(stats["mean_rgb"], dtype=np.float64).tolist()
    if stats.get("mean_image") is not None:
        data_stats["mean_image"] = _array_to_json(stats["mean_image"])
    channels = int(model.cfg.in_channels)
    values = {
        "format": FORMAT_TAG,
        "schema": int(ckpt.get("schema", SCHEMA)),
        "model": ckpt["model"],
        "classes": [str(c) for c in ckpt.get("classes") or []],
        "class_names": [str(c) for c in ckpt.get("class_names") or ckpt.get("classes") or []],
        "eval_transform": spec,
        "data_stats": data_stats,
        "input": {"name": INPUT_NAME, "shape": ["batch", channels, spec["crop"], spec["crop"]], "output": OUTPUT_NAME},
    }
    return {k: v if isinstance(v, str) else dumps(v) for k, v in values.items()}


def checkpoint_from_metadata(meta: dict[str, str], state_dict: dict[str, torch.Tensor], path) -> dict[str, Any]:
    """The checkpoint dict (model, weights, classes, transform, statistics) that :func:`metadata` describes."""
    if meta.get("format") != FORMAT_TAG:
        raise UserError(f"{path} carries no alexnet metadata (not written by `alexnet export`); "
                        f"for torchvision weights use `alexnet convert torchvision`")
    try:
        values = {k: json.loads(v) for k, v in meta.items() if k != "format"}
        stats = values.get("data_stats") or {}
        data_stats = {}
        if "mean_rgb" in stats:
            data_stats["mean_rgb"] = torch.tensor(stats["mean_rgb"], dtype=torch.float32)
        if "mean_image" in stats:
            data_stats["mean_image"] = _array_from_json(stats["mean_image"])
        ckpt = {"schema": int(values["schema"]), "model": values["model"], "state_dict": state_dict,
                "classes": values["classes"], "class_names": values["class_names"],
                "eval_transform": values["eval_transform"], "data_stats": data_stats}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: damaged alexnet metadata ({type(e).__name__}: {e})") from None
    if ckpt["schema"] > SCHEMA:
        raise UserError(f"{path} has checkpoint schema {ckpt['schema']}; this alexnet reads up to {SCHEMA}: upgrade alexnet")
    return ckpt


def load_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint dict from a ``.safetensors`` file written by :func:`export_checkpoint`."""
    from safetensors import safe_open

    path = require_file(path, "checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # truncated, not safetensors
        raise UserError(f"cannot read {path}: not a safetensors file, or truncated ({type(e).__name__})") from None
    return checkpoint_from_metadata(meta, state_dict, path)


# ------------------------------------------------------------------ export
def _example(model: torch.nn.Module, spec: dict) -> torch.Tensor:
    # Batch 2, not 1: torch.export would otherwise take the batch size for a constant.
    return torch.randn(2, model.cfg.in_channels, spec["crop"], spec["crop"])


def _batch_dim():
    return ({0: torch.export.Dim("batch")},)


def _safetensors(model, ckpt, meta, example, out: Path) -> None:
    from safetensors.torch import save

    weights = {k: v.detach().contiguous() for k, v in ckpt["state_dict"].items()}
    atomic_write_bytes(out, save(weights, metadata=meta))


def _onnx(model, ckpt, meta, example, out: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        raise UserError(f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
                        f"pip install onnx onnxscript") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=_batch_dim(), external_data=False, verbose=False)
    proto = program.model_proto
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    atomic_write_bytes(out, proto.SerializeToString())


def _torchscript(model, ckpt, meta, example, out: Path) -> None:
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export; shape checks trace as constants
        warnings.simplefilter("ignore")
        program = torch.jit.trace(model, example)
        atomic_write(out, lambda f: torch.jit.save(program, f, _extra_files=meta))


def _torch_export(model, ckpt, meta, example, out: Path) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim())
    atomic_write(out, lambda f: torch.export.save(program, f, extra_files=meta))


_WRITERS = {"safetensors": _safetensors, "onnx": _onnx, "torchscript": _torchscript, "torch-export": _torch_export}


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike) -> dict[str, str]:
    """Write checkpoint ``checkpoint`` as ``fmt`` (one of :data:`FORMATS`) to ``out``; returns the metadata written."""
    if fmt not in _WRITERS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt).eval()
    meta = metadata(ckpt, model)
    spec = json.loads(meta["eval_transform"])
    with torch.no_grad():
        _WRITERS[fmt](model, ckpt, meta, _example(model, spec), Path(out))
    return meta


def read_metadata(path: str | os.PathLike, fmt: str) -> dict[str, str]:
    """The metadata strings of an exported file (what a deployer reads; used by the tests)."""
    path = str(path)
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    if fmt == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(path).metadata_props}
    files = dict.fromkeys(META_KEYS, "")
    if fmt == "torchscript":
        with warnings.catch_warnings():  # TorchScript's deprecation
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(path, _extra_files=files)
    else:
        with open(path, "rb") as f:  # a path not ending in .pt2 would draw torch's warning
            torch.export.load(f, extra_files=files)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in files.items()}
