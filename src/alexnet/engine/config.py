"""Typed, sectioned training config: YAML recipes, ``--set section.key=value``.

Unknown keys (with the closest known key suggested), values of the wrong
type and numbers out of range are one-line :class:`UserError`s naming the
key, so a typo never silently falls back to a default.

Numbers follow YAML 1.2 (``1e-3`` is a float; PyYAML alone follows YAML 1.1,
where it is the string "1e-3"); booleans keep YAML 1.1's ``on``/``off``/
``yes``/``no`` as well, since ``model.lrn: off`` is how the README spells it.

Keys no shipped recipe sets, and why each stays:

- ``model.*``: the model options, with their reasons, are :mod:`alexnet.models.options`'s.
- ``data.decode``: where JPEGs are decoded on a GPU run (cpu when nvJPEG is missing or slower).
- ``data.val_split``: validating on another split (a prepared ``test``).
- ``data.path``: written by ``train --data`` into RUN/config.yaml, so ``report`` needs no ``--data``.
- ``optim.accumulate``: the paper's batch of 128 on a GPU that holds fewer images.
- ``schedule.min_delta``: how much lower a val error must be to count for the plateau schedule.
- ``run.device``: what ``--device`` sets.
- ``run.compile``: ``torch.compile`` for GPU runs.
- ``run.deterministic``: bitwise-repeatable CUDA runs.
- ``run.checkpoint_steps``: mid-epoch checkpoints by step count (the kill/resume tests; long epochs).
- ``run.threads``: the intra-op threads of a CPU run.
- ``run.cpu_malloc``: the off switch of the freed-memory allocator (docs/training.md).
- ``run.max_nonfinite_steps``: how many non-finite losses in a row end a diverged run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..models.options import OPTIONS, RECIPE_KEYS, option_type, parse_option
from ..values import check_value, value_range
from .distributed import device_names, is_device_name
from .inference import TTA


def _model_config() -> type:
    """``ModelConfig``: ``name``, then the options of :class:`~alexnet.models.options.ModelOptions` that a
    recipe sets (all but num_classes and in_channels, which the data gives), with their types and defaults."""
    fields = [("name", str, field(default="alexnet"))]
    fields += [(k, option_type(k), field(default=OPTIONS[k].default)) for k in RECIPE_KEYS]
    cls = dataclasses.make_dataclass("ModelConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = "A recipe's model section: the model's name and its options (alexnet.models.options)."
    return cls


ModelConfig = _model_config()


@dataclass
class DataConfig:
    batch_size: int = 128  # global, over all processes and accumulation steps
    workers: int = 2  # loader processes per training process
    decode: str = "auto"  # auto | cpu | cuda: where JPEGs are decoded and augmented; cpu: in the loader processes,
    # cuda: on the training GPU (nvJPEG; the processes only read bytes); auto: cuda when training on CUDA from JPEGs
    mean: str = "image"  # image (the paper's mean image) | rgb
    scale: float | None = None  # input = (pixel - mean) * scale / 255: 255 the paper's raw pixels, 1 [0, 1] units;
    # None: the scale the model's init was chosen for (255 for paper/caffe init, 1 for kaiming/torch)
    lighting: float = 0.1  # std of the PCA lighting coefficients; 0 turns it off
    eval_tta: str = "center"  # center | 10crop, for the per-epoch validation
    val_split: str = "val"
    path: str | None = None  # the prepared folder; train's --data sets it (absolute), so RUN/config.yaml names it


@dataclass
class OptimConfig:
    lr: float = 0.01  # per batch of data.batch_size, or of lr_batch images when that is set
    lr_batch: int | None = None  # the batch lr is meant for (paper: 0.01 per 128); the rate used is
    # lr * data.batch_size / lr_batch (linear scaling for larger batches); None: lr is data.batch_size's
    momentum: float = 0.9
    weight_decay: float = 0.0005
    rule: str = "paper"  # paper: v <- m v - wd lr w - lr g ; torch: torch.optim.SGD
    fused: bool | None = None  # rule torch: torch.optim.SGD(fused=True), one kernel per step; None: on CUDA only
    accumulate: int = 1  # micro-batches per step; same global batch and meaning
    label_smoothing: float = 0.0  # cross-entropy against (1 - e) one-hot + e / classes (the paper: 0)


@dataclass
class ScheduleConfig:
    kind: str = "plateau"  # plateau: the paper's drops by `factor` | onecycle: warm-up, then linear decay to 0
    patience: int = 3  # epochs without a better val top-1 error before lr /= factor
    factor: float = 0.1
    max_drops: int = 3
    min_delta: float = 0.0  # improvement smaller than this does not count
    warmup_steps: int = 0  # raise lr linearly from lr/warmup_steps to lr over the first steps (0: the paper, none)


@dataclass
class RunConfig:
    epochs: int = 90
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 adds a GradScaler) | auto: bf16 where the hardware has
    # it (a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX), fp32 elsewhere (engine/loop.py)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # reproducible CUDA runs where PyTorch allows it: deterministic algorithms,
    # cuDNN deterministic and not benchmarked, CUBLAS_WORKSPACE_CONFIG=:4096:8 (ops without a deterministic
    # CUDA kernel warn); off on CUDA: cuDNN picks the fastest algorithms (benchmark), runs differ in the last bits
    log_every: int = 20  # steps between metrics.jsonl lines
    checkpoint_minutes: float = 0.0  # also save last.ckpt every this many minutes (0: per epoch only)
    checkpoint_steps: int = 0  # also save last.ckpt every this many steps (0: off)
    threads: int = 0  # torch CPU threads per process (0: leave PyTorch's default)
    cpu_malloc: bool = True  # on a CPU, keep freed memory for reuse (engine/allocator.py)
    max_nonfinite_steps: int = 3  # a loss that is NaN or infinite this many steps in a row ends the run (diverged)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)


INT_MAX = 2**31 - 1  # the most steps, epochs or drops a count may be (a C int, whatever reads it)
SEED_MAX = 2**63 - 1  # torch.manual_seed takes 0 .. 2**64-1, numpy any int >= 0; a seed fits an int64 everywhere
BATCH_MAX = 2**20
THREADS_MAX = 1024
_BOOL = (False, True)
_MAYBE_BOOL = (None, False, True)


def _model_names() -> tuple[str, ...]:
    from .. import models

    return tuple(models.names())


# Allowed values: key -> the values, or a function giving them (the models registered when the key is set).
# The model's options other than its name have theirs in alexnet.models.options.
CHOICES: dict[str, tuple | typing.Callable[[], tuple]] = {
    "model.name": _model_names,
    "data.mean": ("image", "rgb"),
    "data.decode": ("auto", "cpu", "cuda"),
    "data.eval_tta": TTA,
    "schedule.kind": ("plateau", "onecycle"),
    "optim.rule": ("paper", "torch"),
    "optim.fused": _MAYBE_BOOL,
    "run.precision": ("fp32", "bf16", "fp16", "auto"),
    "run.channels_last": _BOOL,
    "run.compile": _BOOL,
    "run.deterministic": _BOOL,
    "run.cpu_malloc": _BOOL,
}


_SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Allowed ranges: key -> (test, what the error says the value must be). A float is finite besides (_check_type).
RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.batch_size": value_range(1, BATCH_MAX),
    "data.workers": value_range(0, THREADS_MAX),
    "data.lighting": value_range(0, 100),
    "data.scale": value_range(0, 65535, above=True),
    "data.val_split": (lambda v: bool(_SPLIT.fullmatch(v)),
                       "a split name (letters, digits, '_', '.', '-'; at most 64)"),
    "data.path": (lambda v: bool(v) and "\0" not in v, "a folder path (not empty, no NUL character)"),
    "optim.lr": value_range(0, above=True),
    "optim.lr_batch": value_range(1, BATCH_MAX),
    "optim.momentum": value_range(0, 1, below=True),
    "optim.weight_decay": value_range(0),
    "optim.accumulate": value_range(1, BATCH_MAX),
    "optim.label_smoothing": value_range(0, 1, below=True),
    "schedule.patience": value_range(0, INT_MAX),
    "schedule.factor": value_range(0, 1, above=True),
    "schedule.max_drops": value_range(0, INT_MAX),
    "schedule.min_delta": value_range(0),
    "schedule.warmup_steps": value_range(0, INT_MAX),
    "run.epochs": value_range(1, 1_000_000),
    "run.seed": value_range(0, SEED_MAX),
    "run.device": (is_device_name, "one of " + ", ".join(device_names())),
    "run.log_every": value_range(1, INT_MAX),
    "run.checkpoint_minutes": value_range(0),
    "run.checkpoint_steps": value_range(0, INT_MAX),
    "run.threads": value_range(0, THREADS_MAX),  # 0: PyTorch's default
    "run.max_nonfinite_steps": value_range(1, INT_MAX),
}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema numbers (see the module docstring)."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# int before float: the first resolver that matches wins, and "12" matches both
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


def _yaml12_int(loader, node) -> int:
    text = loader.construct_scalar(node)
    if len(text) > 1000:  # Python reads at most 4300 digits; no key takes a number of even 1000
        raise yaml.constructor.ConstructorError(None, None, f"a number of {len(text)} digits", node.start_mark)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 16) if text.startswith("0x") else int(text)


def _yaml12_float(loader, node) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    return math.nan if text == ".nan" else float(text)


_Loader.add_constructor(_INT, _yaml12_int)
_Loader.add_constructor(_FLOAT, _yaml12_float)


def parse_yaml(text: str) -> Any:
    """``text`` as YAML with 1.2 numbers (may raise ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_Loader)


def _fields(section_cls) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def set_key(cfg: TrainConfig, dotted: str, value: Any) -> None:
    """Set ``section.key`` to ``value`` with type checking."""
    section, _, key = dotted.partition(".")
    sections = typing.get_type_hints(TrainConfig)
    fields = _fields(sections[section]) if section in sections else {}
    if key not in fields:
        known = [f"{s}.{k}" for s, cls in sections.items() for k in _fields(cls)]
        close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]}?"
        elif fields:
            hint = f"{section} has: {', '.join(fields)}"
        else:
            hint = f"sections: {', '.join(sections)}"
        raise UserError(f"unknown config key {dotted!r}; {hint}")
    if section == "model" and key in OPTIONS:
        value = parse_option(key, value, "model.")
    else:
        choices = CHOICES.get(dotted)
        value = check_value(dotted, value, fields[key], choices() if callable(choices) else choices, RANGES.get(dotted))
    setattr(getattr(cfg, section), key, value)


def from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    cfg = TrainConfig()
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected sections (model, data, optim, schedule, run), got {type(data).__name__}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise UserError(f"{source}: section {section!r} must be a mapping of keys")
        for key, value in values.items():
            set_key(cfg, f"{section}.{key}", value)
    return cfg


RECIPES = Path(__file__).resolve().parent.parent / "configs"


def recipe_names() -> list[str]:
    """The recipes shipped with the package (``configs/*.yaml``)."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def resolve_recipe(path: str | Path) -> Path:
    """A YAML path, or the name of a shipped recipe (``paper``, ``demo``...)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix == "" and (RECIPES / f"{p.name}.yaml").is_file():
        return RECIPES / f"{p.name}.yaml"
    raise UserError(f"config file not found: {path} (shipped recipes: {', '.join(recipe_names())})")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """A recipe (file or shipped name) or the defaults, with ``section.key=value`` overrides."""
    data = {}
    if path is not None:
        path = resolve_recipe(path)
        try:
            data = parse_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a text file (a recipe is UTF-8 YAML)") from None
    cfg = from_dict(data, str(path) if path else "config")
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects section.key=value, got {item!r}")
        key, _, text = item.partition("=")
        try:
            value = parse_yaml(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        set_key(cfg, key.strip(), value)
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
