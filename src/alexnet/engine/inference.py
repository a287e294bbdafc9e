"""A checkpoint loaded for inference: the network, what its outputs mean, and how to feed it.

:class:`Checkpoint` is what every command that reads a checkpoint works with
(``eval``, ``predict``, ``features``, ``neighbors``, ``viz``, ``report``):
the model in eval mode on its device, the class ids and names, the eval
transform (filled in from the model where an older checkpoint leaves parts
out), the data statistics in pixel units, and the two ways in:
:meth:`~Checkpoint.eval_loader` for a prepared split and
:meth:`~Checkpoint.preprocess` for an image file. A function that takes a
checkpoint takes its path or a loaded :class:`Checkpoint`
(:meth:`Checkpoint.load` passes the latter through), so a caller that does
several jobs with one checkpoint loads it once.

Test-time views: :data:`TTA_VIEWS` names them (the centre patch; the paper's
ten, the four corners and the centre and their reflections), and
:func:`average_views` is the one place their outputs are averaged.

This module reads the file through :mod:`alexnet.checkpoint` and the
data through :mod:`alexnet.data`; evaluation, prediction, export and
:mod:`alexnet.features` build on it, and it imports none of them.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import models
from ..checkpoint import load_checkpoint
from ..data import eval_resize, is_small, make_loader, preprocess_image, read_meta
from ..errors import UserError, short_repr
from ..fileio import require_file
from .distributed import resolve_device

TTA_VIEWS = {"center": 1, "10crop": 10}  # test-time views per image: the centre patch, or the paper's ten patches
TTA = tuple(TTA_VIEWS)

__all__ = ["TTA", "TTA_VIEWS", "Checkpoint", "ImageBytes", "average_views", "checkpoint_stats", "class_names",
           "eval_transform", "load_image"]


def average_views(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """``fn(images)`` for a ``B x C x H x W`` batch; for ``B x V x C x H x W`` (V views of each image,
    the 10-patch test), ``fn`` of all ``B * V`` views at once, averaged over each image's views."""
    if images.dim() != 5:
        return fn(images)
    b, v = images.shape[:2]
    out = fn(images.flatten(0, 1))
    return out.view(b, v, *out.shape[1:]).mean(1)


# ------------------------------------------------- the checkpoint dict, read
def class_names(ckpt: dict[str, Any]) -> list[str]:
    """Human-readable class names (the class ids when the checkpoint has no names)."""
    return [str(n) for n in (ckpt.get("class_names") or ckpt.get("classes") or [])]


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
        spec["resize"] = eval_resize(spec["crop"])
    spec.setdefault("mean", "image")
    spec.setdefault("scale", 1.0)  # eval_spec always writes it; a normalize spec does not use it
    spec.setdefault("normalize", None)
    return spec


def checkpoint_stats(ckpt: dict[str, Any]) -> dict[str, np.ndarray]:
    """The data statistics stored with the checkpoint (mean image, mean RGB) as numpy arrays, in pixel units."""
    out = {}
    for k, v in (ckpt.get("data_stats") or {}).items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v) if isinstance(v, (list, tuple, np.ndarray)) else v
    return out


class ImageBytes:
    """The bytes of an image file (an upload), read as :mod:`alexnet.data.images` reads a tar member."""

    def __init__(self, data: bytes):
        self.data, self.size = bytes(data), len(data)

    def read(self) -> bytes:
        return self.data


def _read_image(path: str | os.PathLike | bytes, spec: dict[str, Any], stats: dict[str, Any], tta: str) -> torch.Tensor:
    from ..data.images import BadImage, check_damage, open_image

    if tta not in TTA_VIEWS:
        raise UserError(f"--tta must be {' or '.join(TTA)}, not {tta!r}")
    if isinstance(path, (bytes, bytearray, memoryview)):  # a file's bytes (an upload): the same checks and steps
        source, what = ImageBytes(path), "the image"
    else:
        source = path = require_file(path, "image")
        what = f"image {path}"
    try:
        check_damage(source)  # the policy of prepare: a file the decoder calls corrupt is refused, not guessed at
        with warnings.catch_warnings():  # Pillow's notes on odd files: the error line says what is wrong
            warnings.simplefilter("ignore")
            x = preprocess_image(source if source is path else open_image(source), spec, stats, tta=tta)
    except BadImage as e:
        raise UserError(f"cannot read {what}: {e}") from None
    except UserError:
        raise
    except Exception as e:  # PIL: UnidentifiedImageError, truncated file, ...
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"cannot read {what}: {msg}") from None
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)


def load_image(path: str | os.PathLike, ckpt: dict[str, Any], tta: str = "center", model=None) -> torch.Tensor:
    """``C x H x W`` (``10 x C x H x W`` for 10-patch) input for one image file, as checkpoint dict ``ckpt`` expects it."""
    return _read_image(path, eval_transform(ckpt, model), checkpoint_stats(ckpt), tta)


def _same_classes(data: Path, what: str, theirs: list[str], mine: list[str]) -> None:
    """Refuse prepared folder ``data`` whose class ``what`` (ids or names) are not the checkpoint's,
    in one line naming the first class that differs."""
    if theirs == mine:
        return
    if len(theirs) != len(mine):
        raise UserError(f"{data} has {len(theirs)} classes, the checkpoint {len(mine)}; "
                        "its labels would not mean the checkpoint's classes")
    i = next(i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b)
    raise UserError(f"{data}: class {i} is {short_repr(theirs[i], 60)} there but {short_repr(mine[i], 60)} in the checkpoint "
                    f"(class {what} differ); its labels would not mean the checkpoint's classes")


# ------------------------------------------------------- the loaded object
class Checkpoint:
    """A checkpoint ready for inference (see the module docstring).

    ``model``: the network in eval mode on ``device``; ``info``: the
    checkpoint's entries but its weights (model, classes, config, metrics,
    epoch, ...); ``classes``: class ids, index = output unit; ``class_names``:
    their names; ``transform``: the eval transform spec; ``stats``: the mean
    image and colour in pixel units.
    """

    def __init__(self, path: str | os.PathLike, model: torch.nn.Module, ckpt: dict[str, Any],
                 device: str | torch.device = "cpu"):
        self.path = Path(path)
        self.model = model
        self.device = torch.device(device)
        self.info = {k: v for k, v in ckpt.items() if k != "state_dict"}  # the weights are in the model
        self.class_names = class_names(ckpt)
        self.classes = [str(c) for c in (ckpt.get("classes") or self.class_names)]
        self.transform = eval_transform(ckpt, model)
        cfg = getattr(model, "cfg", None)
        crop = self.transform.get("crop")
        if cfg is not None and crop and (crop > 4 * cfg.input_size if cfg.adaptive_pool else crop != cfg.input_size):
            raise UserError(f"{self.path}: its eval transform crops {crop} px, but the model takes {cfg.input_size} px")

    @classmethod
    def load(cls, checkpoint: str | os.PathLike | Checkpoint, device: str | torch.device | None = None) -> Checkpoint:
        """The checkpoint file ``checkpoint`` loaded onto ``device`` (None: CUDA when there is one);
        a :class:`Checkpoint` is returned as it is."""
        if isinstance(checkpoint, Checkpoint):
            return checkpoint
        ckpt = load_checkpoint(checkpoint)  # a bad file is refused before a device is chosen
        dev = resolve_device(device)
        return cls(checkpoint, models.from_checkpoint(ckpt, checkpoint).to(dev).eval(), ckpt, dev)

    @property
    def name(self) -> str:
        return str(self.info["model"]["name"])

    @property
    def num_classes(self) -> int:
        cfg = getattr(self.model, "cfg", None)
        return int(cfg.num_classes) if cfg is not None else len(self.class_names)

    @functools.cached_property
    def stats(self) -> dict[str, np.ndarray]:
        return checkpoint_stats(self.info)

    def preprocess(self, image: str | os.PathLike | bytes, tta: str = "center") -> torch.Tensor:
        """``C x H x W`` (``10 x C x H x W`` for 10-patch) input for one image file (a path, or the file's
        bytes, as a server receives it); a bad file is a :class:`UserError`."""
        return _read_image(image, self.transform, self.stats, tta)

    def eval_loader(self, data: str | os.PathLike, split: str, *, batch_size: int = 256, workers: int | None = None,
                    tta: str = "center"):
        """The prepared split ``split`` of ``data`` in the order of its samples, as the weights expect it.

        Refuses a missing folder or split, and a folder whose classes are not
        the checkpoint's (its labels would mean other classes): other ids, or
        other names where both sides name their classes. Close the
        loader when done (``contextlib.closing``): its worker processes stop then.
        """
        data = Path(data)
        if not data.is_dir():
            raise UserError(f"prepared data folder not found: {data}")
        meta = read_meta(data)
        splits = meta.get("splits", {})
        if split not in splits:
            raise UserError(f"{data} has no split {split!r}; it has: {', '.join(splits) or 'none'}")
        theirs = [str(c) for c in (meta.get("classes") or [])]
        if self.info.get("classes") and theirs:
            _same_classes(data, "ids", theirs, self.classes)
            # Names where both sides have them (names that only repeat the ids are none): two IDX or
            # WebDataset sets both have ids 0..n-1, and only their names tell them apart.
            names = [str(n) for n in (meta.get("class_names") or [])]
            mine = [str(n) for n in (self.info.get("class_names") or [])]
            if names and names != theirs and mine and mine != self.classes:
                _same_classes(data, "names", names, mine)
        if workers is None:  # small images are read straight from the page cache: processes only cost start-up time
            workers = 0 if is_small(meta.get("size", 256)) else 2
        if workers < 0:
            raise UserError(f"--workers must be 0 or more, not {workers}")
        spec = self.transform
        return make_loader(data, split, batch_size, train=False, tta=tta, input_size=spec.get("crop"),
                           num_workers=workers, mean=spec.get("mean", "image"), normalize=spec.get("normalize"),
                           scale=spec["scale"])

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities on the CPU: ``B x C x H x W`` -> ``B x K``; of ``B x V x C x H x W`` views,
        the softmax averaged over each image's views (the paper's 10-patch test)."""
        return average_views(lambda x: torch.softmax(self.model(x.to(self.device)).float(), 1), images).cpu()
