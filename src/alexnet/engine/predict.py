"""Class predictions for image files.

An image is preprocessed exactly as the checkpoint's eval transform says
(shorter side to 256, centre crop, mean subtraction; with ``tta="10crop"``
the four corners, the centre and their reflections, whose ten softmax
outputs are averaged, as the paper does at test time). Class names come from
the checkpoint, so the checkpoint alone is enough to predict.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from tqdm import tqdm

from ..errors import UserError
from .inference import Checkpoint

__all__ = ["predict", "top_classes"]


def predict(checkpoint, images: Sequence[str | os.PathLike], *, topk: int = 5, tta: str = "center",
            device=None, batch_size: int = 32, progress: bool = False, errors: str = "raise") -> list[dict[str, Any]]:
    """``[{"image": path, "top": [{"class", "id", "index", "prob"}, ...]}]`` per image, most probable first.

    ``checkpoint``: a path or a :class:`~alexnet.engine.inference.Checkpoint`.
    ``class`` is the human-readable name, ``id`` the class id (e.g. the
    ImageNet synset), ``index`` the network's output unit. A file that cannot
    be read raises :class:`UserError` (``errors="raise"``) or, with
    ``errors="report"``, gets ``{"image": path, "error": reason}`` in its place
    while the other files are still predicted.
    """
    if topk < 1:
        raise UserError(f"--topk must be at least 1, not {topk}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}")
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report', not {errors!r}")
    ck = Checkpoint.load(checkpoint, device)
    topk = min(topk, ck.num_classes) if ck.num_classes else topk
    images = list(images)
    results = []
    for s in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", disable=not progress, leave=False):
        batch = images[s : s + batch_size]
        loaded: dict[int, torch.Tensor] = {}
        failed: dict[int, str] = {}
        for j, path in enumerate(batch):
            try:
                loaded[j] = ck.preprocess(path, tta)
            except UserError as e:
                if errors == "raise":
                    raise
                failed[j] = str(e)
        tops = _top_classes(ck, loaded, topk) if loaded else {}
        results += [{"image": str(path), "top": tops[j]} if j in tops else {"image": str(path), "error": failed[j]}
                    for j, path in enumerate(batch)]
    return results


def top_classes(ck: Checkpoint, probs: torch.Tensor, topk: int) -> list[list[dict[str, Any]]]:
    """The ``topk`` most probable classes of each row of ``probs`` (``B x K``, from
    :meth:`Checkpoint.probabilities`), as :func:`predict` reports them."""
    top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
    names, ids = ck.class_names, ck.classes
    return [[{"class": names[i] if i < len(names) else str(i), "id": ids[i] if i < len(ids) else str(i),
              "index": int(i), "prob": float(p)} for p, i in zip(pp, ii)]
            for pp, ii in zip(top_p.tolist(), top_i.tolist())]


def _top_classes(ck: Checkpoint, inputs: dict[int, torch.Tensor], topk: int) -> dict[int, list[dict[str, Any]]]:
    """The ``topk`` most probable classes of each input, by its key."""
    return dict(zip(inputs, top_classes(ck, ck.probabilities(torch.stack(list(inputs.values()))), topk)))
