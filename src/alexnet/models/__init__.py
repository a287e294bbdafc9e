"""The AlexNet family. ``create(name, num_classes=..., checkpoint_path=..., **options)``; ``from_checkpoint(ckpt)``; ``names()``."""

from .alexnet import AlexNet, AlexNetConfig, ConvSpec, LRNSpec, config_with
from .lrn import LocalResponseNorm, local_response_norm
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
    "UnknownModelError",
    "checkpoint_pretrained_cfg",
    "config_with",
    "create",
    "from_checkpoint",
    "local_response_norm",
    "names",
    "register",
]
