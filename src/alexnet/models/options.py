"""The options every variant takes, in one place: their names, types, defaults and allowed values.

:class:`ModelOptions` is the one typed set. Its fields are

* the keyword arguments of ``models.create(name, **options)`` (and of the
  torch.hub entry points);
* the keys of a recipe's ``model`` section besides ``name``
  (``alexnet.engine.config`` builds ``ModelConfig`` from them), all but
  :data:`FROM_DATA`, which the trainer takes from the prepared data;
* what a checkpoint stores under ``model.options`` (:meth:`ModelOptions.stored`).

Each value is parsed once, where it comes in (a recipe or ``--set``, a
keyword argument, a checkpoint: :meth:`ModelOptions.parse`), into its type:
``lrn`` is a bool everywhere (``on``/``off`` in a YAML recipe are its
booleans, and ``create`` also takes the strings ``"on"``/``"off"``); a wrong
value is a one-line error naming the option and what it may be
(:class:`alexnet.values.BadValue`). How each option changes the network is
:func:`alexnet.models.alexnet.configure`; an option that sets the
:class:`~alexnet.models.alexnet.AlexNetConfig` field of its own name needs
nothing more there, so adding one is one field here.

``None`` leaves the variant's own choice. The other defaults are those of
every variant (ReLU, overlapping pooling, LRN before the pool, dropout 0.5,
width 1).

Options no shipped recipe sets, and why each stays:

- ``input_size``: other crops than the variant's (the Caffe 227 / 224 comparison; small images).
- ``activation``: the relu-vs-tanh ablation sets it through ``--set``.
- ``lrn_alpha``: the lrn ablation's third arm (the paper's strength on [0, 1] input).
- ``pool``, ``lrn``, ``towers``: the pooling, lrn and towers ablations set them through ``--set``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..values import BadValue, Limits, check_value, value_range

# Bounds far past any real use, so a hostile option (a checkpoint's, a recipe's) is refused before it allocates.
MAX_WIDTH = 8.0  # 8 x the paper's channels: about 3.9 billion parameters
MAX_CLASSES = 100_000
MAX_INPUT_SIZE = 2048
MAX_IN_CHANNELS = 64

ACTIVATIONS = ("relu", "tanh")
POOLS = {"overlap": (3, 2), "2/2": (2, 2)}  # kernel, stride: 3/2 overlapping (the paper) | 2/2 (its baseline)
ORDERS = ("lrn-pool", "pool-lrn")
INITS = ("paper", "caffe", "kaiming", "torch")
LRN_SPELLINGS = {"on": True, "off": False}  # create(lrn="off"); a YAML recipe's on/off are booleans already

FROM_DATA = ("num_classes", "in_channels")  # create() takes them; a recipe does not: the trainer reads the data


def _option(default: Any, doc: str, *, choices: tuple | None = None, limits: Limits | None = None,
            stored: str = "when set", words: str | None = None):
    """A field of :class:`ModelOptions`. ``stored``: "always", or "when set" (differs from the default) in a
    checkpoint's options; ``words``: what the error says the value must be, instead of the choices."""
    return field(default=default, metadata={"doc": doc, "choices": choices, "limits": limits, "stored": stored,
                                            "words": words})


@dataclass(frozen=True)
class ModelOptions:
    """The options of ``models.create`` and of a recipe's ``model`` section (see the module doc)."""

    input_size: int | None = _option(None, "pixels; None: the variant's (224, 227, 32)",
                                     limits=value_range(1, MAX_INPUT_SIZE))
    activation: str = _option("relu", "relu | tanh", choices=ACTIVATIONS, stored="always")
    lrn: bool | None = _option(None, "on | off; None: the variant's (on for alexnet, alexnet-caffe, alexnet-small; "
                                     "alexnet-owt has no LRN layer)", choices=(None, False, True),
                               words="on or off (true or false; null: the variant's)")
    lrn_alpha: float | None = _option(None, "LRN's alpha in the variant's form; None: the variant's (1e-4); "
                                            "6.5025 = 1e-4 x 255^2: the paper's strength on [0, 1] input",
                                      limits=value_range(0, 1000, above=True))
    pool: str = _option("overlap", "overlap (3/2) | 2/2", choices=tuple(POOLS), stored="always")
    order: str = _option("lrn-pool", "lrn-pool: LRN, then max-pool (the paper) | pool-lrn: max-pool, then LRN "
                                     "(CaffeNet, on a map about four times smaller)", choices=ORDERS)
    dropout: float = _option(0.5, "p of the dropout at fc6 and fc7", limits=value_range(0, 1, below=True),
                             stored="always")
    width: float = _option(1.0, "channel multiplier", limits=value_range(0, MAX_WIDTH, above=True), stored="always")
    init: str | None = _option(None, "paper | caffe | kaiming | torch; None: the variant's",
                               choices=(None, *INITS))
    bias: float | None = _option(None, "constant bias of conv2/4/5, fc6/7 (paper: 1, Caffe 0.1); None: the "
                                       "variant's; not with init=torch, which draws them",
                                 limits=value_range(-100, 100))
    towers: int | None = _option(None, "2: grouped conv2/4/5 and per-tower LRN (the paper), 1: one tower of the "
                                       "same width; None: the variant's", limits=(lambda v: v in (1, 2), "1 or 2"))
    num_classes: int | None = _option(None, "outputs of fc8 (0: none, the output is fc7's); None: the variant's",
                                      limits=value_range(0, MAX_CLASSES), stored="always")
    in_channels: int | None = _option(None, "channels of the input image; None: 3",
                                      limits=value_range(1, MAX_IN_CHANNELS), stored="always")

    @classmethod
    def parse(cls, values: Mapping[str, Any], prefix: str = "") -> "ModelOptions":
        """The options ``values`` gives (the others at their defaults), each checked; ``prefix`` goes before a
        key in an error (``model.`` for a recipe)."""
        unknown = [k for k in values if k not in OPTIONS]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), OPTIONS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"options: {', '.join(OPTIONS)}"
            raise BadValue(f"unknown model option {unknown[0]!r}; {hint}")
        return cls(**{k: parse_option(k, v, prefix) for k, v in values.items()})

    def stored(self) -> dict[str, Any]:
        """The options as a checkpoint stores them: those marked "always" (when not None), and the others
        where they differ from their default, so a checkpoint names only the options its run set."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and (f.metadata["stored"] == "always" or value != f.default):
                out[f.name] = value
        return out


_HINTS = typing.get_type_hints(ModelOptions)
OPTIONS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(ModelOptions)}
RECIPE_KEYS = tuple(k for k in OPTIONS if k not in FROM_DATA)


def option_type(key: str) -> Any:
    return _HINTS[key]


def parse_option(key: str, value: Any, prefix: str = "") -> Any:
    """One option's value, checked and in its type (``lrn``: the strings on/off as booleans)."""
    meta = OPTIONS[key].metadata
    if key == "lrn" and isinstance(value, str) and value in LRN_SPELLINGS:
        value = LRN_SPELLINGS[value]
    try:
        return check_value(prefix + key, value, _HINTS[key], meta["choices"], meta["limits"])
    except BadValue as e:
        if meta["words"] is None:
            raise
        raise BadValue(f"{prefix}{key} must be {meta['words']}, not {value!r:.40}") from None
