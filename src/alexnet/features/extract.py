"""Activations of any named layer for every image of a split.

:func:`extract_features` runs a network over a loader in eval mode (a
checkpoint's :meth:`~alexnet.engine.inference.Checkpoint.eval_loader`: no
dropout; the checkpoint's eval transform, e.g. shorter side 256, centre
crop, mean subtraction) and keeps one layer's activation of every image, in
memory or in the files of :mod:`alexnet.features.store`. 10-patch batches
give each image the mean over its ten patches.

The layer ``pixels`` is the preprocessed input itself, flattened (the
baseline against which the paper compares fc7 distances).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..engine.distributed import resolve_device
from ..engine.inference import average_views
from ..errors import UserError
from .store import FeatureSet, FeatureWriter

PIXELS = "pixels"  # pseudo-layer: the preprocessed input image, flattened

__all__ = ["PIXELS", "extract_features", "layer_function"]


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
    (plus labels, ids and a JSON description, see :mod:`alexnet.features.store`)
    and the returned set reads from it; without, they are kept in memory.
    ``meta`` is added to the description.
    """
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    fn = layer_function(model, layer)
    n = int(getattr(loader, "num_samples", 0) or 0)
    if n <= 0:
        raise UserError(f"split {split or '?'} has no images")
    with FeatureWriter(out, n, dtype) as writer:
        with tqdm(total=n, desc=f"{layer} {split}".strip(), unit="img", disable=not progress, leave=False) as bar:
            for images, targets in loader:
                f = average_views(lambda x: fn(x.to(dev, non_blocking=True)).float(), images)
                writer.add(f.cpu().numpy(), targets.numpy())
                bar.update(f.shape[0])
        info = {"layer": layer, "split": split, "count": n, "dim": writer.dim, "dtype": dtype,
                "class_names": list(class_names), **(meta or {})}
        return writer.finish(_loader_ids(loader, n), info)
