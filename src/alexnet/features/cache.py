"""Feature sets cached beside their checkpoint.

:func:`cached_features` keeps the files of :mod:`alexnet.features.store` in
``CHECKPOINT.features/`` beside the checkpoint (a per-user cache when that
folder cannot be written), named by a key of the checkpoint's size and
modification time, the data folder and the transform, so a retrained
checkpoint or a re-prepared data folder is never served stale features.

The folder keeps ``manifest.json``, the names of the files the cache wrote
there: stale sets are removed from that list alone, so a file someone else
put there is never deleted. A cache folder that is a symbolic link is
refused rather than written through.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import closing
from pathlib import Path
from typing import Any

from ..engine.inference import Checkpoint
from ..errors import UserError
from ..fileio import atomic_write
from .extract import PIXELS, extract_features, layer_function
from .store import FeatureSet, read_features, sidecar_paths

__all__ = ["cache_dir", "cache_key", "cached_features"]


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
    if os.path.islink(beside):
        raise UserError(f"feature cache {beside} is a symbolic link: refusing to write through it "
                        f"(remove the link, or pass --no-cache)")
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
    dtype: str = "float32",
    batch_size: int = 256,
    workers: int | None = None,
    device=None,
    progress: bool = True,
    cache: bool = True,
) -> FeatureSet:
    """Features of ``split`` from the cache beside ``checkpoint`` (a path or a
    :class:`~alexnet.engine.inference.Checkpoint`), computing them on a miss.

    ``cache=False`` recomputes into memory and touches no file.
    """
    ck = Checkpoint.load(checkpoint, device)
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"prepared data folder not found: {data}")
    layer_function(ck.model, layer)  # an unknown layer fails before any work
    if cache:
        key = cache_key(ck.path, data, split, layer, dtype, ck.transform)
        folder = cache_dir(ck.path)
        out = folder / f"{split}-{layer}-{key}.npy"
        if sidecar_paths(out)["meta"].is_file():
            try:
                return read_features(out)
            except UserError:
                pass  # damaged: recompute below
    info = {"checkpoint": str(ck.path), "data": str(data), "transform": ck.transform}
    kw = dict(dtype=dtype, device=ck.device, split=split, class_names=ck.class_names, progress=progress)
    with closing(ck.eval_loader(data, split, batch_size=batch_size, workers=workers)) as loader:
        if not cache:
            return extract_features(ck.model, loader, layer, meta=info, **kw)
        # listed before they exist: a kill half way leaves nothing of ours unlisted
        _remember(folder, [p.name for p in sidecar_paths(out).values()])
        fs = extract_features(ck.model, loader, layer, out=out, meta={**info, "key": key}, **kw)
    _drop_stale(folder, f"{split}-{layer}-", key)
    return fs


MANIFEST = "manifest.json"


def _written(folder: Path) -> list[str]:
    """The names the cache wrote in ``folder`` (its manifest; none when it has none or it cannot be read)."""
    try:
        names = json.loads((folder / MANIFEST).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..")]


def _save_manifest(folder: Path, names: list[str]) -> None:
    atomic_write(folder / MANIFEST, (json.dumps({"files": sorted(set(names))}, indent=1) + "\n").encode())


def _remember(folder: Path, names: list[str]) -> None:
    _save_manifest(folder, _written(folder) + names)


def _drop_stale(folder: Path, prefix: str, key: str) -> None:
    """Remove this split and layer's cached files made under other keys: only those the manifest lists."""
    listed = _written(folder)
    gone = []
    for name in listed:
        rest = name[len(prefix):]
        if not (name.startswith(prefix) and len(rest) >= 16 and rest[:16] != key
                and all(c in "0123456789abcdef" for c in rest[:16])):
            continue
        p = folder / name
        try:
            if os.path.lexists(p):
                p.unlink()  # a link itself, never its target
            gone.append(name)
        except OSError:
            pass
    if gone:
        _save_manifest(folder, [n for n in listed if n not in gone])


def cached_index(fs: FeatureSet, kind: str, *, progress: bool = False, **build):
    """The ``kind`` index (binary codes or faiss) of a feature set, kept beside its ``.npy`` (``FILE.KIND.npz``).

    Built on first use and listed in the folder's manifest when the set lives in a cache folder, so it goes
    with the set when the set goes stale. A set held in memory gets an index in memory.
    """
    from .index import build_index, check_source, index_path_for, load_index, require_faiss, save_index

    if kind == "faiss":
        require_faiss()
    if fs.path is None:
        return build_index(fs, kind, progress=progress, **build)
    path = index_path_for(fs.path, kind)
    if path.is_file():
        try:
            index = load_index(path)
            check_source(index, fs)
            return index
        except UserError:
            pass  # damaged or built from an older set: rebuild below
    index = build_index(fs, kind, progress=progress, **build)
    folder = Path(fs.path).parent
    if path.name not in _written(folder) and (folder / MANIFEST).is_file():
        _remember(folder, [path.name])
    try:
        save_index(index, path)
    except OSError:
        pass  # a read-only folder: search with the index in memory
    return index
