"""The AlexNet family: one network, each variant a config.

The paper's network (variant ``alexnet``), Figure 2 of Krizhevsky et al. 2012,
for a 224 x 224 input:

    layer  kernels          size/stride  input seen          output       after it
    conv1   96 (48+48)      11x11 / 4    all 3 channels       96 x 55 x 55  ReLU, LRN, max-pool 3/2
    conv2  256 (128+128)     5x5 / 1     own tower (groups=2) 256 x 27 x 27 ReLU, LRN, max-pool 3/2
    conv3  384               3x3 / 1     both towers          384 x 13 x 13 ReLU
    conv4  384               3x3 / 1     own tower            384 x 13 x 13 ReLU
    conv5  256               3x3 / 1     own tower            256 x 13 x 13 ReLU, max-pool 3/2 -> 6x6
    fc6   4096                            all 9216             4096         ReLU, dropout 0.5
    fc7   4096                                                 4096         ReLU, dropout 0.5
    fc8   1000                                                 1000         (softmax in the loss)

LRN is the paper's (k=2, n=5, alpha=1e-4 on the window *sum*, beta=0.75),
computed per tower. Weights are N(0, 0.01^2); biases of conv2, conv4, conv5,
fc6 and fc7 are 1, the others 0. 60,965,224 parameters.

``order``: ``lrn-pool`` is the paper's (ReLU, LRN, then max-pool after conv1
and conv2); ``pool-lrn`` is CaffeNet's (``bvlc_reference_caffenet``: ReLU,
max-pool, then LRN), which normalizes a map about four times smaller.

``towers``: 2 is the paper's two GPUs (conv2, conv4 and conv5 see only their
own tower: ``groups=2``; LRN per tower); 1 is one tower of the same total
width (``groups=1``, LRN over all channels). With two towers every conv
layer's kernels are split between them, so each must have an even number.

Layers are attributes named as in the paper (``conv1`` ... ``fc8``), so
``extract(x, layers=("fc7",))`` takes activations by name. Activation names:
``conv{i}`` (after the nonlinearity), ``norm{i}`` (after LRN), ``pool{i}``,
``fc6``/``fc7`` (after the nonlinearity, before dropout) and ``fc8`` (logits).
The forward is one walk over named steps (:meth:`AlexNet.steps`);
``forward_features``, ``forward_head`` and ``extract`` each run a part of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Iterable

import torch
from torch import nn
import torch.nn.functional as F

from .lrn import LocalResponseNorm
from .options import OPTIONS, POOLS, ModelOptions, parse_option
from .pretrained import default_pretrained_cfg

CONV_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_NAMES = ("fc6", "fc7", "fc8")
_HIDDEN = ("avgpool", "flatten", "drop")  # steps of the walk that extract() does not name


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of the family and what follows it."""

    out_channels: int  # at width 1, all towers together
    kernel: int
    stride: int = 1
    padding: int = 0
    own_tower: bool = False  # sees only its own tower's channels (groups = towers)
    lrn: bool = False  # LRN after the nonlinearity (when the config has an LRN)
    pool: bool = False  # max-pool after (LRN and) the nonlinearity
    bias: float = 0.0  # constant bias init (paper, caffe and kaiming inits)


@dataclass(frozen=True)
class LRNSpec:
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0
    alpha_per_channel: bool = False  # True: alpha is divided by size (Caffe, PyTorch)
    per_tower: bool = True  # False: one window over all channels (Caffe)


@dataclass(frozen=True)
class AlexNetConfig:
    """Everything that tells one AlexNet-family network from another: five conv rows, fc6/fc7, fc8."""

    name: str
    convs: tuple[ConvSpec, ...]
    fc: tuple[int, int] = (4096, 4096)  # units of fc6, fc7 at width 1
    fc_bias: tuple[float, float] = (1.0, 1.0)  # constant bias of fc6, fc7 (paper init)
    input_size: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    activation: str = "relu"  # relu | tanh
    lrn: LRNSpec | None = LRNSpec()
    pool_kernel: int = 3  # 3/2 overlapping (paper), 2/2 the paper's baseline
    order: str = "lrn-pool"  # where a layer has both: LRN then max-pool (paper) | pool-lrn (CaffeNet)
    pool_stride: int = 2
    dropout: float = 0.5
    dropout_before_fc: bool = False  # torchvision: dropout on the *inputs* of fc6/fc7
    adaptive_pool: int | None = None  # torchvision: AdaptiveAvgPool2d(6) before fc6
    init: str = "paper"  # paper | caffe | torch | kaiming
    init_std: float = 0.01
    fc_init_std: float = 0.01
    width: float = 1.0
    towers: int = 2  # 2: the paper's two GPUs (grouped own-tower convs, LRN per tower); 1: one tower
    # Key names in state_dict() when they must match another library's (alexnet-owt).
    state_dict_names: tuple[tuple[str, str], ...] = ()

    @property
    def input_scale(self) -> float:
        """A white pixel's value (before the mean is taken off) in the input this initialisation was chosen for.

        255 for the paper's and Caffe's N(0, 0.01) weights, which were set for
        raw pixel values minus the mean (and LRN's k=2, alpha=1e-4 with them);
        1 for kaiming's and torch's, which expect inputs of about unit size.
        """
        return 255.0 if self.init in ("paper", "caffe") else 1.0

    @property
    def has_lrn(self) -> bool:
        """Whether the network has LRN layers (an LRN spec, and rows that put one)."""
        return self.lrn is not None and any(c.lrn for c in self.convs)


def _act(name: str):
    return {"relu": F.relu, "tanh": torch.tanh}[parse_option("activation", name)]


def conv_channels(cfg: AlexNetConfig) -> list[int]:
    """Output channels of conv1..conv5 at the config's width, checked to split into its towers.

    Own-tower layers are rounded up to a whole number of channels per tower;
    with two towers a layer that both towers share (conv1, conv3) must come
    out even, since the towers split it too (conv1 for LRN per tower and
    conv2's groups, conv3 for conv4's).
    """
    out = []
    for name, spec in zip(CONV_NAMES, cfg.convs):
        c = max(1, int(round(spec.out_channels * cfg.width)))
        if spec.own_tower:
            c = -(-c // cfg.towers) * cfg.towers
        if c % cfg.towers:
            raise ValueError(f"width {cfg.width:g} gives {name} {c} channels, which do not split into "
                             f"{cfg.towers} towers: choose another width, or towers=1")
        out.append(c)
    return out


def _fc_units(cfg: AlexNetConfig) -> tuple[int, int]:
    return tuple(max(1, int(round(u * cfg.width))) for u in cfg.fc)


def _feature_side(cfg: AlexNetConfig) -> int:
    """Side of the last feature map (what fc6 sees)."""
    if cfg.adaptive_pool:
        return cfg.adaptive_pool
    s = cfg.input_size
    for spec in cfg.convs:
        s = (s + 2 * spec.padding - spec.kernel) // spec.stride + 1
        if spec.pool:
            s = (s - cfg.pool_kernel) // cfg.pool_stride + 1
    if s < 1:
        raise ValueError(f"{cfg.name}: input size {cfg.input_size} is too small for this network")
    return s


# Fields of AlexNetConfig that are options of the same name: their allowed values are the options'.
_OPTION_FIELDS = tuple(k for k in OPTIONS if k in AlexNetConfig.__dataclass_fields__ and k != "lrn")


def check(cfg: AlexNetConfig) -> None:
    """Refuse a config the network cannot honour, with a one-line ValueError naming it."""
    if len(cfg.convs) != 5 or len(cfg.fc) != 2 or len(cfg.fc_bias) != 2:
        raise ValueError(f"{cfg.name}: an AlexNet has 5 conv rows and 2 hidden fc layers, "
                         f"not {len(cfg.convs)} and {len(cfg.fc)}")
    for key in _OPTION_FIELDS:  # towers, init, order, activation, dropout, width, num_classes, input_size, ...
        if getattr(cfg, key) is None:
            raise ValueError(f"{cfg.name}: {key} must be set in a network's config")
        parse_option(key, getattr(cfg, key))
    if cfg.lrn is not None and not cfg.has_lrn:
        raise ValueError(f"{cfg.name} has no LRN layer, so lrn=on cannot be honoured (leave lrn unset, or off)")
    conv_channels(cfg)
    _feature_side(cfg)


class AlexNet(nn.Module):
    """An AlexNet-family network built from an :class:`AlexNetConfig`.

    ``num_classes``, ``reset_classifier(n)`` and ``pretrained_cfg`` (the input
    the weights expect) are there as timm's models have them.
    """

    def __init__(self, cfg: AlexNetConfig) -> None:
        super().__init__()
        check(cfg)
        self.cfg = cfg
        self.act = _act(cfg.activation)
        widths = conv_channels(cfg)
        ins = (cfg.in_channels, *widths[:-1])
        self.conv1, self.conv2, self.conv3, self.conv4, self.conv5 = (
            nn.Conv2d(i, o, s.kernel, s.stride, s.padding, groups=cfg.towers if s.own_tower else 1)
            for i, o, s in zip(ins, widths, cfg.convs))
        side = _feature_side(cfg)
        f6, f7 = _fc_units(cfg)
        self.fc6 = nn.Linear(widths[-1] * side * side, f6)
        self.fc7 = nn.Linear(f6, f7)
        self.fc8 = self._new_head(cfg.num_classes)
        self.num_features = f7
        self._feature_steps, self._head_steps = self.steps(cfg)
        self._pre_logits_steps = self._head_steps[: self._head_steps.index(("fc7", True)) + 1]
        # The parameter-free layers, where the steps put them.
        lrn = cfg.lrn
        for name, _ in self._feature_steps:
            if name.startswith("norm"):
                # conv1 has groups=1, yet each tower holds half its kernels: the
                # window is per tower whenever per_tower is set.
                groups = cfg.towers if lrn.per_tower else 1
                self.add_module(name, LocalResponseNorm(lrn.size, lrn.alpha, lrn.beta, lrn.k, groups, lrn.alpha_per_channel))
            elif name.startswith("pool"):
                self.add_module(name, nn.MaxPool2d(cfg.pool_kernel, cfg.pool_stride))
        self.avgpool = nn.AdaptiveAvgPool2d(cfg.adaptive_pool) if cfg.adaptive_pool else None
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(cfg.dropout)
        self.reset_parameters()
        if cfg.state_dict_names:
            self._install_key_map(dict(cfg.state_dict_names))
        self.pretrained_cfg = default_pretrained_cfg(self)

    # ------------------------------------------------------------ the walk
    @staticmethod
    def steps(cfg: AlexNetConfig) -> tuple[tuple[tuple[str, bool], ...], tuple[tuple[str, bool], ...]]:
        """The forward pass as ``(layer, nonlinearity after it)`` steps: the features part, the head part."""
        features = []
        for name, spec in zip(CONV_NAMES, cfg.convs):
            i = name[-1]
            features.append((name, True))
            norm = [(f"norm{i}", False)] if spec.lrn and cfg.lrn is not None else []
            pool = [(f"pool{i}", False)] if spec.pool else []
            features += pool + norm if cfg.order == "pool-lrn" else norm + pool
        if cfg.adaptive_pool:
            features.append(("avgpool", False))
        head = [("flatten", False)]
        for name in FC_NAMES[:2]:
            if cfg.dropout_before_fc:  # torchvision: dropout on the inputs of fc6, fc7
                head.append(("drop", False))
            head.append((name, True))
            if not cfg.dropout_before_fc:  # the paper: dropout on the outputs of fc6, fc7
                head.append(("drop", False))
        head.append(("fc8", False))
        return tuple(features), tuple(head)

    def _walk(self, x: torch.Tensor, steps, taps: dict | None = None) -> torch.Tensor:
        """Run ``steps`` on ``x``; the activations named in ``taps`` are stored there."""
        for name, act in steps:
            x = getattr(self, name)(x)
            if act:
                x = self.act(x)
            if taps is not None and name in taps:
                taps[name] = x
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last pooled feature map (``N x C x 6 x 6`` for ``alexnet``)."""
        return self._walk(x, self._feature_steps)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """From ``forward_features`` output to logits (or to fc7 with ``pre_logits``)."""
        return self._walk(x, self._pre_logits_steps if pre_logits else self._head_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def extract(self, x: torch.Tensor, layers: Iterable[str] = ("fc7",)) -> dict[str, torch.Tensor]:
        """Activations by layer name, in forward order, e.g. ``extract(x, ("conv1", "fc7"))``."""
        layers = tuple(layers)
        known = self.layer_names()
        bad = [n for n in layers if n not in known]
        if bad:
            raise ValueError(f"unknown layer(s) {', '.join(bad)}; known: {', '.join(known)}")
        steps = self._feature_steps + self._head_steps
        last = max(layers, key=known.index)
        taps = dict.fromkeys(layers)
        self._walk(x, steps[: [n for n, _ in steps].index(last) + 1], taps)
        return {n: taps[n] for n in known if n in taps}

    def layer_names(self) -> list[str]:
        """Every activation name ``extract`` accepts, in forward order."""
        return [name for name, _ in self._feature_steps + self._head_steps if name not in _HIDDEN]

    @property
    def conv_names(self) -> list[str]:
        return list(CONV_NAMES)

    @property
    def fc_names(self) -> list[str]:
        return list(FC_NAMES)

    # ------------------------------------------------------------ the head
    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def _new_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:  # timm's convention: no classifier, the output is fc7's
            return nn.Identity()
        return nn.Linear(_fc_units(self.cfg)[1], num_classes)

    @torch.no_grad()
    def _init_head(self) -> None:
        if isinstance(self.fc8, nn.Linear) and self.cfg.init != "torch":
            self.fc8.weight.normal_(0.0, self.cfg.init_std)
            self.fc8.bias.zero_()

    def reset_classifier(self, num_classes: int) -> None:
        """A new fc8 for ``num_classes`` outputs, initialised as the variant's is (0: none, forward gives fc7)."""
        num_classes = int(num_classes)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, not {num_classes}")
        self.cfg = replace(self.cfg, num_classes=num_classes)
        device, dtype = self.fc7.weight.device, self.fc7.weight.dtype
        self.fc8 = self._new_head(num_classes).to(device, dtype)
        self._init_head()
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes, "label_names": None,
                               "label_descriptions": None}

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        if cfg.init == "torch":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.reset_parameters()
            return
        for name, spec in zip(CONV_NAMES, cfg.convs):
            conv = getattr(self, name)
            if cfg.init == "kaiming":
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            else:
                conv.weight.normal_(0.0, cfg.init_std)
            conv.bias.fill_(spec.bias)
        for fc, b in zip((self.fc6, self.fc7), cfg.fc_bias):
            if cfg.init == "kaiming":
                nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            else:
                fc.weight.normal_(0.0, cfg.fc_init_std)
            fc.bias.fill_(b)
        self._init_head()

    # ------------------------------------------- foreign state_dict key names
    def _install_key_map(self, ours_to_theirs: dict[str, str]) -> None:
        theirs_to_ours = {v: k for k, v in ours_to_theirs.items()}

        def rename(prefix: str, key: str, table: dict[str, str]) -> str:
            rest = key[len(prefix):]
            head, _, tail = rest.rpartition(".")
            return prefix + table[head] + "." + tail if head in table else key

        def save_hook(module, state_dict, prefix, local_metadata):
            for key in list(state_dict):
                if key.startswith(prefix):
                    state_dict[rename(prefix, key, ours_to_theirs)] = state_dict.pop(key)
            return state_dict

        def load_hook(state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
            for key in list(state_dict):
                if key.startswith(prefix):
                    state_dict[rename(prefix, key, theirs_to_ours)] = state_dict.pop(key)

        self._register_state_dict_hook(save_hook)
        self._register_load_state_dict_pre_hook(load_hook)


def configure(cfg: AlexNetConfig, options: ModelOptions) -> AlexNetConfig:
    """``cfg`` with ``options`` (typed and checked: :class:`~alexnet.models.options.ModelOptions`) applied.

    An option named as a field of the config sets it; ``lrn`` (on: the
    variant's LRN, or the paper's where it has none), ``lrn_alpha`` (LRN's
    alpha in the variant's form), ``pool`` (the pooling's kernel and stride)
    and ``bias`` (the constant of the biases that are not 0) are said here.
    None leaves the variant's choice. A combination the network cannot honour
    (``lrn=on`` where the variant has no LRN layer, ``bias`` with
    ``init=torch``, a width that does not split into the towers) is refused
    with a ValueError naming it.
    """
    given = {k: v for k, v in dataclasses.asdict(options).items() if v is not None}
    kw = {k: v for k, v in given.items() if k in _OPTION_FIELDS}
    if "lrn" in given:
        kw["lrn"] = (cfg.lrn or LRNSpec()) if given["lrn"] else None
    if "pool" in given:
        kw["pool_kernel"], kw["pool_stride"] = POOLS[given["pool"]]
    if "bias" in given:
        kw["convs"] = tuple(replace(c, bias=given["bias"]) if c.bias else c for c in cfg.convs)
        kw["fc_bias"] = tuple(given["bias"] for _ in cfg.fc_bias)
    out = replace(cfg, **kw)
    if "lrn_alpha" in given:
        if out.lrn is None:
            raise ValueError(f"lrn_alpha sets LRN's alpha, but {cfg.name} has LRN off here: leave lrn_alpha unset")
        out = replace(out, lrn=replace(out.lrn, alpha=given["lrn_alpha"]))
    if "bias" in given and out.init == "torch":
        raise ValueError(f"bias sets the constant biases of the paper's init, but {cfg.name} uses init=torch, "
                         f"which draws them: pass init=paper, caffe or kaiming with it")
    check(out)
    return out


def config_with(cfg: AlexNetConfig, **options) -> AlexNetConfig:
    """``cfg`` with the options given as keywords (``create``'s), parsed once by
    :meth:`ModelOptions.parse <alexnet.models.options.ModelOptions.parse>` and applied by :func:`configure`."""
    return configure(cfg, ModelOptions.parse(options))
