"""Turn weights trained elsewhere into an alexnet checkpoint.

``torchvision``: a state dict of ``torchvision.models.alexnet`` (for example
``alexnet-owt-7be5be79.pth``) becomes an ``alexnet-owt`` checkpoint that
carries torchvision's eval transform (resize 256, centre crop 224, mean/std
normalisation), so ``alexnet eval`` and ``alexnet predict`` preprocess images
the way those weights expect. Its ``classes`` are the 1000 ILSVRC-2012 synset
ids in torchvision's order (sorted ids, as a prepared ILSVRC-2012 folder has
them, so ``eval`` and ``features`` accept the checkpoint there) and its
``class_names`` torchvision's category names. The ids ship with the package
(``data/imagenet_synsets.txt``, one a line, the list timm ships as
``imagenet_synsets.txt``).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from .. import models
from ..data.transforms import eval_spec
from ..checkpoint import make_checkpoint, save_checkpoint
from ..errors import UserError
from ..fileio import require_file

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def imagenet_categories() -> list[str]:
    """The 1000 ILSVRC-2012 class names in torchvision's (synset-sorted) order."""
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_synsets() -> list[str]:
    """The 1000 ILSVRC-2012 synset ids in torchvision's order (sorted: index 0 is n01440764, tench)."""
    from importlib.resources import files

    return (files("alexnet.data") / "imagenet_synsets.txt").read_text(encoding="ascii").split()


def _read_state_dict(path: Path) -> dict:
    require_file(path, "weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            with warnings.catch_warnings():  # a raw pickle draws a note on its protocol before being refused
                warnings.simplefilter("ignore")
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"refusing to load {path}: it holds more than plain tensors") from None
    except Exception as e:
        raise UserError(f"cannot read weights {path}: {type(e).__name__}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    return sd


def convert_torchvision(weights: str | Path, out: str | Path) -> dict:
    """Write an ``alexnet-owt`` checkpoint from torchvision AlexNet weights."""
    sd = _read_state_dict(Path(weights))
    head = sd.get("classifier.6.weight")
    if head is None:
        raise UserError(f"{weights} is not a torchvision AlexNet state dict (no classifier.6.weight)")
    n = head.shape[0]
    if n == 1000:
        classes, names = imagenet_synsets(), imagenet_categories()
    else:
        classes = names = [str(i) for i in range(n)]
    mean = 255 * torch.tensor(IMAGENET_MEAN)  # pixel units, as every checkpoint's
    ckpt = make_checkpoint(
        "alexnet-owt", {"num_classes": n}, sd, classes, names,
        eval_spec(256, 224, "rgb", normalize={"mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
        {"mean_image": mean.view(1, 1, 3).expand(256, 256, 3), "mean_rgb": mean},
        metrics={"note": "converted from torchvision; torchvision reports 56.522% / 79.066% top-1/top-5 (centre crop)"},
        source=f"torchvision:{Path(weights).name}",
    )
    models.from_checkpoint(ckpt)  # refuse weights that do not fit before writing anything
    save_checkpoint(out, ckpt)
    return ckpt
