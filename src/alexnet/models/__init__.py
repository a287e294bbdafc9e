"""The AlexNet family. ``create(name, num_classes=..., checkpoint_path=..., **options)``; ``from_checkpoint(ckpt)``;
``names()``. The options every variant takes: :class:`ModelOptions` (``options.py``)."""

from .alexnet import AlexNet, AlexNetConfig, ConvSpec, LRNSpec, config_with, configure
from .lrn import LocalResponseNorm, local_response_norm
from .options import ModelOptions
from .pretrained import checkpoint_pretrained_cfg
from .registry import UnknownModelError, create, from_checkpoint, names, register
from .variants import CONFIGS

__all__ = [
    "AlexNet",
    "AlexNetConfig",
    "CONFIGS",
    "ConvSpec",
    "LRNSpec",
    "LocalResponseNorm",
    "ModelOptions",
    "UnknownModelError",
    "checkpoint_pretrained_cfg",
    "config_with",
    "configure",
    "create",
    "from_checkpoint",
    "local_response_norm",
    "names",
    "register",
]
