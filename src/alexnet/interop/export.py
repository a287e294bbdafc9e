"""Weights out of the project: safetensors (+ config.json), ONNX, TorchScript, ``torch.export``.

Every exported file carries what a deployer needs to feed the network, as
strings (JSON values) under these keys: safetensors metadata, ONNX
``metadata_props``, TorchScript and ``torch.export`` extra files::

    format          "alexnet-export/1"
    schema          the checkpoint's schema (2)
    model           {"name": ..., "options": {...}}: models.create(name, **options) rebuilds it
    classes         class ids (folder names or synset ids), index = output unit
    class_names     human-readable names, same order
    eval_transform  resize, crop, mean ("image" | "rgb"), scale, normalize, channels
                    (alexnet.data.transforms.eval_spec): input = (pixel - mean) * scale / 255,
                    or (pixel / 255 - mean) / std when normalize is set; the image is first
                    scaled to shorter side `resize` and centre-squared, and "image" means the
                    mean image (resized to resize x resize) is taken off before the centre crop
    data_stats      {"mean_rgb": [C], "mean_image": ...} in pixel units;
                    mean_image is H x W x C float32: in a .safetensors export the tensor
                    ``mean_image`` of the same file ({"tensor": "mean_image", "shape", "dtype"}),
                    in the programs {"shape", "dtype", "base64"} (little-endian float32)
    input           {"name": "image", "shape": ["batch", C, crop, crop], "output": "logits"}

**safetensors** writes two files: ``OUT.safetensors`` holds the checkpoint's
``state_dict`` under its own keys plus, when the checkpoint has one, the mean
image as the tensor ``mean_image`` (pop it before ``load_state_dict``), and
the keys above as its metadata; ``config.json`` beside it (one export per
folder) holds the same keys as JSON values, plus ``weights`` (the file name),
``weights_sha256`` and ``pretrained_cfg`` (timm's keys: input_size,
interpolation, crop_pct, mean/std in [0, 1] units; see models/pretrained.py).
The weights are written first and config.json last, each atomically, so a
config.json whose sha256 matches describes a complete pair. The pair reads
back as a checkpoint (:func:`alexnet.checkpoint.load_safetensors`; ``load_checkpoint`` does so for
any ``.safetensors`` path, ``models.create(name, checkpoint_path=FILE or
FOLDER)`` too), so every command that takes a checkpoint takes it; a weights
file re-saved without the metadata is read through the config.json that
names it.

The **programs** take ``batch x C x crop x crop`` float32 images (any batch
size) and return logits; none needs this package or its compiled LRN kernel.
ONNX expresses LRN as the standard ``LRN`` operator, one per tower (``Split``
on channels, ``LRN``, ``Concat``): ONNX's LRN, like Caffe's, divides alpha by
the window size, so the exporter writes alpha = (the paper's alpha) x size
(5e-4 for the paper's 1e-4; a model already in alpha/n form keeps its alpha).
TorchScript and ``torch.export`` get LRN as plain tensor ops (``models/lrn.py``).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import models
from ..checkpoint import CONFIG_FILE, FORMAT_TAG, MEAN_IMAGE_KEY, META_KEYS, SCHEMA, load_checkpoint, write_safetensors
from ..engine.inference import eval_transform
from ..errors import UserError
from ..fileio import atomic_write
from ..strict_json import dumps

FORMATS = ("safetensors", "onnx", "torchscript", "torch-export")
SUFFIXES = {"safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".pt", "torch-export": ".pt2"}  # the usual names
INPUT_NAME, OUTPUT_NAME = "image", "logits"


# ---------------------------------------------------------------- metadata
def _array_to_json(t) -> dict:
    a = np.ascontiguousarray(np.asarray(t, dtype=np.float32))
    return {"shape": list(a.shape), "dtype": "float32", "base64": base64.b64encode(a.astype("<f4").tobytes()).decode()}


def _mean_image(ckpt: dict[str, Any]) -> torch.Tensor | None:
    m = (ckpt.get("data_stats") or {}).get("mean_image")
    return None if m is None else torch.as_tensor(np.asarray(m, dtype=np.float32)).contiguous()


def metadata(ckpt: dict[str, Any], model: torch.nn.Module, mean_image_tensor: str | None = None) -> dict[str, str]:
    """The keys of the module doc, as strings, for checkpoint ``ckpt`` of ``model``.

    ``mean_image_tensor``: the name of the tensor that holds the mean image in the same
    file (a .safetensors export); otherwise the mean image is written out in base64.
    """
    spec = eval_transform(ckpt, model)
    stats = ckpt.get("data_stats") or {}
    data_stats = {}
    if stats.get("mean_rgb") is not None:
        data_stats["mean_rgb"] = np.asarray(stats["mean_rgb"], dtype=np.float64).tolist()
    mean_image = _mean_image(ckpt)
    if mean_image is not None:
        data_stats["mean_image"] = (_array_to_json(mean_image) if mean_image_tensor is None else
                                    {"tensor": mean_image_tensor, "shape": list(mean_image.shape), "dtype": "float32"})
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


# ------------------------------------------------------------------ export
def _example(model: torch.nn.Module, spec: dict) -> torch.Tensor:
    # Batch 2, not 1: torch.export would otherwise take the batch size for a constant.
    return torch.randn(2, model.cfg.in_channels, spec["crop"], spec["crop"])


def _batch_dim():
    return ({0: torch.export.Dim("batch")},)


def written_files(fmt: str, out: str | os.PathLike) -> list[Path]:
    """Every file ``export_checkpoint(..., fmt, out)`` writes: ``out``, and config.json beside a safetensors export."""
    out = Path(out)
    return [out, out.parent / CONFIG_FILE] if fmt == "safetensors" else [out]


def _safetensors(model, ckpt, meta, example, out: Path) -> None:
    tensors = {k: v.detach().contiguous() for k, v in ckpt["state_dict"].items()}
    mean_image = _mean_image(ckpt)
    if mean_image is not None:
        tensors[MEAN_IMAGE_KEY] = mean_image
        meta = metadata(ckpt, model, mean_image_tensor=MEAN_IMAGE_KEY)
    config = {k: v if k == "format" else json.loads(v) for k, v in meta.items()}
    pretrained_cfg = models.checkpoint_pretrained_cfg(model, ckpt)
    if pretrained_cfg["mean_image"] is not None:
        pretrained_cfg["mean_image"] = {**config["data_stats"]["mean_image"], "units": "pixels 0..255"}
    for key in ("label_names", "label_descriptions"):  # the file's classes and class_names
        pretrained_cfg.pop(key)
    write_safetensors(out, tensors, meta, {**config, "pretrained_cfg": pretrained_cfg})


# The LRN layers of an ONNX export: a custom op that the exporter translates to ONNX's LRN operator.
@torch.library.custom_op("alexnet::lrn_onnx", mutates_args=())
def _lrn_onnx(x: torch.Tensor, size: int, scale: float, beta: float, k: float, groups: int) -> torch.Tensor:
    from ..models.lrn import local_response_norm

    return local_response_norm(x, size, scale, beta, k, groups)  # scale: the paper's alpha (sum form)


@_lrn_onnx.register_fake
def _(x, size, scale, beta, k, groups):
    return torch.empty_like(x)


class _ONNXLRN(torch.nn.Module):
    """A LocalResponseNorm layer as the ``alexnet::lrn_onnx`` op (sum-form alpha)."""

    def __init__(self, lrn) -> None:
        super().__init__()
        self.size, self.beta, self.k, self.groups = int(lrn.size), float(lrn.beta), float(lrn.k), int(lrn.groups)
        self.scale = float(lrn.alpha / lrn.size if lrn.alpha_per_channel else lrn.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.alexnet.lrn_onnx(x, self.size, self.scale, self.beta, self.k, self.groups)


def _onnx_lrn_translation():
    """``alexnet::lrn_onnx`` in ONNX: per tower (Split on channels) the standard LRN, whose alpha is
    divided by size (ONNX: x / (bias + alpha / size * sum of squares) ** beta), so alpha = scale * size."""
    from onnxscript import opset18 as op

    def lrn(x, size: int, scale: float, beta: float, k: float, groups: int):
        towers = op.Split(x, axis=1, num_outputs=groups) if groups > 1 else [x]
        out = [op.LRN(t, size=size, alpha=scale * size, beta=beta, bias=k) for t in towers]
        return op.Concat(*out, axis=1) if groups > 1 else out[0]

    return {torch.ops.alexnet.lrn_onnx.default: lrn}


def onnx_program(model: torch.nn.Module, example: torch.Tensor):
    """``model`` (not changed) as an ONNX ModelProto, batch dimension free, LRN as ONNX ``LRN`` per tower."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        raise UserError(f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
                        f"pip install onnx onnxscript") from None
    from ..models.lrn import LocalResponseNorm

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LocalResponseNorm):
                setattr(parent, name, _ONNXLRN(child))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=_batch_dim(), external_data=False, verbose=False,
                                    custom_translation_table=_onnx_lrn_translation())
    return program.model_proto


def _onnx(model, ckpt, meta, example, out: Path) -> None:
    proto = onnx_program(model, example)
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    atomic_write(out, proto.SerializeToString())


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
    """Write checkpoint ``checkpoint`` as ``fmt`` (one of :data:`FORMATS`) to ``out`` (and config.json beside a
    safetensors export); returns the metadata written."""
    if fmt not in _WRITERS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "safetensors" and out.suffix != SUFFIXES[fmt]:  # readers (load_checkpoint, models.create) go by it
        raise UserError(f"--out {out}: name a safetensors export *.safetensors (e.g. model.safetensors), "
                        f"so that alexnet's readers know it; config.json is written beside it")
    ckpt = load_checkpoint(checkpoint)
    model = models.from_checkpoint(ckpt).eval()
    meta = metadata(ckpt, model)
    spec = json.loads(meta["eval_transform"])
    with torch.no_grad():
        _WRITERS[fmt](model, ckpt, meta, _example(model, spec), out)
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
