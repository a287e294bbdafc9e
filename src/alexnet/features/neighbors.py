"""Nearest training images of query images in fc7 space (the paper's Figure 4).

:func:`find_neighbors` answers for image files, :func:`split_neighbors` for
images of a prepared split; both search the training features cached beside
the checkpoint (computed on first use) with the exact search of
:mod:`alexnet.features.knn` (``search="exact"``), or through an index of
binary codes or faiss (``search="binary"`` / ``"faiss"``, see
:mod:`alexnet.features.index`) whose candidates are re-ranked exactly. :func:`neighbor_panels` and
:func:`split_neighbor_panels` add the pictures, for
:func:`alexnet.viz.figures.neighbors_figure`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data import read_meta
from ..engine.inference import Checkpoint
from ..errors import UserError
from .cache import cached_features
from .extract import layer_function
from .knn import knn_search
from .store import FeatureSet

SEARCHES = ("exact", "binary", "faiss")

__all__ = ["SEARCHES", "Searcher", "training_searcher", "neighbor_results", "find_neighbors", "split_neighbors", "neighbor_panels", "split_neighbor_panels", "split_images",
           "query_picture"]


@torch.no_grad()
def query_features(ck: Checkpoint, images: Sequence[str | os.PathLike], layer: str = "fc7",
                   batch_size: int = 32) -> np.ndarray:
    """``Q x D`` features of image files, preprocessed as the eval transform says."""
    fn = layer_function(ck.model, layer)
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.stack([ck.preprocess(p) for p in images[s : s + batch_size]])
        out.append(fn(x.to(ck.device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class Searcher:
    """Nearest rows of one training feature set, by exact search or through an index; ``describe`` says which."""

    def __init__(self, train: FeatureSet, search: str = "exact", index=None, candidates: int | None = None,
                 device=None):
        self.train, self.search, self.index, self.candidates, self.device = train, search, index, candidates, device

    def __call__(self, queries, k: int, exclude=None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None:
            return knn_search(queries, self.train.features, k, exclude=exclude, device=self.device, progress=progress)
        return self.index.search(queries, self.train.features, k, candidates=self.candidates, exclude=exclude)

    def describe(self, k: int = 6) -> str:
        if self.index is None:
            return "exact: every training vector compared"
        r = max(k, self.candidates if self.candidates is not None else max(1000, 100 * k))
        return self.index.describe(min(r, self.train.count))


def training_searcher(ck: Checkpoint, data, layer: str = "fc7", *, search: str = "exact",
                      index: str | os.PathLike | None = None, candidates: int | None = None, batch_size: int = 256,
                      workers: int | None = None, progress: bool = True, cache: bool = True) -> Searcher:
    """A :class:`Searcher` over the training features of ``ck`` on ``data``.

    ``search``: exact, binary or faiss. ``index``: an index file (``alexnet features ... --index KIND``) to
    use instead of the cached one; the feature file it was built from is searched, and it must come from this
    checkpoint and layer. Without it, the index is built once and cached beside the cached training features.
    """
    from .index import check_source, load_index, require_faiss

    if search not in SEARCHES:
        raise UserError(f"--search must be one of {', '.join(SEARCHES)}, not {search!r}")
    if search == "faiss":
        require_faiss()  # before the (long) feature pass
    if index is not None:
        if search == "exact":
            raise UserError("--index is for --search binary or faiss")
        idx = load_index(index)
        if idx.kind != search:
            raise UserError(f"{index} is a {idx.kind} index, not {search}")
        src = idx.source
        if src.get("layer") not in (None, layer):
            raise UserError(f"{index} indexes layer {src['layer']}, not {layer}")
        ckpt = src.get("checkpoint")
        if ckpt is not None and Path(ckpt).resolve() != Path(ck.path).resolve():
            raise UserError(f"{index} was built from features of {ckpt}, not of {ck.path}")
        if "path" not in src:
            raise UserError(f"{index} names no feature file to re-rank against")
        from .store import read_features

        train = read_features(src["path"])
        check_source(idx, train)
        return Searcher(train, search, idx, candidates, ck.device)
    train = cached_features(ck, data, "train", layer, batch_size=batch_size, workers=workers, progress=progress,
                            cache=cache)
    if search == "exact":
        return Searcher(train, device=ck.device)
    from .cache import cached_index

    return Searcher(train, search, cached_index(train, search, progress=progress), candidates, ck.device)


def neighbor_results(train: FeatureSet, names: list[str], dist: np.ndarray, idx: np.ndarray, queries: list) -> list[dict]:
    """``[{"query", "neighbors": [{"id", "class", "label", "distance"}, ...]}]`` from a search of ``train``."""
    out = []
    for q, dd, ii in zip(queries, dist, idx):
        nbs = []
        for d, i in zip(dd.tolist(), ii.tolist()):
            label = int(train.labels[i])
            nbs.append({"id": int(train.ids[i]), "class": names[label] if label < len(names) else str(label),
                        "label": label, "distance": float(d)})
        out.append({"query": q, "neighbors": nbs})
    return out


def find_neighbors(checkpoint, data, images: Sequence[str | os.PathLike], *, k: int = 6, layer: str = "fc7",
                   device=None, batch_size: int = 256, workers: int | None = None, cache: bool = True,
                   progress: bool = True, search: str = "exact", index=None,
                   candidates: int | None = None) -> list[dict[str, Any]]:
    """``[{"query": path, "neighbors": [{"id", "class", "label", "distance"}, ...]}]``, nearest first.

    ``checkpoint``: a path or a :class:`~alexnet.engine.inference.Checkpoint`.
    ``id`` is the neighbour's position in the training split; ``distance``
    the Euclidean distance of the fc7 vectors. ``search``, ``index``, ``candidates``: see
    :func:`training_searcher`; each result names the search in ``"search"``.
    """
    if k < 1:
        raise UserError(f"-k must be at least 1, not {k}")
    if not images:
        raise UserError("no query images given")
    ck = Checkpoint.load(checkpoint, device)
    layer_function(ck.model, layer)
    for p in images:  # every query must be readable before the (long) training pass
        if not Path(p).is_file():
            raise UserError(f"image not found: {p}")
    q = query_features(ck, list(images), layer)
    searcher = training_searcher(ck, data, layer, search=search, index=index, candidates=candidates,
                                 batch_size=batch_size, workers=workers, progress=progress, cache=cache)
    dist, idx = searcher(q, k)
    res = neighbor_results(searcher.train, ck.class_names, dist, idx, [str(p) for p in images])
    for r in res:
        r["search"] = search
    return res


def split_neighbors(checkpoint, data, split: str, ids: Sequence[int], *, k: int = 6, layer: str = "fc7",
                    device=None, batch_size: int = 256, workers: int | None = None, cache: bool = True,
                    progress: bool = True) -> tuple[list[dict[str, Any]], FeatureSet]:
    """Neighbours in the training set of images ``ids`` of ``split`` (the query itself excluded when split is train)."""
    ck = Checkpoint.load(checkpoint, device)
    kw = dict(batch_size=batch_size, workers=workers, progress=progress, cache=cache)
    train = cached_features(ck, data, "train", layer, **kw)
    qs = train if split == "train" else cached_features(ck, data, split, layer, **kw)
    pos = np.asarray(ids, dtype=np.int64)
    if len(pos) and (pos.min() < 0 or pos.max() >= qs.count):
        raise UserError(f"{split} has {qs.count} images; ids must be in 0..{qs.count - 1}")
    exclude = pos if split == "train" else None
    dist, idx = knn_search(np.asarray(qs.features[pos]), train.features, k, exclude=exclude, device=ck.device)
    res = neighbor_results(train, ck.class_names, dist, idx, [f"{split}:{int(i)}" for i in pos])
    for r, i in zip(res, pos):
        r["label"] = int(qs.labels[i])
        r["id"] = int(qs.ids[i])
    return res, train


# ---------------------------------------------------------------- pictures
def split_images(data, split: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """The stored square pictures (``H x W x C`` in [0, 1]) of images ``ids`` of a prepared split.

    Read directly through ``<split>.index.npy`` (shard, offset, size, label
    per sample; see :mod:`alexnet.data.shards`): one slice of a memory-mapped
    shard per image, so a few pictures of a large split cost a few reads.
    """
    import io

    from PIL import Image

    data = Path(data)
    meta = read_meta(data)
    index_path = data / f"{split}.index.npy"
    if split not in meta.get("shards", {}) or not index_path.is_file():
        raise UserError(f"{data} has no readable split {split!r}")
    index = np.load(index_path, mmap_mode="r", allow_pickle=False)
    fmt, size, ch = meta.get("format", "jpg"), int(meta["size"]), int(meta.get("channels", 3))
    maps: dict[int, np.memmap] = {}
    out = {}
    for i in sorted(set(int(i) for i in ids)):
        if not 0 <= i < len(index):
            raise UserError(f"{split} has {len(index)} images; no image {i}")
        shard, off, n = (int(v) for v in index[i][:3])
        if shard not in maps:
            maps[shard] = np.memmap(data / meta["shards"][split][shard], dtype=np.uint8, mode="r")
        raw = maps[shard][off : off + n]
        if fmt == "jpg":
            with Image.open(io.BytesIO(raw.tobytes())) as im:
                arr = np.asarray(im.convert("RGB" if ch == 3 else "L"), dtype=np.uint8).reshape(im.height, im.width, ch)
        else:
            arr = np.asarray(raw).reshape(size, size, ch)
        out[i] = arr.astype(np.float32) / 255.0
    return out


def query_picture(path, ck: Checkpoint) -> np.ndarray:
    """An image file as the square the eval transform crops from (shorter side to ``resize``), in [0, 1]."""
    from ..data.images import BadImage, load_square

    spec = ck.transform
    try:
        arr = load_square(path, int(spec["resize"]), int(spec.get("channels", 3)))
    except BadImage as e:
        raise UserError(f"{path}: {e}") from None
    return arr.astype(np.float32) / 255.0


def _caption(name: str, extra: str = "") -> str:
    name = name if len(name) <= 16 else name[:15] + "…"
    return f"{name}{extra}"


def neighbor_panels(checkpoint, data, images: Sequence[str | os.PathLike], *, k: int = 6, device=None,
                    workers: int | None = None, progress: bool = True,
                    results: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Query image files with their neighbours' pictures, for :func:`~alexnet.viz.figures.neighbors_figure`.

    ``results``: the answer of :func:`find_neighbors` for these images, when already at hand.
    """
    ck = Checkpoint.load(checkpoint, device)
    res = results if results is not None else find_neighbors(
        ck, data, images, k=k, workers=workers, progress=progress)
    pics = split_images(data, "train", [n["id"] for r in res for n in r["neighbors"]])
    panels = []
    for r in res:
        q = query_picture(r["query"], ck)
        panels.append({
            "image": q, "caption": _caption(Path(r["query"]).name), "label": None,
            "neighbors": [{"image": pics[n["id"]], "caption": _caption(n["class"], f"\n{n['distance']:.3g}"),
                           "label": n["label"]} for n in r["neighbors"]],
        })
    return panels


def split_neighbor_panels(checkpoint, data, split: str = "val", *, count: int = 6, ids: Sequence[int] | None = None,
                          k: int = 6, device=None, workers: int | None = None,
                          progress: bool = True) -> list[dict[str, Any]]:
    """``count`` evenly spaced images of ``split`` (or ``ids``) with their neighbours' pictures."""
    ck = Checkpoint.load(checkpoint, device)
    if ids is None:
        n = int(read_meta(Path(data)).get("splits", {}).get(split, 0))
        if n == 0:
            raise UserError(f"{data} has no images in split {split!r}")
        # spread over the split: with a class-sorted split, one query per region of classes
        ids = sorted(set(np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist()))
    res, train = split_neighbors(ck, data, split, ids, k=k, workers=workers, progress=progress)
    names = ck.class_names
    qpics = split_images(data, split, ids)
    npics = split_images(data, "train", [n["id"] for r in res for n in r["neighbors"]])
    panels = []
    for r, i in zip(res, ids):
        lab = r["label"]
        panels.append({
            "image": qpics[int(i)], "caption": _caption(names[lab] if lab < len(names) else str(lab), f"\n{split} {i}"),
            "label": lab,
            "neighbors": [{"image": npics[n["id"]], "caption": _caption(n["class"], f"\n{n['distance']:.3g}"),
                           "label": n["label"]} for n in r["neighbors"]],
        })
    return panels
