"""The fused CUDA LRN (Triton): its kernels against the paper's formula, its custom op, its fallbacks.

On a CPU the kernels run through Triton's interpreter in a child process (``tests/triton_interpreted.py``:
``TRITON_INTERPRET`` must be set before triton is imported); on a CUDA machine the compiled kernels are
checked too (``gpu`` tests), through ``local_response_norm``'s dispatch.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from alexnet.errors import UserError
from alexnet.kernels import dispatch, lrn_triton
from alexnet.models.lrn import local_response_norm

needs_triton = pytest.mark.skipif(not lrn_triton.AVAILABLE, reason="triton is not installed")
CUDA = torch.cuda.is_available()
SCRIPT = Path(__file__).with_name("triton_interpreted.py")
# max |got - want| / max |want|; Triton's interpreter truncates float32 -> bfloat16 (a GPU rounds to nearest)
TOL = {"float32": 2e-6, "bfloat16": 1.2e-2, "float16": 2e-3}


@pytest.fixture(scope="module")
def interpreted():
    """The cases of tests/triton_interpreted.py, run once: ``{case: result}``."""
    if not lrn_triton.AVAILABLE:
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "ALEXNET_LRN_KERNEL": "fused"}
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_kernels_match_the_formula(interpreted):
    kernel_cases = {k: v for k, v in interpreted.items() if k.startswith(("forward/", "backward/"))}
    # sizes 1/3/5 x groups 1/2 x both layouts x float32/bfloat16, forward and backward, and the extra cases
    assert len(kernel_cases) == 3 * 2 * 2 * 2 * 2 + 2 * 2 * 2 + 2 * 2 * 2
    for name in ("forward", "backward"):
        for size in (1, 3, 5):
            for groups in (1, 2):
                for layout in ("nchw", "channels_last"):
                    for dtype in ("float32", "bfloat16"):
                        assert f"{name}/size{size}/groups{groups}/{layout}/{dtype}" in kernel_cases
    bad = {k: v for k, v in kernel_cases.items() if not (v["err"] <= TOL[k.rsplit("/", 1)[1]] and v["dtype"]
                                                         and v["channels_last"])}
    assert not bad, bad


def test_custom_op_differentiates_and_compiles_into_one_graph(interpreted):
    assert interpreted["op/forward"]["err"] <= TOL["float32"] and interpreted["op/forward"]["channels_last"]
    assert interpreted["op/backward"]["err"] <= TOL["float32"]
    assert interpreted["op/compile"]["in_graph"]  # fullgraph=True, and the op itself in it


def test_kernel_choice_for_cuda_tensors(monkeypatch):
    monkeypatch.setattr(dispatch, "_triton_state", {})
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "torch")
    assert not dispatch.triton_wanted()
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "auto")
    monkeypatch.setattr(lrn_triton, "AVAILABLE", True)
    assert dispatch.triton_wanted()
    monkeypatch.setattr(lrn_triton, "AVAILABLE", False)
    with pytest.warns(RuntimeWarning, match="triton is not installed"):
        assert not dispatch.triton_wanted()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not dispatch.triton_wanted()  # warned once
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "fused")
    with pytest.raises(UserError, match="ALEXNET_LRN_KERNEL=fused, but triton is not installed"):
        dispatch.triton_wanted()


def test_a_failing_kernel_falls_back_once_in_auto_mode(monkeypatch, lrn_reference):
    """auto: a kernel that does not compile warns once and the band form answers; fused: the error is raised."""
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("ptxas: no such target")

    monkeypatch.setattr(dispatch, "_triton_state", {})
    monkeypatch.setattr(lrn_triton, "forward", broken)
    monkeypatch.setattr(lrn_triton, "backward", broken)
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "auto")
    x = (torch.randn(2, 8, 3, 3, dtype=torch.float64) * 20).float().requires_grad_()
    with pytest.warns(RuntimeWarning, match="ptxas: no such target"):
        y = torch.ops.alexnet.lrn_triton(x, 5, 1e-3, 0.75, 2.0, 2)
    torch.testing.assert_close(y.double(), lrn_reference(x.detach(), 5, 1e-3, 0.75, 2.0, 2), rtol=1e-5, atol=1e-5)
    g = torch.randn_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (dx,) = torch.autograd.grad(y, x, g)  # no second try, no second warning
    xr = x.detach().double().requires_grad_()
    (want,) = torch.autograd.grad(lrn_reference(xr, 5, 1e-3, 0.75, 2.0, 2), xr, g.double())
    torch.testing.assert_close(dx.double(), want, rtol=1e-5, atol=1e-6)
    assert len(calls) == 1 and not dispatch.triton_wanted()
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "fused")
    with pytest.raises(RuntimeError, match="ptxas"):
        torch.ops.alexnet.lrn_triton(x, 5, 1e-3, 0.75, 2.0, 2)


def test_out_of_memory_is_not_a_kernel_failure(monkeypatch):
    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(dispatch, "_triton_state", {})
    monkeypatch.setattr(lrn_triton, "forward", oom)
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "auto")
    with pytest.raises(torch.OutOfMemoryError):
        torch.ops.alexnet.lrn_triton(torch.randn(1, 4, 2, 2), 5, 1e-3, 0.75, 2.0, 1)
    assert dispatch._triton_state == {}


# ---------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@needs_triton
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("shape,groups", [((8, 96, 55, 55), 2), ((8, 256, 27, 27), 2), ((3, 40, 5, 7), 1)],
                         ids=["conv1", "conv2", "odd"])
def test_cuda_kernel_matches_the_formula(monkeypatch, lrn_reference, shape, groups):
    """The compiled kernels, reached through local_response_norm's dispatch, on the paper's LRN shapes."""
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "fused")  # a kernel that fails to compile is an error here
    monkeypatch.setattr(dispatch, "_triton_state", {})
    calls = []
    real = lrn_triton.forward
    monkeypatch.setattr(lrn_triton, "forward", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, device="cuda") * 30
    g = torch.randn_like(x)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
        xd, gd = x.to(dtype), g.to(dtype)
        xr = xd.double().requires_grad_()
        want = lrn_reference(xr, 5, 1e-4, 0.75, 2.0, groups)
        (want_dx,) = torch.autograd.grad(want, xr, gd.double())
        for xx in (xd, xd.contiguous(memory_format=torch.channels_last)):
            xx = xx.clone().requires_grad_()
            y = local_response_norm(xx, 5, 1e-4, 0.75, 2.0, groups)
            (dx,) = torch.autograd.grad(y, xx, gd)
            assert y.dtype == dtype and y.stride() == xx.stride()
            torch.testing.assert_close(y.double(), want.detach(), rtol=tol, atol=tol * want.abs().max().item())
            torch.testing.assert_close(dx.double(), want_dx, rtol=tol, atol=tol * want_dx.abs().max().item())
    assert len(calls) == 6  # every forward went through the Triton kernel


@pytest.mark.gpu
@needs_triton
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_kernel_compiles_into_the_graph(monkeypatch):
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "fused")
    monkeypatch.setattr(dispatch, "_triton_state", {})
    torch._dynamo.reset()
    x = (torch.randn(4, 96, 13, 13, device="cuda") * 30).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()

    def f(a):
        return local_response_norm(torch.relu(a), 5, 1e-4, 0.75, 2.0, 2)

    eager = f(x)
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    (got,) = torch.autograd.grad(out.sum(), x)
    (want,) = torch.autograd.grad(f(x).sum(), x)
    torch.testing.assert_close(got, want)
