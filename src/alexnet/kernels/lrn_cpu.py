"""The fused CPU LRN kernel (``csrc/lrn_cpu.cpp``): built on first use, cached.

PyTorch has no fused LRN, and written as tensor ops the paper's LRN makes many
passes over the 55x55x96 and 27x27x256 maps: in a profile of a bf16 training
step on a CPU they took longer than all five convolutions. The C++ kernel makes
one pass each way and keeps nothing but the input for the backward
(``benchmarks/lrn.py``: 7-9x faster in bf16 channels-last, 3-3.6x in fp32).

It is compiled with the machine's C++ compiler the first time an LRN runs on a
CPU tensor (about 35 s, once; a line on stderr says so) and cached under
``$ALEXNET_EXTENSIONS_DIR`` (default ``~/.cache/alexnet/extensions``), in a
folder named after the source (its text and its path), the flags, the torch
version and the CPU's instruction set, so a shared home directory never hands
one machine another's build, and two checkouts do not rebuild in turn. Where it cannot be built (no compiler), LRN falls back to the PyTorch
band form in ``band.py`` with one warning; results agree to float rounding.

``ALEXNET_LRN_KERNEL`` picks: ``auto`` (default: fused when it builds),
``torch`` (never build), ``fused`` (fail loudly if it cannot be built). The
same switch picks the CUDA kernel (``lrn_triton.py``) for tensors on a GPU.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
import warnings
from pathlib import Path

import torch

from ..errors import UserError

SOURCE = Path(__file__).with_name("csrc") / "lrn_cpu.cpp"
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
CHOICES = ("auto", "torch", "fused")

_lock = threading.Lock()
_state: dict = {}


def mode() -> str:
    value = os.environ.get("ALEXNET_LRN_KERNEL", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise UserError(f"ALEXNET_LRN_KERNEL must be one of {', '.join(CHOICES)}, not {value!r}")
    return value


def _cpu_tag() -> str:
    """The CPU's instruction-set flags (Linux) or its name: part of the build's key."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_name() -> str:
    h = hashlib.sha256()
    # The source's path too: ninja's build line names it, so two checkouts sharing one folder would
    # rebuild in turn (minutes each), each time the other had built last.
    for part in (SOURCE.read_bytes(), str(SOURCE.resolve()).encode(), " ".join(FLAGS + LDFLAGS).encode(),
                 torch.__version__.encode(), sys.version.encode(), _cpu_tag().encode()):
        h.update(part)
        h.update(b"\0")
    return f"alexnet_lrn_cpu_{h.hexdigest()[:16]}"


def extensions_root() -> Path:
    """Where compiled kernels are cached: ``$ALEXNET_EXTENSIONS_DIR`` or ``~/.cache/alexnet/extensions``."""
    root = os.environ.get("ALEXNET_EXTENSIONS_DIR")
    return Path(root) if root else Path.home() / ".cache" / "alexnet" / "extensions"


def build_dir() -> Path:
    return extensions_root() / build_name()


def _build():
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its import warns "No CUDA runtime is found" on CPU machines
    try:
        from torch.utils.cpp_extension import load
    finally:
        quiet.setLevel(level)

    name = build_name()
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / f"{name}.so").exists():
        print(f"alexnet: building the fused CPU LRN kernel (once, ~35 s) in {folder}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no CUDA runtime found" and similar build chatter
        return load(name=name, sources=[str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=LDFLAGS, build_directory=str(folder),
                    with_cuda=False, verbose=False)


def loaded() -> bool:
    """Whether the kernel is already loaded in this process (never builds)."""
    return _state.get("module") is not None and mode() != "torch"


def get():
    """The compiled module (``forward``, ``backward``), or None when unavailable or not wanted."""
    m = mode()
    if m == "torch":
        return None
    module = _state.get("module")
    if module is not None:  # the per-call path: no lock once loaded
        return module
    with _lock:
        if "module" not in _state:
            try:
                _state["module"] = _build()
            except Exception as exc:  # no compiler, no ninja, unwritable cache, build error
                _state["module"] = None
                _state["error"] = " ".join(str(exc).split())[:300]
                if m != "fused":
                    warnings.warn(f"alexnet: fused CPU LRN kernel unavailable ({_state['error']}); "
                                  "using the PyTorch LRN, which is slower", RuntimeWarning, stacklevel=3)
        if _state["module"] is None and m == "fused":
            raise UserError(f"ALEXNET_LRN_KERNEL=fused, but the fused LRN kernel could not be built: {_state['error']}")
        return _state["module"]
