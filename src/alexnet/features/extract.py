"""Activations of any named layer for every image of a split, as an N x D ``.npy``.

``extract_features`` runs the checkpoint's network over a prepared split in
eval mode (no dropout; the checkpoint's eval transform: shorter side 256,
centre crop, mean subtraction) and writes

    FILE.npy          N x D features (float32 or float16), written through a
                      memory map, so N x D never has to fit in memory
    FILE.labels.npy   N class indices (int64)
    FILE.ids.npy      N sample ids (int64): the image's position in the split
    FILE.json         what they are: checkpoint, data, split, layer, dtype,
                      class names

each written to a temporary name and renamed, so a kill leaves either the old
file or the new one. ``FILE.json`` is written last: features without it are
incomplete. Nothing is pickled; read them back with :func:`read_features`.

The layer ``pixels`` is the preprocessed input itself, flattened (the
baseline against which the paper compares fc7 distances).

:func:`cached_features` keeps such files in ``CHECKPOINT.features/`` beside
the checkpoint, named by a key of the checkpoint's size and modification
time, the data folder and the transform, so a retrained checkpoint or a
re-prepared data folder is never served stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..engine.checkpoint import load_model
from ..engine.distributed import resolve_device
from ..fileio import atomic_write, file_mode
from ..errors import UserError

PIXELS = "pixels"  # pseudo-layer: the preprocessed input image, flattened
DTYPES = {"float32": np.float32, "float16": np.float16}

__all__ = [
    "PIXELS",
    "FeatureSet",
    "resolve_device",
    "load_model_for_features",
    "eval_loader",
    "layer_function",
    "extract_features",
    "read_features",
    "cached_features",
    "sidecar_paths",
]


@dataclass
class FeatureSet:
    """Features of one split: rows of ``features`` are images ``ids`` with ``labels``."""

    features: np.ndarray  # N x D; a read-only memmap when read from a file
    labels: np.ndarray  # N, int64
    ids: np.ndarray  # N, int64: position of the image in its split
    layer: str
    split: str
    class_names: list[str] = field(default_factory=list)
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.features.shape[0])


# ------------------------------------------------------------------ helpers
def load_model_for_features(checkpoint, device=None) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """``(model in eval mode, checkpoint dict, checkpoint path)`` from a checkpoint path."""
    path = Path(checkpoint)
    model, ckpt = load_model(path, resolve_device(device))
    return model, ckpt, path


def sidecar_paths(out: str | os.PathLike) -> dict[str, Path]:
    """The four files of a feature set written at ``out`` (which ends in ``.npy``)."""
    out = Path(out)
    if out.suffix != ".npy":
        raise UserError(f"feature file must end in .npy, not {out.name!r}")
    base = out.with_suffix("")
    return {
        "features": out,
        "labels": base.with_name(base.name + ".labels.npy"),
        "ids": base.with_name(base.name + ".ids.npy"),
        "meta": base.with_name(base.name + ".json"),
    }


def _class_names(ckpt: dict[str, Any]) -> list[str]:
    names = ckpt.get("class_names") or ckpt.get("classes") or []
    return [str(n) for n in names]


def eval_transform(ckpt: dict[str, Any], model: torch.nn.Module | None = None) -> dict[str, Any]:
    """The checkpoint's eval transform spec, with the crop filled in from the model."""
    spec = dict(ckpt.get("eval_transform") or {})
    if not spec.get("crop"):
        size = (ckpt.get("model", {}).get("options", {}) or {}).get("input_size")
        if size is None and model is not None and hasattr(model, "cfg"):
            size = model.cfg.input_size
        if size is not None:
            spec["crop"] = int(size)
    if not spec.get("resize") and spec.get("crop"):
        spec["resize"] = int(spec["crop"]) if int(spec["crop"]) <= 64 else 256  # the paper's 256 for large inputs
    spec.setdefault("mean", "image")
    spec.setdefault("scale", 1.0)  # written by every checkpoint since schema 2; before, weights saw [0, 1] values
    spec.setdefault("normalize", None)
    return spec


def eval_loader(ckpt: dict[str, Any], data, split: str, *, batch_size: int = 256, workers: int | None = None,
                tta: str = "center", model: torch.nn.Module | None = None):
    """The prepared split ``split`` of ``data`` in the order of its samples, as the checkpoint expects it."""
    from .. import data as data_mod

    data = Path(data)
    if not data.is_dir():
        raise UserError(f"prepared data folder not found: {data}")
    meta = data_mod.read_meta(data)
    splits = meta.get("splits", {})
    if split not in splits:
        raise UserError(f"{data} has no split {split!r}; it has: {', '.join(splits) or 'none'}")
    check_classes(ckpt, meta, data)
    if workers is None:  # small images are read straight from the page cache: processes only cost start-up time
        workers = 0 if int(meta.get("size", 256)) <= 64 else 2
    if workers < 0:
        raise UserError(f"--workers must be 0 or more, not {workers}")
    spec = eval_transform(ckpt, model)
    kwargs = dict(train=False, tta=tta, input_size=spec.get("crop"), num_workers=workers,
                  mean=spec.get("mean", "image"), normalize=spec.get("normalize"), scale=spec["scale"])
    return data_mod.make_loader(data, split, batch_size, **kwargs)


def close_loader(loader) -> None:
    """Stop a loader's worker processes now, not at garbage collection.

    A loader with persistent workers that is still alive when the next
    loader forks its own workers is inherited by them, and its clean-up then
    runs (and fails noisily) in the wrong process. Uses ``loader.close()``
    when the loader has one.
    """
    close = getattr(loader, "close", None)
    if callable(close):
        close()
        return
    dl = getattr(loader, "_loader", None)
    it = getattr(dl, "_iterator", None) if dl is not None else None
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()
    if dl is not None:
        try:
            loader._loader = None
        except AttributeError:
            pass


def check_classes(ckpt: dict[str, Any], meta: dict[str, Any], data) -> None:
    """Refuse a data folder whose classes are not the checkpoint's (labels would be meaningless)."""
    theirs = [str(c) for c in (meta.get("classes") or [])]
    ours = [str(c) for c in (ckpt.get("classes") or [])]
    if ours and theirs and ours != theirs:
        raise UserError(f"{data} has {len(theirs)} classes that differ from the checkpoint's {len(ours)}; "
                        "its labels would not mean the checkpoint's classes")


def layer_function(model: torch.nn.Module, layer: str):
    """``fn(images) -> N x D`` tensor of the activation ``layer`` (or ``pixels``)."""
    if layer == PIXELS:
        return lambda x: x.flatten(1)
    known = model.layer_names() if hasattr(model, "layer_names") else []
    if layer not in known:
        raise UserError(f"unknown layer {layer!r}; known: {', '.join(known + [PIXELS])}")
    penultimate = model.fc_names[-2] if hasattr(model, "fc_names") and len(model.fc_names) >= 2 else None
    if layer == penultimate:  # fc7 of the paper's net: the timm-style path, no tracing
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
    return lambda x: model.extract(x, (layer,))[layer].flatten(1)


def _loader_ids(loader, n: int) -> np.ndarray:
    """Sample ids: the positions of the images in their split, as the loader reports them when it can."""
    indices = getattr(loader, "indices", None)
    if callable(indices):
        try:
            ids = np.asarray(indices(), dtype=np.int64).reshape(-1)
            if ids.shape[0] == n:
                return ids
        except (TypeError, ValueError):
            pass
    return np.arange(n, dtype=np.int64)


# --------------------------------------------------------------- extraction
@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    loader,
    layer: str = "fc7",
    *,
    out: str | os.PathLike | None = None,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    split: str = "",
    meta: dict[str, Any] | None = None,
    class_names: Iterable[str] = (),
    progress: bool = True,
) -> FeatureSet:
    """Run ``model`` over ``loader`` and keep activation ``layer`` of every image.

    With ``out`` the features go straight into a memory-mapped ``.npy``
    (plus labels, ids and a JSON description, see the module docstring) and
    the returned set reads from it; without, they are kept in memory.
    """
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    np_dtype = DTYPES[dtype]
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    fn = layer_function(model, layer)
    n = int(getattr(loader, "num_samples", 0) or 0)
    if n <= 0:
        raise UserError(f"split {split or '?'} has no images")
    paths = sidecar_paths(out) if out is not None else None
    feats = None
    labels = np.empty(n, np.int64)
    tmp = None
    pos = 0
    bar = tqdm(total=n, desc=f"{layer} {split}".strip(), unit="img", disable=not progress, leave=False)
    try:
        for images, targets in loader:
            if images.dim() == 5:  # 10-crop batches: B x 10 x C x H x W, averaged over crops
                b = images.shape[0]
                f = fn(images.flatten(0, 1).to(dev, non_blocking=True)).float().view(b, 10, -1).mean(1)
            else:
                f = fn(images.to(dev, non_blocking=True)).float()
            f = f.cpu().numpy()
            b = f.shape[0]
            if pos + b > n:
                raise RuntimeError(f"loader yielded more than its {n} samples")
            if feats is None:
                shape = (n, f.shape[1])
                if paths is not None:
                    paths["features"].parent.mkdir(parents=True, exist_ok=True)
                    for p in (paths["meta"],):  # an incomplete set must not look complete
                        p.unlink(missing_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{paths['features'].name}.", suffix=".tmp",
                                               dir=paths["features"].parent)
                    os.close(fd)
                    feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np_dtype, shape=shape)
                else:
                    feats = np.empty(shape, np_dtype)
            feats[pos : pos + b] = f
            labels[pos : pos + b] = targets.numpy()
            pos += b
            bar.update(b)
        bar.close()
        if pos != n:
            raise RuntimeError(f"loader yielded {pos} samples, expected {n}")
        ids = _loader_ids(loader, n)
        info = {
            "layer": layer,
            "split": split,
            "count": n,
            "dim": int(feats.shape[1]),
            "dtype": dtype,
            "class_names": list(class_names),
            **(meta or {}),
        }
        if paths is None:
            return FeatureSet(feats, labels, ids, layer, split, info["class_names"], None, info)
        feats.flush()
        del feats
        os.chmod(tmp, file_mode())
        os.replace(tmp, paths["features"])
        tmp = None
        atomic_write(paths["labels"], lambda f: np.save(f, labels, allow_pickle=False))
        atomic_write(paths["ids"], lambda f: np.save(f, ids, allow_pickle=False))
        atomic_write(paths["meta"], lambda f: f.write(json.dumps(info, indent=1).encode()))
    finally:
        bar.close()
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return read_features(paths["features"])


def read_features(path: str | os.PathLike, mmap: bool = True) -> FeatureSet:
    """A feature set written by :func:`extract_features` (memory-mapped, never unpickled)."""
    paths = sidecar_paths(path)
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise UserError(f"incomplete feature set {paths['features']}: missing {', '.join(p.name for p in missing)}")
    try:
        info = json.loads(paths["meta"].read_text())
        feats = np.load(paths["features"], mmap_mode="r" if mmap else None, allow_pickle=False)
        labels = np.load(paths["labels"], allow_pickle=False)
        ids = np.load(paths["ids"], allow_pickle=False)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read feature set {paths['features']}: {str(e).splitlines()[0][:160]}") from None
    if feats.ndim != 2 or len(labels) != feats.shape[0] or len(ids) != feats.shape[0]:
        raise UserError(f"feature set {paths['features']} is inconsistent: {feats.shape} features, "
                        f"{len(labels)} labels, {len(ids)} ids")
    return FeatureSet(feats, labels, ids, info.get("layer", "?"), info.get("split", "?"),
                      list(info.get("class_names", [])), paths["features"], info)


# -------------------------------------------------------------------- cache
def _file_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(checkpoint: Path, data: Path, split: str, layer: str, dtype: str, spec: dict[str, Any]) -> str:
    """16 hex digits naming one feature set: changes when any input changes."""
    data = Path(data).resolve()
    meta = data / "meta.json"
    parts = {
        "v": 1,
        # pixels do not depend on the weights, only on the data and the transform
        "checkpoint": None if layer == PIXELS else _file_stamp(Path(checkpoint)),
        "data": str(data),
        "meta": hashlib.sha256(meta.read_bytes()).hexdigest() if meta.is_file() else None,
        "stats": _file_stamp(data / "stats.npz") if (data / "stats.npz").is_file() else None,
        "split": split,
        "layer": layer,
        "dtype": dtype,
        "transform": {k: v for k, v in spec.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_dir(checkpoint: Path) -> Path:
    """``CHECKPOINT.features/`` beside the checkpoint; a per-user cache when that folder is read-only."""
    checkpoint = Path(checkpoint)
    beside = checkpoint.with_name(checkpoint.name + ".features")
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    tag = hashlib.sha256(str(checkpoint.resolve()).encode()).hexdigest()[:16]
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alexnet" / "features" / tag
    home.mkdir(parents=True, exist_ok=True)
    return home


def cached_features(
    checkpoint,
    data,
    split: str,
    layer: str = "fc7",
    *,
    model: torch.nn.Module | None = None,
    ckpt: dict[str, Any] | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    workers: int | None = None,
    device=None,
    progress: bool = True,
    cache: bool = True,
) -> FeatureSet:
    """Features of ``split`` from the cache beside ``checkpoint``, computing them on a miss.

    ``cache=False`` recomputes into memory and touches no file.
    """
    checkpoint = Path(checkpoint)
    if model is None or ckpt is None:
        model, ckpt, _ = load_model_for_features(checkpoint, device)
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"prepared data folder not found: {data}")
    layer_function(model, layer)  # an unknown layer fails before any work
    spec = eval_transform(ckpt, model)
    names = _class_names(ckpt)
    if cache:
        key = cache_key(checkpoint, data, split, layer, dtype, spec)
        folder = cache_dir(checkpoint)
        out = folder / f"{split}-{layer}-{key}.npy"
        if sidecar_paths(out)["meta"].is_file():
            try:
                return read_features(out)
            except UserError:
                pass  # damaged: recompute below
    loader = eval_loader(ckpt, data, split, batch_size=batch_size, workers=workers, model=model)
    info = {"checkpoint": str(checkpoint), "data": str(data), "transform": spec}
    try:
        if not cache:
            return extract_features(model, loader, layer, dtype=dtype, device=device, split=split, meta=info,
                                    class_names=names, progress=progress)
        fs = extract_features(model, loader, layer, out=out, dtype=dtype, device=device, split=split,
                              meta={**info, "key": key}, class_names=names, progress=progress)
    finally:
        close_loader(loader)
    _drop_stale(folder, f"{split}-{layer}-", key)
    return fs


def _drop_stale(folder: Path, prefix: str, key: str) -> None:
    """Remove this split and layer's cached files made under other keys."""
    for p in folder.glob(f"{prefix}*"):
        rest = p.name[len(prefix):]
        if len(rest) >= 16 and rest[:16] != key and all(c in "0123456789abcdef" for c in rest[:16]):
            try:
                p.unlink()
            except OSError:
                pass
