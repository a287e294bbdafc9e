"""The Triton LRN kernels run by Triton's interpreter on CPU tensors, against the float64 formula.

Run by ``tests/test_lrn_triton.py`` in a child process with ``TRITON_INTERPRET=1``: the variable must be set
before triton is imported (triton's own helpers, such as ``tl.zeros``, are jitted at import), so it cannot be
switched on inside the pytest process, which may have imported triton already (torch.compile does). Prints
one JSON object: ``{case: {"err": max |got - want| / max |want|, "dtype": ..., "channels_last": ...}}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("run with TRITON_INTERPRET=1 (tests/test_lrn_triton.py does)")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import _lrn_reference  # noqa: E402

from alexnet.kernels import dispatch, lrn_triton  # noqa: E402,F401  (dispatch registers the custom ops)

torch.set_num_threads(1)
CL = torch.channels_last
results: dict[str, dict] = {}


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def record(name, got, want, dtype, channels_last):
    results[name] = {"err": rel(got, want), "dtype": str(got.dtype) == str(dtype),
                     "channels_last": got.is_contiguous(memory_format=CL) == channels_last}


def check(tag, x, size, alpha, beta, k, groups, dtypes=(torch.float32, torch.bfloat16)):
    """Forward and backward of both layouts and each dtype against the formula on the same (rounded) inputs."""
    g = torch.randn_like(x)
    for dtype in dtypes:
        xd, gd = x.to(dtype), g.to(dtype)
        xr = xd.double().requires_grad_()
        want = _lrn_reference(xr, size, alpha, beta, k, groups)
        (want_dx,) = torch.autograd.grad(want, xr, gd.double())
        for layout in ("nchw", "channels_last"):
            cl = layout == "channels_last"
            xx = xd.contiguous(memory_format=CL) if cl else xd
            name = f"{tag}/{layout}/{str(dtype).removeprefix('torch.')}"
            y = lrn_triton.forward(xx, size, alpha, beta, k, groups)
            record(f"forward/{name}", y, want.detach(), dtype, cl)
            dx = lrn_triton.backward(xx, gd, size, alpha, beta, k, groups)
            record(f"backward/{name}", dx, want_dx, dtype, cl)


torch.manual_seed(0)
# alpha 1e-3 on values ~20: alpha * sum x^2 is about 2, so the window term of the backward matters
for size in (1, 3, 5):
    for groups in (1, 2):
        check(f"size{size}/groups{groups}", torch.randn(1, 12, 3, 5, dtype=torch.float64) * 20, size, 1e-3, 0.75, 2.0,
              groups)
# the other powers (beta 0.5: rsqrt; 0.6: exp2/log2), k = 0, an even window
check("beta0.5/k0/size4", torch.randn(1, 8, 2, 3, dtype=torch.float64) * 20, 4, 1e-3, 0.5, 0.0, 2, (torch.float32,))
check("beta0.6/size5", torch.randn(1, 8, 2, 3, dtype=torch.float64) * 20, 5, 1e-3, 0.6, 1.0, 1, (torch.float32,))
# small tiles: partial pixel tiles, and channel blocks that straddle the boundary between the towers
lrn_triton.TILES = {"nchw": (4, 4), "channels_last": (4, 4)}
check("small-tiles/size5/groups2", torch.randn(2, 12, 3, 5, dtype=torch.float64) * 20, 5, 1e-3, 0.75, 2.0, 2,
      (torch.float32, torch.float16))

# The custom op: autograd through it (register_autograd), and torch.compile keeps it in one graph.
x = (torch.randn(2, 8, 3, 3, dtype=torch.float64) * 20).float().contiguous(memory_format=CL).requires_grad_()
g = torch.randn(2, 8, 3, 3)
y = torch.ops.alexnet.lrn_triton(x, 5, 1e-3, 0.75, 2.0, 2)
(dx,) = torch.autograd.grad(y, x, g)
xr = x.detach().double().requires_grad_()
want = _lrn_reference(xr, 5, 1e-3, 0.75, 2.0, 2)
(want_dx,) = torch.autograd.grad(want, xr, g.double())
record("op/forward", y, want.detach(), torch.float32, True)
record("op/backward", dx, want_dx, torch.float32, True)
graphs = []


def recording(gm, inputs):
    graphs.append(gm.code)
    return gm.forward


torch.compile(lambda a: torch.ops.alexnet.lrn_triton(torch.relu(a), 5, 1e-3, 0.75, 2.0, 2), backend=recording,
              fullgraph=True)(x)
results["op/compile"] = {"in_graph": any("alexnet.lrn_triton" in code for code in graphs)}
print(json.dumps(results))
