"""The fused CPU LRN kernel and the PyTorch LRN: each against the paper's formula."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from alexnet import models
from alexnet.kernels import lrn_cpu
from alexnet.errors import UserError
from alexnet.models.lrn import local_response_norm


def use(monkeypatch, choice):
    """Select the LRN implementation; skip when the fused one cannot be built here (no compiler)."""
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", choice)
    if choice == "fused":
        try:
            lrn_cpu.get()
        except UserError as e:
            pytest.skip(str(e))


@pytest.fixture(params=["fused", "torch"])
def impl(request, monkeypatch):
    use(monkeypatch, request.param)
    return request.param


def layouts(x):
    yield x
    yield x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [5, 3, 4, 1])
@pytest.mark.parametrize("k", [2.0, 0.0])
def test_forward_matches_formula(impl, groups, size, k, lrn_reference):
    x = torch.randn(3, 40, 5, 7, dtype=torch.float64) * 30  # 35 pixels: two full tiles and a partial one
    want = lrn_reference(x, size, 1e-4, 0.75, k, groups)
    for xx in layouts(x):
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            got = local_response_norm(xx.to(dtype), size, 1e-4, 0.75, k, groups)
            assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last) == (
                xx.is_contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("beta", [0.75, 0.5, 0.6])
def test_backward_matches_autograd_of_formula(impl, beta, lrn_reference):
    g = torch.randn(2, 24, 3, 5, dtype=torch.float64)
    for groups, size, k in ((1, 5, 2.0), (2, 5, 2.0), (2, 4, 1.0), (3, 3, 0.0)):
        x = torch.randn(2, 24, 3, 5, dtype=torch.float64) * 20
        (ref,) = torch.autograd.grad(lrn_reference(x.requires_grad_(), size, 1e-3, beta, k, groups), x, g)
        for xx in layouts(x.detach()):
            xx = xx.clone().requires_grad_()
            (ours,) = torch.autograd.grad(local_response_norm(xx, size, 1e-3, beta, k, groups), xx, g)
            torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)


def test_gradcheck(impl):
    x = (torch.randn(2, 10, 2, 3, dtype=torch.float64) * 10).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: local_response_norm(a, 5, 1e-2, 0.75, 2.0, 2), (x,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_and_odd_strides(impl, dtype, lrn_reference):
    x = torch.randn(4, 64, 9, 9) * 10
    want = lrn_reference(x.to(dtype), 5, 1e-4, 0.75, 2.0, 2)
    got = local_response_norm(x.to(dtype), 5, 1e-4, 0.75, 2.0, 2)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=1e-2, atol=1e-2)
    sliced = x[:, :, 1:8, ::2]  # neither layout: handled through a copy
    torch.testing.assert_close(local_response_norm(sliced, 5, 1e-4, 0.75, 2.0, 2).double(),
                               lrn_reference(sliced, 5, 1e-4, 0.75, 2.0, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fused_and_torch_agree_on_a_training_step(monkeypatch):
    """One bf16 channels-last step of the paper's network gives the same grads both ways."""
    grads = {}
    for choice in ("torch", "fused"):
        use(monkeypatch, choice)
        torch.manual_seed(0)
        m = models.create("alexnet", num_classes=10, dropout=0.0).to(memory_format=torch.channels_last)
        with torch.no_grad():
            m.conv1.weight.mul_(30)  # so the LRN of conv1 bites
        x = torch.randn(2, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = m(x).float().logsumexp(1).sum()
        loss.backward()
        grads[choice] = m.conv1.weight.grad.clone()
    torch.testing.assert_close(grads["fused"], grads["torch"], rtol=0.05, atol=0.05 * grads["torch"].abs().max().item())


def test_build_failure_falls_back_with_a_warning(monkeypatch, lrn_reference):
    def broken():
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(lrn_cpu, "_build", broken)
    monkeypatch.setattr(lrn_cpu, "_state", {})
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "auto")
    x = torch.randn(1, 8, 2, 2) * 10
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        y = local_response_norm(x)
    torch.testing.assert_close(y.double(), lrn_reference(x, 5, 1e-4, 0.75, 2.0), rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        local_response_norm(x)  # warned once, not on every call
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "fused")  # asked for after the failure: an error, not None
    with pytest.raises(UserError, match="could not be built: no compiler here"):
        local_response_norm(x)


@pytest.mark.slow
def test_bad_kernel_choice_is_named(monkeypatch):
    monkeypatch.setenv("ALEXNET_LRN_KERNEL", "fast")
    with pytest.raises(UserError, match="ALEXNET_LRN_KERNEL must be one of auto, torch, fused, not 'fast'"):
        local_response_norm(torch.randn(1, 8, 2, 2))
    run = subprocess.run([sys.executable, "-m", "alexnet.cli.main", "info", "alexnet"], capture_output=True, text=True,
                         env={**os.environ, "ALEXNET_LRN_KERNEL": "fast"})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == "alexnet info: error: ALEXNET_LRN_KERNEL must be one of auto, torch, fused, not 'fast'"


def test_build_key_changes_with_the_source(monkeypatch, tmp_path):
    """Another text, or the same text in another checkout (ninja's build line names the source's path),
    builds in another folder."""
    real = lrn_cpu.SOURCE
    changed, copy = tmp_path / "changed" / "lrn_cpu.cpp", tmp_path / "copy" / "lrn_cpu.cpp"
    for path, text in ((changed, real.read_text() + "\n// changed\n"), (copy, real.read_text())):
        path.parent.mkdir()
        path.write_text(text)
    names = [lrn_cpu.build_name()]
    for path in (changed, copy):
        monkeypatch.setattr(lrn_cpu, "SOURCE", path)
        names.append(lrn_cpu.build_name())
    assert len(set(names)) == 3 and all(n.startswith("alexnet_lrn_cpu_") for n in names)


@pytest.mark.slow
def test_fused_kernel_traces_under_torch_compile(monkeypatch):
    """The kernel is a custom op with a fake impl and autograd: compile keeps it, no graph break."""
    use(monkeypatch, "fused")
    torch._dynamo.reset()
    x = (torch.randn(2, 16, 5, 5) * 20).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(2, 16, 5, 5)

    def f(a):
        return local_response_norm(torch.relu(a), 5, 1e-3, 0.75, 2.0, 2)

    (want,) = torch.autograd.grad(f(x), x, g)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    (got,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(out, f(x))
    torch.testing.assert_close(got, want)
    assert out.is_contiguous(memory_format=torch.channels_last)
    graphs = []

    def recording(gm, inputs):
        graphs.append(gm.code)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(f, backend=recording, fullgraph=True)(x)
    assert "alexnet.lrn_cpu" in graphs[0]  # the kernel itself, not the tensor-op LRN
