"""The AlexNet family. ``create(name, num_classes=..., checkpoint_path=..., **options)``; ``names()``."""

from .alexnet import AlexNet, AlexNetConfig, ConvSpec, LRNSpec, config_with
from .lrn import LocalResponseNorm, local_response_norm
from .registry import UnknownModelError, create, names, register
from .variants import CONFIGS

__all__ = [
    "AlexNet",
    "AlexNetConfig",
    "CONFIGS",
    "ConvSpec",
    "LRNSpec",
    "LocalResponseNorm",
    "UnknownModelError",
    "config_with",
    "create",
    "local_response_norm",
    "names",
    "register",
]
