"""The fused CUDA LRN: one Triton kernel for the forward, one for the backward.

The same maths as the CPU kernel (``csrc/lrn_cpu.cpp``), with the window W(c)
= c-lo .. c+hi clipped to c's group (tower), lo = (size-1)//2, hi = size//2:

    t_c = k + scale * sum_{j in W(c)} x_j^2,   y_c = x_c * t_c^-beta
    dx_j = g_j t_j^-beta - 2 scale beta x_j sum_{c: j in W(c)} g_c x_c t_c^(-beta-1)

``scale`` is alpha as the caller passes it: the paper's alpha, or alpha/size
for the alpha_per_channel form (``lrn.local_response_norm`` decides).

Each program handles a tile of pixels x channels of one image and reads the
neighbouring channels of its tile with shifted, masked loads (the mask is the
group's edge, so a window never crosses the tower boundary); the shifted reads
hit the cache, so each kernel makes one pass over memory: the forward reads x
and writes y, the backward reads x and g, recomputes t (nothing but x is kept
for it), and writes dx. Arithmetic is float32 whatever the input (float32,
bfloat16, float16); the output has the input's dtype and memory format. The
tile's orientation follows the layout, so that the loads are coalesced: pixels
fastest for NCHW, channels fastest for channels_last.

Nothing here imports triton until a kernel is launched. The kernels are
jitted on first use, once per mode of Triton's interpreter: with
``TRITON_INTERPRET=1`` they run on CPU tensors (the tests check them that way
against the float64 formula; on a CUDA machine they also run compiled).
``dispatch.py`` registers them as the custom ops ``alexnet::lrn_triton`` and
``alexnet::lrn_triton_backward``.
"""

from __future__ import annotations

import importlib.util
import threading

import torch

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
AVAILABLE = importlib.util.find_spec("triton") is not None  # checked once; triton is imported on first launch

# Tile shapes (pixels x channels) per layout, and warps per program: 1024 elements a program.
TILES = {"nchw": (128, 8), "channels_last": (32, 32)}
NUM_WARPS = 4

_lock = threading.Lock()
_jitted: dict = {}
tl = None  # triton.language, bound by _kernels() before the first jit (the kernels name it)


def _neg_beta_power(t, beta, FORM: tl.constexpr):
    """t^-beta: exact rsqrt forms for beta 0.75 (FORM 0) and 0.5 (FORM 1), exp2/log2 otherwise."""
    if FORM == 0:
        r = tl.rsqrt(t)
        p = r * tl.sqrt(r)
    elif FORM == 1:
        p = tl.rsqrt(t)
    else:
        p = tl.exp2(-beta * tl.log2(t))
    return p


def _window_square_sum(x_ptr, pix, c, mask, g0, g1, sc, acc, SIZE: tl.constexpr, LO: tl.constexpr):
    """acc + the sum of x^2 over channel c's window (c-LO .. c-LO+SIZE-1), clipped to its group [g0, g1)."""
    for d in tl.static_range(SIZE):
        cc = c + (d - LO)
        m = mask & (cc >= g0) & (cc < g1)
        v = tl.load(x_ptr + pix + cc.to(tl.int64) * sc, mask=m, other=0.0).to(tl.float32)
        acc += v * v
    return acc


def _forward_kernel(x_ptr, y_ptr, HW, C, CG, sn, sc, sp, scale, beta, k,
                    SIZE: tl.constexpr, LO: tl.constexpr, FORM: tl.constexpr, CL: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    hw = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    base = tl.program_id(2).to(tl.int64) * sn
    if CL:  # channels fastest: a tile is [pixels, channels]
        P = hw[:, None]
        CH = ch[None, :]
        acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    else:  # pixels fastest: [channels, pixels]
        P = hw[None, :]
        CH = ch[:, None]
        acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    pix = base + P.to(tl.int64) * sp
    live = (P < HW) & (CH < C)
    g0 = (CH // CG) * CG  # first channel of the group
    acc = _window_square_sum(x_ptr, pix, CH, live, g0, g0 + CG, sc, acc, SIZE, LO)
    p = _neg_beta_power(tl.where(live, k + scale * acc, 1.0), beta, FORM)
    own = pix + CH.to(tl.int64) * sc
    x = tl.load(x_ptr + own, mask=live, other=0.0).to(tl.float32)
    tl.store(y_ptr + own, (x * p).to(y_ptr.dtype.element_ty), mask=live)


def _backward_kernel(x_ptr, g_ptr, dx_ptr, HW, C, CG, sn, sc, sp, scale, beta, k, coef,
                     SIZE: tl.constexpr, LO: tl.constexpr, FORM: tl.constexpr, CL: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    hw = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    base = tl.program_id(2).to(tl.int64) * sn
    if CL:
        P = hw[:, None]
        CH = ch[None, :]
        acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
        w = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    else:
        P = hw[None, :]
        CH = ch[:, None]
        acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
        w = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    pix = base + P.to(tl.int64) * sp
    live = (P < HW) & (CH < C)
    g0 = (CH // CG) * CG
    g1 = g0 + CG
    # t_j^-beta of the tile's own channels j
    acc = _window_square_sum(x_ptr, pix, CH, live, g0, g1, sc, acc, SIZE, LO)
    p = _neg_beta_power(tl.where(live, k + scale * acc, 1.0), beta, FORM)
    # w_j = sum over the channels c whose window holds j (c = j-hi .. j+lo, same group) of g_c x_c t_c^(-beta-1)
    for e in tl.static_range(SIZE):
        c = CH + (e - (SIZE - 1 - LO))
        mc = live & (c >= g0) & (c < g1)
        s = _window_square_sum(x_ptr, pix, c, mc, g0, g1, sc, acc * 0.0, SIZE, LO)
        tc = tl.where(mc, k + scale * s, 1.0)
        pc = _neg_beta_power(tc, beta, FORM)
        at = pix + c.to(tl.int64) * sc
        xc = tl.load(x_ptr + at, mask=mc, other=0.0).to(tl.float32)
        gc = tl.load(g_ptr + at, mask=mc, other=0.0).to(tl.float32)
        w += tl.where(mc, gc * xc * pc / tc, 0.0)
    own = pix + CH.to(tl.int64) * sc
    x = tl.load(x_ptr + own, mask=live, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + own, mask=live, other=0.0).to(tl.float32)
    tl.store(dx_ptr + own, (g * p + coef * x * w).to(dx_ptr.dtype.element_ty), mask=live)


_HELPERS = (_neg_beta_power, _window_square_sum)  # the plain functions, jitted by _kernels()


def _kernels():
    """``(forward, backward)`` jitted for the current interpreter mode (``TRITON_INTERPRET``)."""
    global tl
    import triton
    import triton.language as tl  # noqa: F811 -- the kernels' globals name it

    interpret = bool(triton.knobs.runtime.interpret)
    kernels = _jitted.get(interpret)
    if kernels is None:
        with _lock:
            kernels = _jitted.get(interpret)
            if kernels is None:
                # the kernels call the helpers by their global names, which must name functions jitted for
                # this mode (a process that uses both modes keeps the last mode's helpers: tests use one a process)
                for fn in _HELPERS:
                    globals()[fn.__name__] = triton.jit(fn)
                kernels = _jitted[interpret] = (triton.jit(_forward_kernel), triton.jit(_backward_kernel))
    return kernels


def _pow_form(beta: float) -> int:
    return 0 if beta == 0.75 else 1 if beta == 0.5 else 2


def _launch_geometry(x: torch.Tensor, groups: int):
    """(memory format, grid, sizes and element strides) of a dense NCHW or channels_last tensor."""
    if x.dim() != 4:
        raise ValueError(f"LRN: expected an N x C x H x W tensor, got {x.dim()} dims")
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"LRN: {c} channels do not split into {groups} groups")
    cl = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    hw = h * w
    block_p, block_c = TILES["channels_last" if cl else "nchw"]
    grid = (_cdiv(hw, block_p), _cdiv(c, block_c), n)
    strides = (c * hw, 1, c) if cl else (c * hw, hw, 1)  # image, channel, pixel
    return fmt, cl, grid, (hw, c, c // groups) + strides, (block_p, block_c)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _device_guard(x: torch.Tensor):
    import contextlib

    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def forward(x: torch.Tensor, size: int, scale: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """LRN of ``x`` (NCHW or channels_last; float32/bfloat16/float16), same dtype and layout."""
    fmt, cl, grid, dims, (bp, bc) = _launch_geometry(x, groups)
    x = x.contiguous(memory_format=fmt)
    y = torch.empty_like(x, memory_format=fmt)
    if x.numel():
        fwd, _ = _kernels()
        with _device_guard(x):
            fwd[grid](x, y, *dims, float(scale), float(beta), float(k), SIZE=size, LO=(size - 1) // 2,
                      FORM=_pow_form(beta), CL=cl, BLOCK_P=bp, BLOCK_C=bc, num_warps=NUM_WARPS)
    return y


def backward(x: torch.Tensor, grad: torch.Tensor, size: int, scale: float, beta: float, k: float,
             groups: int) -> torch.Tensor:
    """dL/dx of the LRN given dL/dy ``grad``; recomputes the denominators from ``x``."""
    if grad.shape != x.shape:
        raise ValueError("LRN: gradient and input shapes differ")
    fmt, cl, grid, dims, (bp, bc) = _launch_geometry(x, groups)
    x = x.contiguous(memory_format=fmt)
    grad = grad.to(x.dtype).contiguous(memory_format=fmt)
    dx = torch.empty_like(x, memory_format=fmt)
    if x.numel():
        _, bwd = _kernels()
        with _device_guard(x):
            bwd[grid](x, grad, dx, *dims, float(scale), float(beta), float(k), float(-2.0 * scale * beta),
                      SIZE=size, LO=(size - 1) // 2, FORM=_pow_form(beta), CL=cl, BLOCK_P=bp, BLOCK_C=bc,
                      num_warps=NUM_WARPS)
    return dx
