"""torch.hub entry points: ``torch.hub.load(REPO_DIR, "alexnet", source="local")``.

One entry per registered variant: ``alexnet``, ``alexnet_caffe``,
``alexnet_owt``, ``alexnet_small``. Keyword options are those of
``alexnet.models.create`` (``num_classes``, ``towers``, ``lrn``, ``width``, ...).
Nothing is downloaded: no weights are published for these models, so
``pretrained=True`` needs ``checkpoint_path=`` (a ``.ckpt`` from ``alexnet
train`` or ``alexnet convert``, an exported ``.safetensors``, or a folder
holding one)::

    m = torch.hub.load("path/to/alexnet", "alexnet_small", source="local", num_classes=10)
    m = torch.hub.load("path/to/alexnet", "alexnet", source="local", checkpoint_path="run/best.ckpt")
"""

import os
import sys

dependencies = ["torch", "numpy", "safetensors", "PIL"]  # PIL: alexnet.data (pretrained_cfg's small-image rule)

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:  # a checkout that was not pip-installed: the package is in src/
    sys.path.insert(0, _SRC)

from alexnet import models as _models  # noqa: E402


def _create(name, pretrained, checkpoint_path, options):
    if pretrained and checkpoint_path is None:
        raise ValueError(f"no weights are published for {name}; pass checkpoint_path= (a .ckpt from "
                         f"`alexnet train` or `alexnet convert`, or an exported .safetensors)")
    return _models.create(name, checkpoint_path=checkpoint_path, **options)


def alexnet(pretrained=False, checkpoint_path=None, **options):
    """The 2012 paper's network: two towers, per-tower LRN, overlapping pooling (224 px)."""
    return _create("alexnet", pretrained, checkpoint_path, options)


def alexnet_caffe(pretrained=False, checkpoint_path=None, **options):
    """BVLC bvlc_alexnet: 227 px, LRN k=1 alpha/n over all channels, biases 0.1."""
    return _create("alexnet-caffe", pretrained, checkpoint_path, options)


def alexnet_owt(pretrained=False, checkpoint_path=None, **options):
    """torchvision's single-tower AlexNet ('One weird trick'); its state-dict keys are torchvision's."""
    return _create("alexnet-owt", pretrained, checkpoint_path, options)


def alexnet_small(pretrained=False, checkpoint_path=None, **options):
    """The AlexNet family for 28-32 px images (Fashion-MNIST, CIFAR)."""
    return _create("alexnet-small", pretrained, checkpoint_path, options)
