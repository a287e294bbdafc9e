"""The one way into the fused LRN kernels: :func:`lrn` picks one for a tensor, or says none applies.

On a CPU the op runs as one fused C++ kernel (``lrn_cpu.py``, built on first
use; one pass over memory each way), registered as the custom ops
``alexnet::lrn_cpu`` and ``alexnet::lrn_cpu_backward`` so that torch.compile
calls it too. On a GPU it runs as fused Triton kernels (``lrn_triton.py``: one
kernel for the forward, one for the backward, float32 arithmetic for float32,
bf16 and fp16 inputs), registered as ``alexnet::lrn_triton`` and
``alexnet::lrn_triton_backward`` for the same reasons. Elsewhere, or where no
compiler is found, the band form (``band.py``) answers. ``ALEXNET_LRN_KERNEL``
picks for both devices: ``auto`` (the fused kernel where it works, else the
band form with one warning), ``fused`` (fail loudly instead), ``torch`` (the
band form). float64 takes the band form on a GPU.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import UserError
from . import lrn_cpu, lrn_triton
from .band import band_lrn, band_lrn_backward, band_lrn_forward

mode = lrn_cpu.mode


def lrn(x: torch.Tensor, size: int, scale: float, beta: float, k: float, groups: int) -> torch.Tensor | None:
    """The paper's LRN of ``x`` (``N x C x H x W``; ``scale``: alpha of the sum form) by the fastest kernel
    for its device and dtype, or None where plain tensor ops serve better: while a program is traced or
    exported (it must run without this package), and under torch.compile where no fused kernel applies
    (a plain expression lets inductor fuse the whole op)."""
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return None
    if x.device.type == "cpu" and x.dtype in _FUSED_DTYPES and _fused_available():
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        return torch.ops.alexnet.lrn_cpu(x.contiguous(memory_format=fmt), size, scale, beta, k, groups)
    if x.device.type == "cuda" and x.dtype in lrn_triton.DTYPES and triton_wanted():
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        return torch.ops.alexnet.lrn_triton(x.contiguous(memory_format=fmt), size, scale, beta, k, groups)
    if torch.compiler.is_compiling():
        return None
    return band_lrn(x, size, scale, beta, k, groups)


def warm_up() -> None:
    """Build (once) or load the fused CPU kernel now, so that no timing or progress bar pays for it."""
    lrn_cpu.get()


_FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _fused_available() -> bool:
    if torch.compiler.is_compiling():
        return lrn_cpu.loaded()  # no building while tracing: use it if eager code loaded it
    return lrn_cpu.get() is not None


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


# The fused CPU kernel as custom ops (forward, backward), so that autograd saves
# only x and torch.compile keeps the kernel instead of tracing through it.
@torch.library.custom_op("alexnet::lrn_cpu", mutates_args=(), device_types="cpu")
def _lrn_cpu(x: torch.Tensor, size: int, scale: float, beta: float, k: float, groups: int) -> torch.Tensor:
    return lrn_cpu.get().forward(x, size, scale, beta, k, groups)


@_lrn_cpu.register_fake
def _(x, size, scale, beta, k, groups):
    return torch.empty_like(x)


@torch.library.custom_op("alexnet::lrn_cpu_backward", mutates_args=(), device_types="cpu")
def _lrn_cpu_backward(x: torch.Tensor, grad: torch.Tensor, size: int, scale: float, beta: float, k: float,
                      groups: int) -> torch.Tensor:
    return lrn_cpu.get().backward(x, grad, size, scale, beta, k, groups)


@_lrn_cpu_backward.register_fake
def _(x, grad, size, scale, beta, k, groups):
    return torch.empty_like(x)


def _lrn_cpu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.cfg = inputs[1:]


def _lrn_cpu_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return (torch.ops.alexnet.lrn_cpu_backward(x, grad, *ctx.cfg),) + (None,) * 5


_lrn_cpu.register_autograd(_lrn_cpu_grad, setup_context=_lrn_cpu_setup)


# The fused CUDA kernels (Triton) as custom ops, wired like the CPU ones. The CPU registration serves
# Triton's interpreter (TRITON_INTERPRET=1, the tests); local_response_norm sends only CUDA tensors here.
_triton_state: dict = {}  # "error": why the kernels failed (auto mode then uses the band form)


def triton_wanted() -> bool:
    """Whether a CUDA tensor takes the Triton kernels (ALEXNET_LRN_KERNEL, triton installed, no failure yet)."""
    m = lrn_cpu.mode()
    if m == "torch":
        return False
    if not lrn_triton.AVAILABLE:
        if m == "fused":
            raise UserError("ALEXNET_LRN_KERNEL=fused, but triton is not installed (the CUDA LRN kernel is a Triton kernel)")
        if not _triton_state and not torch.compiler.is_compiling():
            _triton_state["error"] = "triton is not installed"
            warnings.warn("alexnet: fused CUDA LRN kernel unavailable (triton is not installed); using the PyTorch "
                          "LRN, which is slower", RuntimeWarning, stacklevel=3)
        return False
    return m == "fused" or "error" not in _triton_state


def _run_triton(name: str, fallback, *args):
    """``lrn_triton.<name>(*args)``; in auto mode a kernel that fails (compiler, driver) warns once and
    ``fallback(*args)`` answers from then on. Out of memory is not a kernel failure: it is raised."""
    mode = lrn_cpu.mode()
    if mode == "fused" or "error" not in _triton_state:
        try:
            return getattr(lrn_triton, name)(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if mode == "fused":
                raise
            _triton_state["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            warnings.warn(f"alexnet: fused CUDA LRN kernel failed ({_triton_state['error']}); using the PyTorch "
                          "LRN, which is slower", RuntimeWarning, stacklevel=2)
    return fallback(*args)


@torch.library.custom_op("alexnet::lrn_triton", mutates_args=(), device_types=("cuda", "cpu"))
def _lrn_triton(x: torch.Tensor, size: int, scale: float, beta: float, k: float, groups: int) -> torch.Tensor:
    return _run_triton("forward", band_lrn_forward, x, size, scale, beta, k, groups)


@_lrn_triton.register_fake
def _(x, size, scale, beta, k, groups):
    return torch.empty_like(x)


@torch.library.custom_op("alexnet::lrn_triton_backward", mutates_args=(), device_types=("cuda", "cpu"))
def _lrn_triton_backward(x: torch.Tensor, grad: torch.Tensor, size: int, scale: float, beta: float, k: float,
                         groups: int) -> torch.Tensor:
    return _run_triton("backward", band_lrn_backward, x, grad, size, scale, beta, k, groups)


@_lrn_triton_backward.register_fake
def _(x, grad, size, scale, beta, k, groups):
    return torch.empty_like(x)


def _lrn_triton_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return (torch.ops.alexnet.lrn_triton_backward(x, grad, *ctx.cfg),) + (None,) * 5


_lrn_triton.register_autograd(_lrn_triton_grad, setup_context=_lrn_cpu_setup)
