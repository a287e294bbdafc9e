"""Trained weights into a model: ``models.create(name, checkpoint_path=...)``, and ``pretrained_cfg``.

``pretrained_cfg`` says how to feed the network, in timm's keys: ``input_size``
(C, H, W), ``interpolation``, ``crop_pct`` and ``crop_mode`` (shorter side to
``H / crop_pct``, centre crop), and ``mean``/``std`` in [0, 1] units, so that
``input = (pixel / 255 - mean) / std``. This project's transform,
``(pixel - mean) * scale / 255``, is that with ``mean = mean_pixels / 255``
and ``std = 1 / scale``. Weights trained on the paper's *mean image* carry it
too (``mean_image``: H x W x C in pixel units, taken off the image resized to
``resize`` before the crop); ``mean`` is then its average colour, which a
mean/std-only pipeline can use as an approximation. ``label_names`` are the
class ids (folder names or synset ids), ``label_descriptions`` their names.

Without a checkpoint the values describe the input the initialisation was
chosen for (``input_scale``: 255 for the paper's and Caffe's, 1 otherwise),
around ImageNet's mean colour; ``alexnet-owt`` (init ``torch``) takes
torchvision's normalisation.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from ..checkpoint import build_model, load_checkpoint, weights_file
from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize_for(crop: int) -> int:
    """alexnet.data.meta.eval_resize: imported here, not at the top, so that ``import alexnet.models`` (and
    torch.hub's hubconf) does not pull in the data package and Pillow; the first model built does."""
    from ..data.meta import eval_resize

    return eval_resize(crop)


def _base(model, crop: int, resize: int, mean, std) -> dict[str, Any]:
    cfg = model.cfg
    return {
        "architecture": cfg.name,
        "input_size": (cfg.in_channels, crop, crop),
        "fixed_input_size": cfg.adaptive_pool is None,
        "interpolation": "bicubic",  # data/images.py: one antialiased bicubic resize
        "crop_pct": crop / resize,
        "crop_mode": "center",
        "resize": resize,
        "mean": tuple(float(m) for m in mean),
        "std": tuple(float(s) for s in std),
        "mean_image": None,
        "input_scale": cfg.input_scale,
        "num_classes": cfg.num_classes,
        "label_names": None,
        "label_descriptions": None,
        "first_conv": "conv1",
        "classifier": "fc8",
    }


def default_pretrained_cfg(model) -> dict[str, Any]:
    """The input a freshly built ``model`` expects (see the module doc)."""
    cfg = model.cfg
    c = cfg.in_channels
    mean = IMAGENET_MEAN if c == 3 else (sum(IMAGENET_MEAN) / 3,) * c
    if cfg.init == "torch":
        std = IMAGENET_STD if c == 3 else (sum(IMAGENET_STD) / 3,) * c
    else:
        std = (1.0 / cfg.input_scale,) * c
    return _base(model, cfg.input_size, _resize_for(cfg.input_size), mean, std)


def checkpoint_pretrained_cfg(model, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The input the weights of checkpoint ``ckpt`` (loaded into ``model``) expect."""
    spec = dict(ckpt.get("eval_transform") or {})
    crop = int(spec.get("crop") or model.cfg.input_size)
    resize = int(spec.get("resize") or _resize_for(crop))
    c = model.cfg.in_channels
    normalize = spec.get("normalize")
    mean_image = None
    if normalize:
        mean, std = normalize["mean"], normalize["std"]
    else:
        scale = float(spec.get("scale", 1.0))
        stats = ckpt.get("data_stats") or {}
        if spec.get("mean", "image") == "image" and stats.get("mean_image") is not None:
            mean_image = torch.as_tensor(stats["mean_image"], dtype=torch.float32)
            rgb = mean_image.reshape(-1, mean_image.shape[-1]).mean(0)
        elif stats.get("mean_rgb") is not None:
            rgb = torch.as_tensor(stats["mean_rgb"], dtype=torch.float32).flatten()
        else:
            rgb = torch.tensor(default_pretrained_cfg(model)["mean"]) * 255.0
        mean, std = (rgb / 255.0).tolist(), (1.0 / scale,) * c
    out = _base(model, crop, resize, mean, std)
    out["mean_image"] = mean_image
    out["label_names"] = [str(x) for x in ckpt.get("classes") or []] or None
    out["label_descriptions"] = [str(x) for x in ckpt.get("class_names") or ckpt.get("classes") or []] or None
    return out


def load(name: str, path: str | os.PathLike, options: dict[str, Any], build: Callable[..., torch.nn.Module]):
    """Model ``name`` built by ``build(**options)`` as checkpoint ``path`` says (``options`` override), with its weights.

    ``num_classes`` different from the checkpoint's loads every layer but
    fc8 and gives a new fc8 of that size (``reset_classifier``), as timm does.
    """
    path = weights_file(path)
    ckpt = load_checkpoint(path)
    saved = ckpt["model"]
    if saved.get("name") != name:
        raise UserError(f"{path} holds model {saved.get('name')!r}, not {name!r}")
    options = dict(options)
    num_classes = options.pop("num_classes", None)
    model = build_model(ckpt, lambda _name, **o: build(**o), path, **options)
    model.pretrained_cfg = checkpoint_pretrained_cfg(model, ckpt)
    if num_classes is not None and int(num_classes) != model.num_classes:
        model.reset_classifier(int(num_classes))
    return model
