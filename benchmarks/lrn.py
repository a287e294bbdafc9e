"""The fused CPU LRN kernel against the same LRN written as tensor ops.

Forward + backward of the paper's LRN (n=5, per tower) at the sizes of
``alexnet``'s two LRN layers for a batch of 128, in one process, with freed
memory kept for reuse for both (as ``alexnet train`` does on a CPU):

    python benchmarks/lrn.py [--batch 128] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from alexnet.engine.allocator import keep_freed_memory
from alexnet.kernels import lrn_cpu
from alexnet.models.lrn import local_response_norm

SHAPES = {"norm1 (96 x 55 x 55)": (96, 55, 55), "norm2 (256 x 27 x 27)": (256, 27, 27)}


def fwd_bwd_ms(x, reps) -> float:
    x = x.detach().requires_grad_()
    g = torch.randn_like(x)

    def once():
        local_response_norm(x, 5, 1e-4, 0.75, 2.0, 2).backward(g)

    once()
    t = time.perf_counter()
    for _ in range(reps):
        once()
    return (time.perf_counter() - t) / reps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    keep_freed_memory()
    os.environ["ALEXNET_LRN_KERNEL"] = "fused"
    lrn_cpu.get()  # build before timing
    print(f"threads {torch.get_num_threads()}, batch {args.batch}; forward + backward, ms")
    for name, (c, h, w) in SHAPES.items():
        for dtype, cl in ((torch.bfloat16, True), (torch.float32, False)):
            x = torch.randn(args.batch, c, h, w).to(dtype)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            times = {}
            for impl in ("torch", "fused"):
                os.environ["ALEXNET_LRN_KERNEL"] = impl
                times[impl] = fwd_bwd_ms(x, args.reps)
            layout = "channels_last" if cl else "NCHW"
            print(f"{name}, {str(dtype).split('.')[-1]} {layout}: tensor ops {times['torch']:.1f}, "
                  f"fused {times['fused']:.1f} = {times['torch'] / times['fused']:.1f}x")


if __name__ == "__main__":
    main()
