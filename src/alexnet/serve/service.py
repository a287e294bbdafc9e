"""What the server serves, without the web framework: one loaded checkpoint and its answers.

:class:`Service` holds the :class:`~alexnet.engine.inference.Checkpoint`
(the network, its classes and eval transform), the training features that
neighbour searches run against when the server has them, and the limits on
uploads. Its methods are plain functions of bytes and tensors, so they are
tested without a server:

* :meth:`Service.inspect` reads an upload's header only (format, size),
  refusing a decompression bomb before a pixel is decoded;
* :meth:`Service.preprocess` turns the bytes into the network's input through
  :meth:`Checkpoint.preprocess`, the very function ``alexnet predict`` uses
  for a file, so the two answer the same numbers;
* :meth:`Service.run_batch` is one forward pass over the inputs of many
  requests (what :class:`~alexnet.serve.batcher.Batcher` calls, on its one
  model thread), grouped by kind: centre crops, 10-patch stacks, fc7;
* :meth:`Service.neighbors` searches the training set in fc7 space and in
  pixel space (the paper's Figure 4), as ``alexnet neighbors`` does;
* :meth:`Service.thumbnail` is a training image by its position in the train
  split of the prepared data (never a path from a request).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import BadImage, open_image
from ..engine.inference import TTA_VIEWS, Checkpoint, ImageBytes
from ..engine.predict import top_classes
from ..errors import UserError
from .limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, Limits

FC7, PIXELS = "fc7", "pixels"

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "FC7", "PIXELS", "Job", "Limits", "Refused", "Service",
           "sha256_file"]


class Refused(Exception):
    """A request the server refuses: ``status`` (an HTTP 4xx/5xx) and a one-sentence ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Job:
    """One network input of a request: ``kind`` (``center``, ``10crop`` or ``fc7``) and its tensor."""

    kind: str
    x: torch.Tensor

    @property
    def views(self) -> int:
        return TTA_VIEWS.get(self.kind, 1)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    a = np.clip(np.asarray(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if a.shape[-1] == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


class Service:
    """A checkpoint ready to answer requests (see the module docstring).

    ``checkpoint``: a path or a loaded :class:`Checkpoint`. ``neighbors``: a
    prepared data folder (its train split is searched; features are computed
    once and cached beside the checkpoint, as ``alexnet neighbors`` does) or
    a feature file written by ``alexnet features`` on the train split, or None.
    """

    def __init__(self, checkpoint, *, neighbors: str | os.PathLike | None = None, device=None,
                 limits: Limits | None = None, progress: bool = False, workers: int | None = None):
        self.ck = Checkpoint.load(checkpoint, device)
        self.limits = limits or Limits()
        self.sha256 = sha256_file(self.ck.path)
        self.stats = {"requests": 0, "batches": 0, "inputs": 0, "largest_batch": 0}
        self._stats_lock = threading.Lock()
        from ..features.extract import layer_function

        self._fc7 = layer_function(self.ck.model, FC7)
        self.data: Path | None = None
        self.searchers: dict[str, Any] = {}
        if neighbors is not None:
            self._load_neighbors(Path(neighbors), progress, workers)

    # ------------------------------------------------------------ setup
    def _load_neighbors(self, source: Path, progress: bool, workers: int | None) -> None:
        from ..features.cache import cached_features
        from ..features.neighbors import Searcher, training_searcher
        from ..features.store import read_features

        if source.is_dir():
            data = source
            fc7 = training_searcher(self.ck, data, FC7, progress=progress, workers=workers)
        elif source.is_file() or source.suffix == ".npy":
            fs = read_features(source)
            if fs.layer != FC7 or fs.split != "train":
                raise UserError(f"{source} holds {fs.layer} of split {fs.split}; --neighbors needs fc7 of the train split")
            if "data" not in fs.meta:
                raise UserError(f"{source} does not name the prepared folder it came from (its thumbnails and pixels)")
            ckpt = fs.meta.get("checkpoint")
            if ckpt and Path(ckpt).resolve() != self.ck.path.resolve():
                raise UserError(f"{source} holds features of {ckpt}, not of {self.ck.path}")
            data = Path(fs.meta["data"])
            fc7 = Searcher(fs, device=self.ck.device)
        else:
            raise UserError(f"--neighbors: no prepared folder or feature file {source}")
        if not (data / "meta.json").is_file():
            raise UserError(f"--neighbors: {data} is not a prepared data folder (no meta.json)")
        pixels = Searcher(cached_features(self.ck, data, "train", PIXELS, progress=progress, workers=workers),
                          device=self.ck.device)
        if pixels.train.count != fc7.train.count:
            raise UserError(f"{source} has {fc7.train.count} training images but {data} has {pixels.train.count}")
        self.data, self.searchers = data, {FC7: fc7, PIXELS: pixels}

    # ------------------------------------------------------------ reading
    @property
    def train_count(self) -> int:
        return self.searchers[FC7].train.count if self.searchers else 0

    def inspect(self, data: bytes) -> dict[str, Any]:
        """The header of an upload: ``{"format", "width", "height"}``; refuses an empty, oversized or
        non-image body and a decompression bomb (by its declared size) before decoding a pixel."""
        if not data:
            raise Refused(400, "The request has no image: its body is empty.")
        if len(data) > self.limits.max_upload_bytes:
            raise Refused(413, f"The upload is over the limit of {self.limits.max_upload_bytes} bytes.")
        try:
            im = open_image(ImageBytes(data), self.limits.max_pixels, self.limits.max_upload_bytes)
        except BadImage as e:
            reason = str(e)
            if reason.startswith("decompression bomb"):
                raise Refused(413, f"The image is too large: {reason}.") from None
            raise Refused(422, f"The upload is not an image this server can read ({reason}).") from None
        info = {"format": im.format, "width": im.size[0], "height": im.size[1]}
        im.close()
        return info

    def preprocess(self, data: bytes, tta: str = "center") -> torch.Tensor:
        """The network's input for an upload, as ``alexnet predict`` makes it for a file with these bytes."""
        self.inspect(data)
        try:
            return self.ck.preprocess(data, tta)
        except UserError as e:
            raise Refused(422, f"The upload is not an image this server can read ({_after_colon(str(e))}).") from None

    # ------------------------------------------------------------ the network
    @torch.no_grad()
    def run_batch(self, jobs: list[Job]) -> list[torch.Tensor]:
        """One output per job: class probabilities (``center``, ``10crop``: the mean over the views,
        as :meth:`Checkpoint.probabilities`) or the fc7 vector. One forward pass per kind present."""
        out: list[torch.Tensor | None] = [None] * len(jobs)
        for kind in ("center", "10crop", FC7):
            pos = [i for i, j in enumerate(jobs) if j.kind == kind]
            if not pos:
                continue
            x = torch.stack([jobs[i].x for i in pos])
            if kind == FC7:
                y = self._fc7(x.to(self.ck.device)).float().cpu()
            else:
                y = self.ck.probabilities(x)
            for i, row in zip(pos, y):
                out[i] = row
        with self._stats_lock:
            self.stats["batches"] += 1
            views = sum(j.views for j in jobs)
            self.stats["inputs"] += views
            self.stats["largest_batch"] = max(self.stats["largest_batch"], views)
        return out  # type: ignore[return-value]

    def top(self, probs: torch.Tensor, topk: int) -> list[dict[str, Any]]:
        return top_classes(self.ck, probs[None], topk)[0]

    # ------------------------------------------------------------ neighbours
    def neighbors(self, x: torch.Tensor, fc7: torch.Tensor, k: int) -> dict[str, list[dict[str, Any]]]:
        """The ``k`` training images nearest the centre-crop input ``x`` in fc7 space (``fc7``: its vector)
        and in pixel space (``x`` flattened, as ``alexnet neighbors --evaluate`` compares them)."""
        from ..features.neighbors import neighbor_results

        if not self.searchers:
            raise Refused(404, "This server was started without --neighbors, so it has no training images to search.")
        out = {}
        for space, q in ((FC7, fc7), (PIXELS, x.flatten())):
            s = self.searchers[space]
            dist, idx = s(q.reshape(1, -1).numpy().astype(np.float32), k)
            out[space] = neighbor_results(s.train, self.ck.class_names, dist, idx, [""])[0]["neighbors"]
        return out

    def thumbnail(self, position: int) -> bytes:
        """PNG of the training image at ``position`` of the train split (as stored by ``prepare``)."""
        if self.data is None:
            raise Refused(404, "This server was started without --neighbors, so it has no training images.")
        if not 0 <= position < self.train_count:
            raise Refused(404, f"There is no training image {position}; there are {self.train_count}.")
        return self._thumbnail(position)

    @functools.lru_cache(maxsize=256)
    def _thumbnail(self, position: int) -> bytes:
        from ..features.neighbors import split_images

        return _png(split_images(self.data, "train", [position])[position])

    @functools.cached_property
    def filters_png(self) -> bytes:
        """conv1's kernels, one grid per tower (the paper's Figure 3)."""
        from ..viz.figures import filters_figure, figure_png

        return figure_png(filters_figure(self.ck.model, "conv1"))

    # ------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        ck = self.ck
        transform = {k: v for k, v in ck.transform.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
        return {
            "model": ck.name,
            "num_classes": ck.num_classes,
            "classes": [{"index": i, "id": c, "class": ck.class_names[i] if i < len(ck.class_names) else c}
                        for i, c in enumerate(ck.classes)],
            "eval_transform": transform,
            "tta": list(TTA_VIEWS),
            "checkpoint": {"file": ck.path.name, "sha256": self.sha256, "bytes": ck.path.stat().st_size},
            "neighbors": ({"train_images": self.train_count, "spaces": [FC7, PIXELS],
                           "fc7_search": self.searchers[FC7].describe()} if self.searchers else None),
            "limits": self.limits.public(),
            "device": str(ck.device),
        }


def _after_colon(message: str) -> str:
    """``cannot read the image: REASON`` -> ``REASON``."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("cannot read") else message
