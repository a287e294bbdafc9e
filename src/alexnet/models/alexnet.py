"""The AlexNet family: one configurable network, each variant a config.

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

Layers are attributes named as in the paper (``conv1`` ... ``fc8``), so
``extract(x, layers=("fc7",))`` takes activations by name. Activation names:
``conv{i}`` (after the nonlinearity), ``norm{i}`` (after LRN), ``pool{i}``,
``fc6``/``fc7`` (after the nonlinearity, before dropout) and ``fc8`` (logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import torch
from torch import nn
import torch.nn.functional as F

from .lrn import LocalResponseNorm


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    norm: bool = False  # LRN after the nonlinearity
    pool: bool = False  # max-pool after (LRN and) the nonlinearity
    bias: float = 0.0  # constant bias init (paper/caffe init)


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
    """Everything that tells one AlexNet-family network from another."""

    name: str
    convs: tuple[ConvSpec, ...]
    fc: tuple[int, ...] = (4096, 4096)
    fc_bias: tuple[float, ...] = (1.0, 1.0)  # constant bias of fc6, fc7 (paper init)
    input_size: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    activation: str = "relu"  # relu | tanh
    lrn: LRNSpec | None = LRNSpec()
    pool_kernel: int = 3  # 3/2 overlapping (paper), 2/2 the paper's baseline
    pool_stride: int = 2
    dropout: float = 0.5
    dropout_before_fc: bool = False  # torchvision: dropout on the *inputs* of fc6/fc7
    adaptive_pool: int | None = None  # torchvision: AdaptiveAvgPool2d(6) before fc6
    init: str = "paper"  # paper | caffe | torch | kaiming
    init_std: float = 0.01
    fc_init_std: float = 0.01
    width: float = 1.0
    towers: int = 2  # the paper's two GPUs; per-tower LRN splits channels this many ways
    # Key names in state_dict() when they must match another library's (alexnet-owt).
    state_dict_names: tuple[tuple[str, str], ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def input_scale(self) -> float:
        """A white pixel's value (before the mean is taken off) in the input this initialisation was chosen for.

        255 for the paper's and Caffe's N(0, 0.01) weights, which were set for
        raw pixel values minus the mean (and LRN's k=2, alpha=1e-4 with them);
        1 for kaiming's and torch's, which expect inputs of about unit size.
        """
        return 255.0 if self.init in ("paper", "caffe") else 1.0


def _act(name: str):
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    raise ValueError(f"unknown activation {name!r} (choose relu or tanh)")


def _scaled(channels: int, width: float, groups: int) -> int:
    c = max(groups, int(round(channels * width)))
    return int(math.ceil(c / groups) * groups)


class AlexNet(nn.Module):
    """An AlexNet-family network built from an :class:`AlexNetConfig`."""

    def __init__(self, cfg: AlexNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.act = _act(cfg.activation)
        self.num_conv = len(cfg.convs)
        self.num_fc = len(cfg.fc) + 1
        in_ch = cfg.in_channels
        widths = []
        for i, spec in enumerate(cfg.convs, 1):
            out_ch = _scaled(spec.out_channels, cfg.width, spec.groups)
            widths.append(out_ch)
            setattr(self, f"conv{i}", nn.Conv2d(in_ch, out_ch, spec.kernel, spec.stride, spec.padding, groups=spec.groups))
            if spec.norm and cfg.lrn is not None:
                lrn = cfg.lrn
                # conv1 has groups=1, yet each tower holds half its kernels: the
                # window is per tower whenever per_tower is set.
                g = cfg.towers if lrn.per_tower else 1
                setattr(self, f"norm{i}", LocalResponseNorm(lrn.size, lrn.alpha, lrn.beta, lrn.k, g, lrn.alpha_per_channel))
            if spec.pool:
                setattr(self, f"pool{i}", nn.MaxPool2d(cfg.pool_kernel, cfg.pool_stride))
            in_ch = out_ch
        self.feature_channels = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(cfg.adaptive_pool) if cfg.adaptive_pool else None
        self.feature_size = self._feature_hw()
        in_f = in_ch * self.feature_size * self.feature_size
        first_fc = self.num_conv + 1
        for j, units in enumerate(cfg.fc):
            units = _scaled(units, cfg.width, 1)
            setattr(self, f"fc{first_fc + j}", nn.Linear(in_f, units))
            in_f = units
        self.num_features = in_f
        self.head_name = f"fc{first_fc + len(cfg.fc)}"
        setattr(self, self.head_name, nn.Linear(in_f, cfg.num_classes))
        self.drop = nn.Dropout(cfg.dropout)
        self.reset_parameters()
        if cfg.state_dict_names:
            self._install_key_map(dict(cfg.state_dict_names))

    # ----------------------------------------------------------------- shape
    def _feature_hw(self) -> int:
        if self.cfg.adaptive_pool:
            return self.cfg.adaptive_pool
        s = self.cfg.input_size
        for spec in self.cfg.convs:
            s = (s + 2 * spec.padding - spec.kernel) // spec.stride + 1
            if spec.pool:
                s = (s - self.cfg.pool_kernel) // self.cfg.pool_stride + 1
        if s < 1:
            raise ValueError(f"{self.cfg.name}: input size {self.cfg.input_size} is too small for this network")
        return s

    @property
    def conv_names(self) -> list[str]:
        return [f"conv{i}" for i in range(1, self.num_conv + 1)]

    @property
    def fc_names(self) -> list[str]:
        return [f"fc{self.num_conv + j}" for j in range(1, self.num_fc + 1)]

    def layer_names(self) -> list[str]:
        """Every activation name ``extract`` accepts, in forward order."""
        names = []
        for i in range(1, self.num_conv + 1):
            names.append(f"conv{i}")
            if hasattr(self, f"norm{i}"):
                names.append(f"norm{i}")
            if hasattr(self, f"pool{i}"):
                names.append(f"pool{i}")
        return names + self.fc_names

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        if cfg.init == "torch":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.reset_parameters()
            return
        if cfg.init not in ("paper", "caffe", "kaiming"):
            raise ValueError(f"unknown init {cfg.init!r} (choose paper, caffe, kaiming or torch)")
        for i, spec in enumerate(cfg.convs, 1):
            conv = getattr(self, f"conv{i}")
            if cfg.init == "kaiming":
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            else:
                conv.weight.normal_(0.0, cfg.init_std)
            conv.bias.fill_(spec.bias)
        fcs = self.fc_names
        for name, b in zip(fcs[:-1], cfg.fc_bias):
            fc = getattr(self, name)
            if cfg.init == "kaiming":
                nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            else:
                fc.weight.normal_(0.0, cfg.fc_init_std)
            fc.bias.fill_(b)
        head = getattr(self, fcs[-1])
        head.weight.normal_(0.0, cfg.init_std)
        head.bias.zero_()

    # --------------------------------------------------------------- forward
    def _trace(self, x: torch.Tensor, stop: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Run the network, yielding ``(name, activation)``; stop after ``stop``."""
        for i in range(1, self.num_conv + 1):
            x = self.act(getattr(self, f"conv{i}")(x))
            yield f"conv{i}", x
            if stop == f"conv{i}":
                return
            for kind in ("norm", "pool"):
                mod = getattr(self, f"{kind}{i}", None)
                if mod is not None:
                    x = mod(x)
                    yield f"{kind}{i}", x
                    if stop == f"{kind}{i}":
                        return
        if self.avgpool is not None:
            x = self.avgpool(x)
        x = torch.flatten(x, 1)
        fcs = self.fc_names
        for name in fcs[:-1]:
            if self.cfg.dropout_before_fc:
                x = self.drop(x)
            x = self.act(getattr(self, name)(x))
            yield name, x
            if stop == name:
                return
            if not self.cfg.dropout_before_fc:
                x = self.drop(x)
        yield fcs[-1], getattr(self, fcs[-1])(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last pooled feature map (``N x C x 6 x 6`` for ``alexnet``)."""
        for i in range(1, self.num_conv + 1):
            x = self.act(getattr(self, f"conv{i}")(x))
            norm, pool = getattr(self, f"norm{i}", None), getattr(self, f"pool{i}", None)
            if norm is not None:
                x = norm(x)
            if pool is not None:
                x = pool(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """From ``forward_features`` output to logits (or to fc7 with ``pre_logits``)."""
        x = torch.flatten(x, 1)
        fcs = self.fc_names
        for name in fcs[:-1]:
            if self.cfg.dropout_before_fc:
                x = self.drop(x)
            x = self.act(getattr(self, name)(x))
            if pre_logits and name == fcs[-2]:
                return x
            if not self.cfg.dropout_before_fc:
                x = self.drop(x)
        return getattr(self, fcs[-1])(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def extract(self, x: torch.Tensor, layers: Iterable[str] = ("fc7",)) -> dict[str, torch.Tensor]:
        """Activations by layer name, e.g. ``extract(x, ("conv1", "fc7"))``."""
        layers = tuple(layers)
        known = self.layer_names()
        bad = [n for n in layers if n not in known]
        if bad:
            raise ValueError(f"unknown layer(s) {', '.join(bad)}; known: {', '.join(known)}")
        last = max(layers, key=known.index)
        return {n: t for n, t in self._trace(x, stop=last) if n in layers}

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


def config_with(cfg: AlexNetConfig, **overrides) -> AlexNetConfig:
    """Apply the user-facing options every variant takes to a config.

    ``lrn``: on | off (or a bool); ``pool``: overlap | 3/2 | 2/2 | nonoverlap;
    ``dropout``: p; ``width``: channel multiplier; ``activation``: relu | tanh;
    ``bias``: the constant of the biases the paper sets to 1;
    ``num_classes``, ``in_channels``, ``input_size``, ``init``.
    """
    kw = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "lrn":
            on = value if isinstance(value, bool) else str(value).lower() in ("on", "true", "1", "yes")
            if str(value).lower() not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"lrn must be on or off, not {value!r}")
            kw["lrn"] = (cfg.lrn or LRNSpec()) if on else None
        elif key == "pool":
            v = str(value).lower()
            if v in ("overlap", "3/2", "overlapping"):
                kw["pool_kernel"], kw["pool_stride"] = 3, 2
            elif v in ("2/2", "nonoverlap", "non-overlapping"):
                kw["pool_kernel"], kw["pool_stride"] = 2, 2
            else:
                raise ValueError(f"pool must be overlap (3/2) or 2/2, not {value!r}")
        elif key == "activation":
            _act(value)
            kw["activation"] = value
        elif key in ("num_classes", "in_channels", "input_size"):
            kw[key] = int(value)
        elif key in ("dropout", "width"):
            kw[key] = float(value)
        elif key == "bias":
            # The constant the paper puts in the biases of conv2/4/5 and fc6/7 (1; Caffe 0.1).
            b = float(value)
            kw["convs"] = tuple(replace(c, bias=b) if c.bias else c for c in cfg.convs)
            kw["fc_bias"] = tuple(b for _ in cfg.fc_bias)
        elif key == "init":
            kw["init"] = str(value)
        else:
            raise ValueError(f"unknown model option {key!r}")
    if "dropout" in kw and not 0.0 <= kw["dropout"] < 1.0:
        raise ValueError(f"dropout must be in [0, 1), not {kw['dropout']}")
    if "width" in kw and kw["width"] <= 0:
        raise ValueError(f"width must be positive, not {kw['width']}")
    return replace(cfg, **kw)
