"""The registered variants: each one a config (keyword rows), built by the same class.

=================  =====  ======================================================
name               input  what it is
=================  =====  ======================================================
``alexnet``        224    the 2012 paper's network (two towers, per-tower LRN
                          k=2 alpha=1e-4 on the window sum, dropout after fc6/7,
                          N(0, 0.01) weights, biases 1 on conv2/4/5 and fc6/7)
``alexnet-caffe``  227    BVLC ``bvlc_alexnet``: no conv1 padding, LRN k=1 with
                          alpha/n over all channels (towers mixed), fc6/fc7
                          N(0, 0.005), biases 0.1 where the paper has 1
``alexnet-owt``    224    torchvision's single-tower net ("One weird trick"):
                          64-192-384-256-256, no LRN, no groups, adaptive
                          average pool, dropout before fc6/fc7; state-dict keys
                          equal torchvision's
``alexnet-small``  32     the family for 28-32 px images (Fashion-MNIST, CIFAR),
                          see below
=================  =====  ======================================================

Each is built by its own function below (``alexnet``, ``alexnet_caffe``, ...),
registered under its name. Every variant takes ``towers=1|2``: two towers
group conv2, conv4 and conv5 (``own_tower`` in the rows) and take LRN per
tower where the variant's LRN is per tower (``alexnet``, ``alexnet-small``;
Caffe's LRN spans all channels); one tower has the same channels with
``groups=1``. ``alexnet-owt`` has one tower by default and no LRN layer, so
``lrn=on`` is refused there.

``alexnet-small`` keeps the paper's ingredients (two towers with grouped
conv2/4/5, ReLU, per-tower LRN after conv1 and conv2, overlapping 3/2 pooling,
dropout 0.5 after fc6 and fc7, biases 1 on conv2/4/5 and fc6/7) at a size that
trains an epoch of 60,000 28x28 images in about a minute on a 2-core CPU.
For a 32 x 32 input:

    layer  kernels        size/stride  groups  output        after it
    conv1   48 (24+24)    5x5 / 1 p2   1        48 x 32 x 32  ReLU, LRN, max-pool 3/2 -> 15
    conv2   96 (48+48)    5x5 / 1 p2   2        96 x 15 x 15  ReLU, LRN, max-pool 3/2 -> 7
    conv3  128            3x3 / 1 p1   1       128 x 7 x 7    ReLU
    conv4  128            3x3 / 1 p1   2       128 x 7 x 7    ReLU
    conv5   96            3x3 / 1 p1   2        96 x 7 x 7    ReLU, max-pool 3/2 -> 3
    fc6    512                                 512            ReLU, dropout 0.5
    fc7    512                                 512            ReLU, dropout 0.5
    fc8     10                                 num_classes

Built with ``input_size=28`` the maps are 28 -> 13 -> 6 -> 2 and fc6 sees 96 x 2 x 2.
Its weights start from Kaiming-normal rather than N(0, 0.01): at this depth and
width N(0, 0.01) leaves the signal too small to train in a CPU budget. Pass
``init="paper"`` to use the paper's.

Known issue: with the paper's biases of 1 this net stalls at chance on the
built-in dataset (``configs/demo.yaml`` passes ``bias=0.0``; on Fashion-MNIST
it trains with them). ``experiments/bias_stall.py`` shows why: at initialisation
the constant that the biases add dominates the activations (fc7 varies across
images by 0.07 of its mean, 0.48 with biases 0) and the logits (spread 0.85
across classes, 0.05 across images). The first SGD steps fit that constant
(loss 3.5, then 20.8 at step 1), and those large updates push conv5 and fc7
below zero for every image: 98% of conv5's and 100% of fc7's units are dead by
step 100, they get no gradient, and the output no longer depends on the input.
With biases 0 no layer loses more than a quarter of its units.
"""

from __future__ import annotations

from .alexnet import AlexNet, AlexNetConfig, ConvSpec, LRNSpec, config_with
from .registry import register

PAPER = AlexNetConfig(
    name="alexnet",
    convs=(
        ConvSpec(out_channels=96, kernel=11, stride=4, padding=2, lrn=True, pool=True),
        ConvSpec(out_channels=256, kernel=5, padding=2, own_tower=True, lrn=True, pool=True, bias=1.0),
        ConvSpec(out_channels=384, kernel=3, padding=1),
        ConvSpec(out_channels=384, kernel=3, padding=1, own_tower=True, bias=1.0),
        ConvSpec(out_channels=256, kernel=3, padding=1, own_tower=True, pool=True, bias=1.0),
    ),
    input_size=224,
)

CAFFE = AlexNetConfig(
    name="alexnet-caffe",
    convs=(
        ConvSpec(out_channels=96, kernel=11, stride=4, padding=0, lrn=True, pool=True),
        ConvSpec(out_channels=256, kernel=5, padding=2, own_tower=True, lrn=True, pool=True, bias=0.1),
        ConvSpec(out_channels=384, kernel=3, padding=1),
        ConvSpec(out_channels=384, kernel=3, padding=1, own_tower=True, bias=0.1),
        ConvSpec(out_channels=256, kernel=3, padding=1, own_tower=True, pool=True, bias=0.1),
    ),
    fc_bias=(0.1, 0.1),
    input_size=227,
    lrn=LRNSpec(size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_per_channel=True, per_tower=False),
    init="caffe",
    fc_init_std=0.005,
)

OWT = AlexNetConfig(
    name="alexnet-owt",
    convs=(
        ConvSpec(out_channels=64, kernel=11, stride=4, padding=2, pool=True),
        ConvSpec(out_channels=192, kernel=5, padding=2, own_tower=True, pool=True),
        ConvSpec(out_channels=384, kernel=3, padding=1),
        ConvSpec(out_channels=256, kernel=3, padding=1, own_tower=True),
        ConvSpec(out_channels=256, kernel=3, padding=1, own_tower=True, pool=True),
    ),
    input_size=224,
    lrn=None,
    dropout_before_fc=True,
    adaptive_pool=6,
    init="torch",
    towers=1,
    state_dict_names=(
        ("conv1", "features.0"),
        ("conv2", "features.3"),
        ("conv3", "features.6"),
        ("conv4", "features.8"),
        ("conv5", "features.10"),
        ("fc6", "classifier.1"),
        ("fc7", "classifier.4"),
        ("fc8", "classifier.6"),
    ),
)

SMALL = AlexNetConfig(
    name="alexnet-small",
    convs=(
        ConvSpec(out_channels=48, kernel=5, padding=2, lrn=True, pool=True),
        ConvSpec(out_channels=96, kernel=5, padding=2, own_tower=True, lrn=True, pool=True, bias=1.0),
        ConvSpec(out_channels=128, kernel=3, padding=1),
        ConvSpec(out_channels=128, kernel=3, padding=1, own_tower=True, bias=1.0),
        ConvSpec(out_channels=96, kernel=3, padding=1, own_tower=True, pool=True, bias=1.0),
    ),
    fc=(512, 512),
    input_size=32,
    num_classes=10,
    init="kaiming",
)

CONFIGS = {c.name: c for c in (PAPER, CAFFE, OWT, SMALL)}


@register("alexnet")
def alexnet(**options) -> AlexNet:
    """alexnet: the 2012 paper's network: two towers, per-tower LRN, overlapping pooling."""
    return AlexNet(config_with(PAPER, **options))


@register("alexnet-caffe")
def alexnet_caffe(**options) -> AlexNet:
    """alexnet-caffe: BVLC bvlc_alexnet: 227 input, LRN k=1 alpha/n over all channels, biases 0.1."""
    return AlexNet(config_with(CAFFE, **options))


@register("alexnet-owt")
def alexnet_owt(**options) -> AlexNet:
    """alexnet-owt: torchvision's single-tower AlexNet ('One weird trick'); loads torchvision weights."""
    return AlexNet(config_with(OWT, **options))


@register("alexnet-small")
def alexnet_small(**options) -> AlexNet:
    """alexnet-small: the AlexNet family for 28-32 px images (Fashion-MNIST, CIFAR)."""
    return AlexNet(config_with(SMALL, **options))
