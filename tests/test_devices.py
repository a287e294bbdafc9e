"""Devices chosen on purpose: the audit, one --device flag, CPU runs that leave CUDA alone,
run.deterministic, the per-128 learning rate, the fused step; and, where there is a GPU, what training on
CUDA promises: it learns, deterministic runs are bitwise equal and resume exactly, other resumes match to
a stated tolerance."""

import json
import os
import subprocess
import sys

import pytest
import torch

from alexnet.cli.main import build_parser
from alexnet.cli import device_override
from alexnet.engine import distributed, trainer as trainer_mod
from alexnet.checkpoint import load_checkpoint
from alexnet.engine.config import load_config
from alexnet.engine.trainer import Trainer, fit
from alexnet.errors import UserError

from helpers import TINY

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
# Every command that runs a network, with the arguments it needs besides --device.
NETWORK_COMMANDS = {
    "train": ["train", "--data", "d", "--out", "o"],
    "demo": ["demo"],
    "ablate": ["ablate", "--data", "d", "--study", "lrn"],
    "eval": ["eval", "c.ckpt", "--data", "d"],
    "features": ["features", "c.ckpt", "--data", "d", "--out", "f.npy"],
    "neighbors": ["neighbors", "c.ckpt", "--data", "d"],
    "predict": ["predict", "c.ckpt", "a.jpg"],
    "report": ["report", "run"],
    "viz neighbors": ["viz", "neighbors", "c.ckpt", "--data", "d"],
    "viz confusion": ["viz", "confusion", "c.ckpt", "--data", "d"],
}


AUDIT_ENV = "ALEXNET_DEVICE_AUDIT"  # tests/audit/sitecustomize.py


def test_auto_is_refused_while_the_suite_audits_devices():
    assert os.environ.get(AUDIT_ENV)  # tests/conftest.py sets it, for this process and its children
    with pytest.raises(RuntimeError, match="a test must choose its device"):
        distributed.resolve_device("auto")
    with pytest.raises(RuntimeError, match="a test must choose its device"):
        distributed.resolve_device(None)
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    # in a process a test starts too, where the modules that import resolve_device by name see the audited one
    code = ("from alexnet.engine.inference import resolve_device\n"
            "try:\n    resolve_device('auto')\nexcept RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    assert "a test must choose its device" in out


def test_auto_follows_cuda_and_a_missing_gpu_index_is_one_line(monkeypatch):
    monkeypatch.delenv(AUDIT_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        distributed.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.resolve_device("auto") == torch.device("cuda:0")
    assert distributed.resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
    # torchrun --nproc-per-node 2 on a machine with one GPU: rank 1 asks for cuda:1 (a DDP failure once)
    with pytest.raises(UserError, match=r"cuda:1 asked for, but this machine has 1 CUDA device.*--nproc-per-node at most 1"):
        distributed.resolve_device("auto", local_rank=1)


@pytest.mark.parametrize("command", NETWORK_COMMANDS)
def test_every_network_command_takes_device(command):
    args = build_parser().parse_args([*NETWORK_COMMANDS[command], "--device", "cuda:1"])
    assert args.device == "cuda:1"
    if command in ("train", "demo", "ablate"):  # the flag is run.device
        assert device_override(args)[-1] == "run.device=cuda:1"
        assert load_config(None, device_override(args)).run.device == "cuda:1"


def test_train_device_flag_is_run_device(prepared, tmp_path):
    args = build_parser().parse_args(["train", "--data", str(prepared), "--out", str(tmp_path), "--set",
                                      "run.device=cuda", "--device", "cpu"])
    assert load_config(None, device_override(args)).run.device == "cpu"  # the flag is the last word
    args = build_parser().parse_args(["train", "--data", str(prepared), "--out", str(tmp_path)])
    assert device_override(args) == [] and load_config(None, device_override(args)).run.device == "auto"


def test_a_cpu_run_leaves_cuda_alone(monkeypatch):
    """On a CUDA machine a CPU run's checkpoint holds no GPU RNG state (reading it would start CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def no_gpu():
        raise AssertionError("a CPU run touched CUDA")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", no_gpu)
    assert "cuda" not in trainer_mod.rng_state(cuda=False)
    with pytest.raises(AssertionError, match="touched CUDA"):
        trainer_mod.rng_state(cuda=True)


def test_deterministic_setting(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        trainer_mod.set_determinism(False)
        assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark  # fastest convolutions
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        trainer_mod.set_determinism(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own setting is kept
        trainer_mod.set_determinism(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]


def test_learning_rate_per_128_scales_with_the_batch(prepared, tmp_path):
    base = [*TINY, "optim.lr=0.01", "optim.lr_batch=128"]
    assert load_config("paper").optim.lr_batch == 128  # the paper's 0.01 is per batch of 128
    for batch, want in ((32, 0.0025), (128, 0.01), (64, 0.005)):
        t = Trainer(load_config(None, base + [f"data.batch_size={batch}"]), prepared, tmp_path / f"r{batch}",
                    progress=False)
        assert t.state.optimizer.param_groups[0]["lr"] == pytest.approx(want)
        assert t.schedule.base_lr == pytest.approx(want)  # warm-up and drops start from the scaled rate
    t = Trainer(load_config(None, [*TINY, "optim.lr=0.01"]), prepared, tmp_path / "plain", progress=False)
    assert t.state.optimizer.param_groups[0]["lr"] == 0.01  # no lr_batch: lr is data.batch_size's
    with pytest.raises(UserError, match="optim.lr_batch must be at least 1"):
        load_config(None, ["optim.lr_batch=0"])


def test_fused_step_is_torch_sgd_and_auto_only_on_cuda(prepared, tmp_path):
    t = Trainer(load_config(None, [*TINY, "optim.rule=torch"]), prepared, tmp_path / "a", progress=False)
    assert isinstance(t.state.optimizer, torch.optim.SGD) and not t.state.optimizer.defaults["fused"]  # CPU: off
    t = Trainer(load_config(None, [*TINY, "optim.rule=torch", "optim.fused=true"]), prepared, tmp_path / "b",
                progress=False)
    assert t.state.optimizer.defaults["fused"] is True
    with pytest.raises(UserError, match="optim.fused: a fused step is torch.optim.SGD's"):
        Trainer(load_config(None, [*TINY, "optim.fused=true"]), prepared, tmp_path / "c", progress=False)


# ---------------------------------------------------------------- on a GPU
def _cli_train(*args, env=None, kill_after_step=None):
    """``alexnet train ARGS`` in a child process; ``kill_after_step``: it dies by SIGKILL after that step."""
    driver = ["-m", "alexnet.cli.main"] if kill_after_step is None else [
        str(Path(__file__).with_name("kill_after_step.py")), str(kill_after_step)]
    return subprocess.run([sys.executable, *driver, "train", "--no-progress", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.ckpt")["state_dict"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.gpu
@needs_cuda
def test_cuda_training_is_finite_and_learns(prepared, tmp_path, precision):
    cfg = load_config(None, TINY + ["run.epochs=8", "data.lighting=0.0", "model.bias=0.0", "run.device=cuda",
                                    f"run.precision={precision}", "run.channels_last=true"])
    res = fit(cfg, prepared, tmp_path / "run", progress=False)
    epochs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in epochs)
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert res["best_top1_err"] < 0.75 - 0.15  # chance is 75% error with 4 classes (the CPU test asks the same)
    ckpt = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert "cuda" in ckpt["rng"] and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
                                         if v.is_floating_point())


@pytest.mark.gpu
@needs_cuda
def test_cuda_deterministic_runs_are_bitwise_equal_and_resume_exactly(prepared, tmp_path):
    """run.deterministic on CUDA: two runs give the same bits, and so does a run killed mid-epoch and resumed.
    Each run is its own process: cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it starts."""
    sets = [a for s in TINY + ["run.device=cuda", "run.deterministic=true", "run.checkpoint_steps=4",
                               "run.precision=bf16", "run.channels_last=true"] for a in ("--set", s)]
    common = ["--data", str(prepared), *sets]
    for name in ("a", "b"):
        run = _cli_train(*common, "--out", str(tmp_path / name))
        assert run.returncode == 0, run.stderr[-2000:]
    killed = _cli_train(*common, "--out", str(tmp_path / "cut"), kill_after_step=5)
    assert killed.returncode != 0 and load_checkpoint(tmp_path / "cut" / "last.ckpt")["batch_in_epoch"] == 4
    resumed = _cli_train(*common, "--out", str(tmp_path / "cut"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = _weights(tmp_path / "a")
    for other in ("b", "cut"):
        b = _weights(tmp_path / other)
        for k in a:
            assert torch.equal(a[k], b[k]), (other, k)


@pytest.mark.gpu
@needs_cuda
def test_cuda_resume_matches_within_tolerance(prepared, tmp_path):
    """Without run.deterministic, cuDNN benchmarks its algorithms afresh after a restart, so a resumed run is
    not bitwise the uninterrupted one: it is promised to match to rtol 1e-3, atol 1e-4 (weights ~1e-2)."""
    common = TINY + ["run.device=cuda", "model.bias=0.0"]
    fit(load_config(None, common), prepared, tmp_path / "full", progress=False)
    fit(load_config(None, common + ["run.epochs=1"]), prepared, tmp_path / "cut", progress=False)
    fit(load_config(None, common), prepared, tmp_path / "cut", resume=True, progress=False)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
