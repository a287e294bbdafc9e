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

This is the readable form; :func:`local_response_norm` hands the work to the
fastest kernel for the tensor (:func:`alexnet.kernels.lrn`: a fused C++ kernel
on a CPU, fused Triton kernels on a GPU, a band-matrix form elsewhere), and
uses the plain expression below where none applies: an exported program
(TorchScript trace, ``torch.export``, ONNX) gets plain tensor ops, so it runs
without this package. Every form is checked in the tests against a direct
float64 evaluation of the formula above.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .. import kernels


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
    out = kernels.lrn(x, size, scale, beta, k, groups)
    return out if out is not None else _lrn_plain(x, size, scale, beta, k, groups)


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
