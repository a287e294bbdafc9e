"""LRN in tensor ops written for speed: the band-matrix form, with an analytic backward.

The window sum of the paper's LRN is one matrix product with a
block-diagonal band matrix (no padded copies, either memory layout); ``rsqrt``
replaces a general ``pow`` when beta is 0.75; the backward is analytic instead
of autograd through the window. It answers wherever no fused kernel does, and
is the fallback of the fused ones.
"""

from __future__ import annotations

import torch


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


def band_lrn(x, size, scale, beta, k, groups):
    """The LRN of ``x`` (``scale``: the sum-form alpha) with the analytic backward."""
    return _LRN.apply(x, size, scale, beta, k, groups)


def band_lrn_forward(x, size, scale, beta, k, groups):
    return _band_forward(x, size, scale, beta, k, groups)[0]


def band_lrn_backward(x, grad, size, scale, beta, k, groups):
    _, saved = _band_forward(x, size, scale, beta, k, groups)
    return _band_backward(saved, grad, scale, beta, x.dtype)
