"""Class predictions for image files, and the confusion matrix of a split.

An image is preprocessed exactly as the checkpoint's eval transform says
(shorter side to 256, centre crop, mean subtraction; with ``tta="10crop"``
the four corners, the centre and their reflections, whose ten softmax
outputs are averaged, as the paper does at test time). Class names come from
the checkpoint, so the checkpoint alone is enough to predict.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from .extract import _class_names, close_loader, eval_loader, eval_transform, load_model_for_features

TTA = ("center", "10crop")

__all__ = ["TTA", "checkpoint_stats", "load_image", "predict", "predict_tensors", "confusion_matrix"]


def checkpoint_stats(ckpt: dict[str, Any]) -> dict[str, np.ndarray]:
    """The data statistics stored with the checkpoint (mean image, mean RGB) as numpy arrays, in pixel units."""
    from ..data.stats import to_pixel_units

    stats = ckpt.get("data_stats") or (ckpt.get("eval_transform") or {}).get("stats") or {}
    out = {}
    for k, v in stats.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v) if isinstance(v, (list, tuple, np.ndarray)) else v
    return out if int(ckpt.get("schema", 1)) >= 2 else to_pixel_units(out)  # schema 1: [0, 1] units


def load_image(path: str | os.PathLike, ckpt: dict[str, Any], tta: str = "center", model=None) -> torch.Tensor:
    """``C x H x W`` (``10 x C x H x W`` for 10-crop) input for one image file."""
    from ..data.transforms import preprocess_image

    from ..data.images import BadImage, check_damage
    from ..fileio import require_file

    if tta not in TTA:
        raise UserError(f"--tta must be center or 10crop, not {tta!r}")
    path = require_file(path, "image")
    spec = eval_transform(ckpt, model)
    try:
        check_damage(path)  # the policy of prepare: a file the decoder calls corrupt is refused, not guessed at
        with warnings.catch_warnings():  # Pillow's notes on odd files: the error line says what is wrong
            warnings.simplefilter("ignore")
            x = preprocess_image(path, spec, checkpoint_stats(ckpt), tta=tta)
    except BadImage as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    except UserError:
        raise
    except Exception as e:  # PIL: UnidentifiedImageError, truncated file, ...
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"cannot read image {path}: {msg}") from None
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    return x


@torch.no_grad()
def predict_tensors(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities: ``B x C x H x W`` -> ``B x K``; ``B x 10 x C x H x W`` averages the ten softmaxes."""
    dev = next(model.parameters()).device
    if x.dim() == 5:
        b, v = x.shape[:2]
        p = torch.softmax(model(x.flatten(0, 1).to(dev)).float(), 1)
        return p.view(b, v, -1).mean(1).cpu()
    return torch.softmax(model(x.to(dev)).float(), 1).cpu()


def predict(checkpoint, images: Sequence[str | os.PathLike], *, topk: int = 5, tta: str = "center",
            device=None, batch_size: int = 32, model=None, ckpt=None, progress: bool = False,
            errors: str = "raise") -> list[dict[str, Any]]:
    """``[{"image": path, "top": [{"class", "id", "index", "prob"}, ...]}]`` per image, most probable first.

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
    if model is None or ckpt is None:
        model, ckpt, _ = load_model_for_features(checkpoint, device)
    names = _class_names(ckpt)
    ids = [str(c) for c in (ckpt.get("classes") or names)]
    k_all = int(getattr(getattr(model, "cfg", None), "num_classes", 0) or len(names))
    topk = min(topk, k_all) if k_all else topk
    results = []
    images = list(images)
    for s in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", disable=not progress, leave=False):
        loaded: dict[int, torch.Tensor] = {}
        failed: dict[int, str] = {}
        for j, p in enumerate(images[s : s + batch_size]):
            try:
                loaded[j] = load_image(p, ckpt, tta, model)
            except UserError as e:
                if errors == "raise":
                    raise
                failed[j] = str(e)
        tops = {}
        if loaded:
            probs = predict_tensors(model, torch.stack(list(loaded.values())))
            top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
            for j, pp, ii in zip(loaded, top_p.tolist(), top_i.tolist()):
                tops[j] = [{"class": names[i] if i < len(names) else str(i), "id": ids[i] if i < len(ids) else str(i),
                            "index": int(i), "prob": float(p)} for p, i in zip(pp, ii)]
        for j, path in enumerate(images[s : s + batch_size]):
            results.append({"image": str(path), "top": tops[j]} if j in tops else {"image": str(path), "error": failed[j]})
    return results


@torch.no_grad()
def confusion_matrix(checkpoint, data, split: str = "val", *, tta: str = "center", batch_size: int = 256,
                     workers: int | None = None, device=None, model=None, ckpt=None, progress: bool = True) -> np.ndarray:
    """``K x K`` counts: row = true class, column = predicted class, over ``split``."""
    if model is None or ckpt is None:
        model, ckpt, _ = load_model_for_features(checkpoint, device)
    loader = eval_loader(ckpt, data, split, batch_size=batch_size, workers=workers, tta=tta, model=model)
    k = int(model.cfg.num_classes) if hasattr(model, "cfg") else len(_class_names(ckpt))
    cm = np.zeros((k, k), np.int64)
    bar = tqdm(total=getattr(loader, "num_samples", None), desc=f"confusion {split}", unit="img",
               disable=not progress, leave=False)
    try:
        for images, labels in loader:
            pred = predict_tensors(model, images).argmax(1).numpy()
            np.add.at(cm, (labels.numpy(), pred), 1)
            bar.update(len(labels))
    finally:
        bar.close()
        close_loader(loader)
    return cm
