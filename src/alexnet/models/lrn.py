"""Local response normalization (Krizhevsky et al. 2012, section 3.3).

    b[c] = a[c] / (k + alpha * sum_{c' in window(c)} a[c']^2) ** beta

The window holds ``size`` adjacent channels centred on ``c`` and is clipped at
the edges. Two details are easy to get wrong and both are options here:

* ``alpha_per_channel``: PyTorch's ``nn.LocalResponseNorm``, Caffe and
  cuda-convnet2 divide alpha by ``size`` (they use the window *mean*). The paper
  uses the *sum*: ``alpha=1e-4`` in the paper is ``alpha=5e-4`` in those APIs.
  ``alpha_per_channel=False`` (the default) is the paper's form.
* ``groups``: in the paper each GPU held one tower, so the window never crosses
  the boundary between the towers. ``groups=2`` normalizes each half of the
  channels on its own; ``groups=1`` mixes them (what Caffe does).

On a CPU the op runs as one fused C++ kernel (``lrn_kernel.py``, built on
first use; one pass over memory each way), registered as the custom ops
``alexnet::lrn_cpu`` and ``alexnet::lrn_cpu_backward`` so that torch.compile
calls it too. An exported program (TorchScript trace, ``torch.export``, ONNX)
gets plain tensor ops instead, so it runs without this package. Elsewhere, or
where no compiler is found, it is written for speed in tensor ops: the window
sum is one matrix product with a block-diagonal band matrix (no padded copies,
either memory layout), ``rsqrt`` replaces a general ``pow`` when beta is 0.75,
and the backward is analytic instead of autograd through the window. The fused
and band forms are checked in the tests against a direct float64 evaluation of
the formula above, the plain one against them (``tests/test_export.py``).

On a GPU the op runs as fused Triton kernels (``lrn_triton.py``: one kernel
for the forward, one for the backward, float32 arithmetic for float32, bf16
and fp16 inputs), registered as ``alexnet::lrn_triton`` and
``alexnet::lrn_triton_backward`` for the same reasons. ``ALEXNET_LRN_KERNEL``
picks for both devices: ``auto`` (the fused kernel where it works, else the
band form with one warning), ``fused`` (fail loudly instead), ``torch`` (the
band form). float64 takes the band form on a GPU.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import UserError
from . import lrn_kernel, lrn_triton


def _band(c: int, groups: int, lo: int, hi: int, scale: float, dtype, device) -> torch.Tensor:
    """``C x C`` matrix M with M[j, c] = scale when channel j is in the window of c.

    The window of c is c-lo .. c+hi, clipped to c's group: M is block-diagonal,
    so a product with it never mixes the towers.
    """
    idx = torch.arange(c, device=device)
    j, k = idx.view(-1, 1), idx.view(1, -1)
    cg = c // groups
    inside = (j >= k - lo) & (j <= k + hi) & (j // cg == k // cg)
    return inside.to(dtype) * scale


def _apply_band(z: torch.Tensor, band: torch.Tensor, k: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """out[n, c, h, w] = k + scale * sum_j z[n, j, h, w] band[j, c], z not copied.

    A channels-last tensor is a contiguous ``N x H x W x C`` array, so the sum is
    one ``addmm`` on its last axis; an NCHW tensor takes ``band^T @ z`` on
    ``N x C x (H W)``.
    """
    n, c, h, w = z.shape
    if not z.is_contiguous() and z.is_contiguous(memory_format=torch.channels_last):
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        out = torch.addmm(z.new_full((1,), k), flat, band, alpha=scale)
        return out.view(n, h, w, c).permute(0, 3, 1, 2)
    out = torch.baddbmm(z.new_full((1, 1, 1), k), band.t().expand(n, c, c), z.reshape(n, c, h * w), alpha=scale)
    return out.view(n, c, h, w)


def _inv_pow(t: torch.Tensor, beta: float) -> torch.Tensor:
    """``t ** -beta``, with rsqrt for the paper's beta=0.75 and beta=0.5."""
    if beta == 0.75:
        r = torch.rsqrt(t)
        return r.mul_(torch.sqrt(r))
    if beta == 0.5:
        return torch.rsqrt(t)
    return t.pow(-beta)


class _LRN(torch.autograd.Function):
    """LRN with an analytic backward; the window sums are matrix products.

    With t_c = k + s * sum_{j in W(c)} x_j^2 and y_c = x_c t_c^-beta:
    dL/dx_j = g_j t_j^-beta - 2 s beta x_j sum_{c: j in W(c)} g_c x_c t_c^(-beta-1).
    The band matrix M (M[j, c] = 1 for j in W(c)) gives the forward sum as
    ``x^2 M`` and the backward one as ``u M^T``. Computed in float32 (float64
    stays float64) whatever the input dtype, returned in the input's dtype.
    """

    @staticmethod
    def forward(ctx, x, size, scale, beta, k, groups):
        y, saved = _band_forward(x, size, scale, beta, k, groups)
        ctx.save_for_backward(*saved)
        ctx.cfg = (scale, beta, x.dtype)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return (_band_backward(ctx.saved_tensors, g, *ctx.cfg),) + (None,) * 5


def _band_forward(x, size, scale, beta, k, groups):
    """``(y, saved)``: the forward of :class:`_LRN` and what its backward needs."""
    dtype = x.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        xf = x.to(work)
        lo, hi = (size - 1) // 2, size // 2
        band = _band(x.shape[1], groups, lo, hi, 1.0, work, x.device)
        t = _apply_band(xf.square(), band, k, scale)
        p = _inv_pow(t, beta)
        y = torch.mul(xf, p, out=torch.empty_like(x)) if dtype != work else xf * p
    return y, (xf, t, p, band)


def _band_backward(saved, g, scale, beta, dtype):
    """dL/dx of :class:`_LRN` from the tensors :func:`_band_forward` saved."""
    xf, t, p, band = saved
    with torch.autocast(xf.device.type, enabled=False):
        gp = p.mul(g)
        u = (gp * xf).div_(t)
        w = _apply_band(u, band.t(), 0.0, -2.0 * scale * beta)
        return torch.addcmul(gp, xf, w, out=torch.empty_like(g, dtype=dtype)) if dtype != xf.dtype else gp.addcmul_(xf, w)


def local_response_norm(
    x: torch.Tensor,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 2.0,
    groups: int = 1,
    alpha_per_channel: bool = False,
) -> torch.Tensor:
    """Functional LRN over dim 1 of an ``N x C x H x W`` tensor; see module doc.

    Computed in float32 whatever the input dtype (under bf16/fp16 autocast the
    denominator k + alpha * sum would otherwise lose most of its digits), and
    returned in the input's dtype.
    """
    c = x.shape[1]
    if c % groups:
        raise ValueError(f"LRN: {c} channels do not split into {groups} groups")
    scale = alpha / size if alpha_per_channel else alpha
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        # Export (TorchScript trace, torch.export, ONNX): plain tensor ops, so the
        # program runs where neither the alexnet::lrn_cpu op nor this Function exists.
        return _lrn_plain(x, size, scale, beta, k, groups)
    if x.device.type == "cpu" and x.dtype in _FUSED_DTYPES and _fused_available():
        # The fused kernel, as a custom op: eager and torch.compile both call it.
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        return torch.ops.alexnet.lrn_cpu(x.contiguous(memory_format=fmt), size, scale, beta, k, groups)
    if x.device.type == "cuda" and x.dtype in lrn_triton.DTYPES and _triton_wanted():
        # The fused Triton kernels, as a custom op: eager and torch.compile both call them.
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        return torch.ops.alexnet.lrn_triton(x.contiguous(memory_format=fmt), size, scale, beta, k, groups)
    if torch.compiler.is_compiling():
        # Elsewhere under torch.compile a plain expression lets inductor fuse the whole op.
        return _lrn_plain(x, size, scale, beta, k, groups)
    return _LRN.apply(x, size, scale, beta, k, groups)


_FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _fused_available() -> bool:
    if torch.compiler.is_compiling():
        return lrn_kernel.loaded()  # no building while tracing: use it if eager code loaded it
    return lrn_kernel.get() is not None


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


# The fused CPU kernel as custom ops (forward, backward), so that autograd saves
# only x and torch.compile keeps the kernel instead of tracing through it.
@torch.library.custom_op("alexnet::lrn_cpu", mutates_args=(), device_types="cpu")
def _lrn_cpu(x: torch.Tensor, size: int, scale: float, beta: float, k: float, groups: int) -> torch.Tensor:
    return lrn_kernel.get().forward(x, size, scale, beta, k, groups)


@_lrn_cpu.register_fake
def _(x, size, scale, beta, k, groups):
    return torch.empty_like(x)


@torch.library.custom_op("alexnet::lrn_cpu_backward", mutates_args=(), device_types="cpu")
def _lrn_cpu_backward(x: torch.Tensor, grad: torch.Tensor, size: int, scale: float, beta: float, k: float,
                      groups: int) -> torch.Tensor:
    return lrn_kernel.get().backward(x, grad, size, scale, beta, k, groups)


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


def _triton_wanted() -> bool:
    """Whether a CUDA tensor takes the Triton kernels (ALEXNET_LRN_KERNEL, triton installed, no failure yet)."""
    m = lrn_kernel.mode()
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
    mode = lrn_kernel.mode()
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


def _band_lrn(x, size, scale, beta, k, groups):
    return _band_forward(x, size, scale, beta, k, groups)[0]


def _band_lrn_backward(x, grad, size, scale, beta, k, groups):
    _, saved = _band_forward(x, size, scale, beta, k, groups)
    return _band_backward(saved, grad, scale, beta, x.dtype)


@torch.library.custom_op("alexnet::lrn_triton", mutates_args=(), device_types=("cuda", "cpu"))
def _lrn_triton(x: torch.Tensor, size: int, scale: float, beta: float, k: float, groups: int) -> torch.Tensor:
    return _run_triton("forward", _band_lrn, x, size, scale, beta, k, groups)


@_lrn_triton.register_fake
def _(x, size, scale, beta, k, groups):
    return torch.empty_like(x)


@torch.library.custom_op("alexnet::lrn_triton_backward", mutates_args=(), device_types=("cuda", "cpu"))
def _lrn_triton_backward(x: torch.Tensor, grad: torch.Tensor, size: int, scale: float, beta: float, k: float,
                         groups: int) -> torch.Tensor:
    return _run_triton("backward", _band_lrn_backward, x, grad, size, scale, beta, k, groups)


@_lrn_triton_backward.register_fake
def _(x, grad, size, scale, beta, k, groups):
    return torch.empty_like(x)


def _lrn_triton_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return (torch.ops.alexnet.lrn_triton_backward(x, grad, *ctx.cfg),) + (None,) * 5


_lrn_triton.register_autograd(_lrn_triton_grad, setup_context=_lrn_cpu_setup)


def _lrn_plain(x, size, scale, beta, k, groups):
    """The same LRN as differentiable tensor ops (shifted sums over a padded copy)."""
    n, c, h, w = x.shape
    xf = x.float()
    sq = (xf * xf).reshape(n, groups, c // groups, h, w)
    lo, hi = (size - 1) // 2, size // 2
    padded = F.pad(sq, (0, 0, 0, 0, lo, hi))
    s = sum(padded[:, :, i : i + c // groups] for i in range(size))
    t = (s * scale + k).reshape(n, c, h, w)
    return (xf * t.pow(-beta)).to(x.dtype)


class LocalResponseNorm(nn.Module):
    """LRN as a module; ``groups`` keeps each tower's channels apart."""

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        groups: int = 1,
        alpha_per_channel: bool = False,
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.groups, self.alpha_per_channel = groups, alpha_per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(
            x, self.size, self.alpha, self.beta, self.k, self.groups, self.alpha_per_channel
        )

    def extra_repr(self) -> str:
        form = "alpha/n" if self.alpha_per_channel else "paper"
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"groups={self.groups}, semantics={form}"
        )
