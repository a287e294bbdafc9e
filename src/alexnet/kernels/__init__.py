"""Fast LRN kernels behind one dispatch function, :func:`lrn`.

The readable reference of the paper's LRN is :func:`alexnet.models.lrn.local_response_norm`;
it asks :func:`lrn` for a fused kernel (C++ on a CPU, Triton on a GPU) or the
band-matrix form, and uses its own plain expression where none applies.
"""

from .dispatch import lrn, mode, triton_wanted, warm_up

__all__ = ["lrn", "mode", "triton_wanted", "warm_up"]
