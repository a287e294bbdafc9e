"""The feature-set files: an N x D ``.npy`` and the three files beside it.

A feature set written at ``FILE.npy`` is

    FILE.npy          N x D features (float32 or float16), written through a
                      memory map whose written pages are released every
                      64 MB, so N x D never has to fit in memory and the
                      writer's peak RSS does not grow with N
    FILE.labels.npy   N class indices (int64)
    FILE.ids.npy      N sample ids (int64): the image's position in the split
    FILE.json         what they are: checkpoint, data, split, layer, dtype,
                      class names

each written to a temporary name and renamed, so a kill leaves either the old
file or the new one. ``FILE.json`` is written last and removed before a new
``FILE.npy`` is begun: features without it are incomplete. Nothing is
pickled; :func:`read_features` reads them back, memory-mapped.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path, atomic_write

DTYPES = {"float32": np.float32, "float16": np.float16}
RELEASE_BYTES = 64 * 2**20  # written feature bytes between releases of the memory map's pages

__all__ = ["DTYPES", "FeatureSet", "FeatureWriter", "read_features", "sidecar_paths"]


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


def read_features(path: str | os.PathLike, mmap: bool = True) -> FeatureSet:
    """A feature set written by :class:`FeatureWriter` (memory-mapped, never unpickled)."""
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


class FeatureWriter:
    """The ``n`` rows of one feature set, added batch by batch, kept in memory (``out=None``) or written to ``out``.

    ::

        with FeatureWriter(out, n, "float32") as w:
            for features, labels in batches:
                w.add(features, labels)
            fs = w.finish(ids, info)

    The first rows fix the width D and open ``out``'s memory map (a temporary
    file beside it); :meth:`finish` renames it into place and writes the
    labels, the ids and the description ``info``. Leaving the block without
    :meth:`finish` removes the temporary.
    """

    def __init__(self, out: str | os.PathLike | None, n: int, dtype: str = "float32"):
        if dtype not in DTYPES:
            raise UserError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.paths = sidecar_paths(out) if out is not None else None
        self.n, self.dtype = n, DTYPES[dtype]
        self.features: np.ndarray | None = None
        self.labels = np.empty(n, np.int64)
        self.count = 0
        self._unflushed = 0
        self._files = contextlib.ExitStack()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.features = None  # a memory map must be closed before its file goes
        self._files.__exit__(*exc)

    @property
    def dim(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    def _allocate(self, shape: tuple[int, int]) -> np.ndarray:
        if self.paths is None:
            return np.empty(shape, self.dtype)
        self.paths["meta"].unlink(missing_ok=True)  # an incomplete set must not look complete
        tmp = self._files.enter_context(atomic_path(self.paths["features"]))
        return np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        """The next ``B x D`` feature rows and their ``B`` labels."""
        b = features.shape[0]
        if self.count + b > self.n:
            raise RuntimeError(f"loader yielded more than its {self.n} samples")
        if self.features is None:
            self.features = self._allocate((self.n, features.shape[1]))
        self.features[self.count : self.count + b] = features
        self.labels[self.count : self.count + b] = labels
        self.count += b
        self._unflushed += features.nbytes
        if self._unflushed >= RELEASE_BYTES:
            self._release()

    def _release(self) -> None:
        """Write the rows so far to the file and drop them from this process's memory.

        A memory map's written pages count in its resident set until the
        kernel reclaims them; flushing and then advising ``MADV_DONTNEED``
        every ``RELEASE_BYTES`` keeps the peak RSS flat in N (the rows stay
        in the file and the page cache)."""
        self._unflushed = 0
        mm = getattr(self.features, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        self.features.flush()
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass

    def finish(self, ids: np.ndarray, info: dict[str, Any]) -> FeatureSet:
        """The complete set, described by ``info`` (its layer, split and class names among it)."""
        if self.count != self.n:
            raise RuntimeError(f"loader yielded {self.count} samples, expected {self.n}")
        if self.paths is None:
            return FeatureSet(self.features, self.labels, ids, info["layer"], info["split"], info["class_names"],
                              None, info)
        self.features.flush()
        self.features = None
        self._files.close()  # the features are in place; the description goes last
        atomic_write(self.paths["labels"], lambda f: np.save(f, self.labels, allow_pickle=False))
        atomic_write(self.paths["ids"], lambda f: np.save(f, ids, allow_pickle=False))
        atomic_write(self.paths["meta"], lambda f: f.write(json.dumps(info, indent=1).encode()))
        return read_features(self.paths["features"])
