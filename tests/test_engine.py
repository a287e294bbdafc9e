"""Training, checkpoints, resume, DDP and evaluation on a tiny built-in dataset."""

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from alexnet.cli.main import main as cli
from alexnet.checkpoint import load_checkpoint, save_checkpoint
from alexnet.engine.config import load_config
from alexnet.engine.trainer import fit

from helpers import TINY  # tiny, fast and deterministic: a half-width small net on 4 classes of 32 px images


def weights(run_dir):
    return load_checkpoint(Path(run_dir) / "last.ckpt")["state_dict"]


KILL_AFTER_STEP = str(Path(__file__).with_name("kill_after_step.py"))


def run_cli(*args, env=None, kill_after_step=None):
    """``alexnet ARGS`` in a child process; ``kill_after_step``: it dies by SIGKILL after that training step."""
    cmd = ["-m", "alexnet.cli.main"] if kill_after_step is None else [KILL_AFTER_STEP, str(kill_after_step)]
    return subprocess.run([sys.executable, *cmd, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.mark.slow
def test_short_run_learns(prepared, tmp_path):
    # Biases 0: with the paper's 1, alexnet-small stalls (see the xfail below and configs/demo.yaml).
    cfg = load_config(None, TINY + ["run.epochs=8", "data.lighting=0.0", "model.bias=0.0"])  # lr 0.02 (TINY)
    res = fit(cfg, prepared, tmp_path / "run", progress=False)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [l for l in lines if l["kind"] == "epoch"]
    assert len(epochs) == 8
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["val_top1_err"] < 0.75 - 0.15  # chance is 75% error with 4 classes
    assert {"time", "epoch", "step", "lr", "train_loss", "val_top5_err", "images_per_s"} <= set(epochs[-1])
    assert (tmp_path / "run" / "best.ckpt").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    ckpt = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["state_dict"])
    assert ckpt["classes"] and ckpt["eval_transform"]["crop"] == 32 and ckpt["epoch"] == 8
    assert res["best_top1_err"] == min(e["val_top1_err"] for e in epochs)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known issue: with the paper's biases of 1 the first steps of alexnet-small "
                   "kill its fc7 ReLUs and it sits at chance (experiments/bias_stall.py)")
def test_paper_biases_learn_too(prepared, tmp_path):
    cfg = load_config(None, TINY + ["run.epochs=6", "data.lighting=0.0", "run.log_every=100"])
    fit(cfg, prepared, tmp_path / "run", progress=False)
    last = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["val_top1_err"] < 0.6


@pytest.mark.slow
def test_kill_and_resume_is_exact(prepared, tmp_path):
    common = ["train", "--data", str(prepared), "--no-progress"] + [a for s in TINY + ["run.checkpoint_steps=3", "run.deterministic=true"] for a in ("--set", s)]
    full = run_cli(*common, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    # Die (SIGKILL) at step 7 of 12: the last checkpoint is from step 6, mid-epoch 2.
    killed = run_cli(*common, "--out", str(tmp_path / "cut"), kill_after_step=7)
    assert killed.returncode != 0
    ck = load_checkpoint(tmp_path / "cut" / "last.ckpt")
    assert ck["step"] == 6 and ck["batch_in_epoch"] == 0 and ck["epoch"] == 1  # 6 steps an epoch
    resumed = run_cli(*common, "--out", str(tmp_path / "cut"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_resume_mid_epoch_is_exact(prepared, tmp_path):
    common = ["train", "--data", str(prepared), "--no-progress"] + [a for s in TINY + ["run.checkpoint_steps=4"] for a in ("--set", s)]
    assert run_cli(*common, "--out", str(tmp_path / "full")).returncode == 0
    killed = run_cli(*common, "--out", str(tmp_path / "cut"), kill_after_step=5)
    assert killed.returncode != 0
    ck = load_checkpoint(tmp_path / "cut" / "last.ckpt")
    assert ck["step"] == 4 and ck["batch_in_epoch"] == 4  # mid-epoch: the loader must skip 4 batches
    assert run_cli(*common, "--out", str(tmp_path / "cut"), "--resume").returncode == 0
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_resume_inside_the_warm_up_is_exact(prepared, tmp_path):
    """Warm-up is the schedule's: a run stopped inside it and resumed ends where an uninterrupted run does."""
    common = TINY + ["schedule.warmup_steps=9"]  # 6 steps an epoch: the warm-up runs on into the second epoch
    fit(load_config(None, common), prepared, tmp_path / "full", progress=False)
    fit(load_config(None, common + ["run.epochs=1"]), prepared, tmp_path / "cut", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "last.ckpt")["step"] == 6
    fit(load_config(None, common), prepared, tmp_path / "cut", resume=True, progress=False)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_set_typo_is_one_line_error(prepared, tmp_path, capsys):
    assert cli(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--set", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and err.count("\n") == 1
    assert cli(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--set", "optim.lr=fast"]) == 2
    assert "optim.lr must be float" in capsys.readouterr().err
    assert cli(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--set", "run.precision=fp8"]) == 2
    assert "run.precision" in capsys.readouterr().err
    assert cli(["train", "--config", "nope.yaml", "--data", str(prepared), "--out", str(tmp_path / "r")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_recipes_load():
    paper = load_config("paper")
    assert (paper.data.batch_size, paper.optim.lr, paper.optim.momentum, paper.optim.weight_decay) == (128, 0.01, 0.9, 0.0005)
    assert paper.optim.rule == "paper" and paper.schedule.max_drops == 3 and paper.run.epochs == 90
    assert paper.data.scale == 255 and paper.model.init is None and paper.model.bias is None  # the paper's own
    assert load_config("demo").model.name == "alexnet-small"
    assert load_config("fashion-mnist").model.name == "alexnet-small"
    small = load_config("small-data")
    assert (small.model.name, small.model.init, small.model.bias, small.data.scale) == ("alexnet", "kaiming", 0.0, 1.0)


def test_precision_auto_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from alexnet.engine import loop

    cpu = torch.device("cpu")
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: True)
    assert loop.resolve_precision("auto", cpu) == "bf16" and loop.precision_warning("bf16", cpu) is None
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: False)  # an AVX2-only CPU: bf16 would be emulated
    assert loop.resolve_precision("auto", cpu) == "fp32"
    assert "emulated" in loop.precision_warning("bf16", cpu) and loop.precision_warning("fp32", cpu) is None
    for asked in ("fp32", "bf16", "fp16"):  # what is asked for explicitly is kept
        assert loop.resolve_precision(asked, cpu) == asked
    for recipe in ("paper", "small-data", "fashion-mnist", "ablate"):
        assert load_config(recipe).run.precision == "auto", recipe


def test_run_records_what_auto_precision_became(prepared, tmp_path, monkeypatch, capsys):
    from alexnet.engine import loop

    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: False)
    fit(load_config(None, [*TINY, "run.epochs=1", "run.precision=auto"]), prepared, tmp_path / "a", progress=False)
    setup = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])
    assert setup["kind"] == "setup" and setup["precision"] == "fp32" and setup["device"] == "cpu"
    assert "warning" not in capsys.readouterr().err
    fit(load_config(None, [*TINY, "run.epochs=1", "run.precision=bf16"]), prepared, tmp_path / "b", progress=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.precision=bf16 on a CPU without bf16 units" in err
    setup = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    assert setup["precision"] == "bf16"  # asked for explicitly: kept, with the warning


def test_run_config_names_its_data(trained, tmp_path, capsys):
    """RUN/config.yaml records the data folder: the report finds it, and the config reruns without --data."""
    import yaml

    from alexnet.viz.report import find_data

    run, prepared = trained["run"], trained["prep"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["path"] == os.path.abspath(prepared)
    assert find_data(run, None, config) == Path(os.path.abspath(prepared))
    assert load_config(run / "config.yaml").data.path == os.path.abspath(prepared)
    assert cli(["train", "--out", str(tmp_path / "r")]) == 2  # no --data and no data.path
    assert "no data: pass --data" in capsys.readouterr().err


def test_mismatched_checkpoint_refused(trained, tmp_path, capsys):
    import shutil

    prepared, run = trained["prep"], trained["run"]
    other = tmp_path / "other"
    shutil.copytree(run, other)
    # Resume a run whose checkpoint holds another model.
    assert cli(["train", "--data", str(prepared), "--out", str(other), "--resume", "--no-progress",
                *[a for s in TINY + ["model.name=alexnet"] for a in ("--set", s)]]) == 2
    assert "holds model 'alexnet-small'" in capsys.readouterr().err
    # A checkpoint with another class count.
    ck = load_checkpoint(run / "last.ckpt")
    ck["model"]["options"]["num_classes"] = 7
    save_checkpoint(other / "last.ckpt", ck)
    assert cli(["train", "--data", str(prepared), "--out", str(other), "--resume", "--no-progress",
                *[a for s in TINY for a in ("--set", s)]]) == 2
    assert "7 classes" in capsys.readouterr().err
    assert cli(["eval", str(other / "last.ckpt"), "--data", str(prepared), "--device", "cpu"]) == 2
    assert "do not fit" in capsys.readouterr().err
    # Starting a new run over an old one is refused, not overwritten.
    assert cli(["train", "--data", str(prepared), "--out", str(run), *[a for s in TINY for a in ("--set", s)]]) == 2
    assert "--resume" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("EVIL_MARK", "/tmp/alexnet_evil_mark"),))


def test_hostile_pickle_refused(tmp_path, capsys, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    bad = tmp_path / "evil.ckpt"
    torch.save({"model": {"name": "alexnet"}, "state_dict": {}, "x": _Evil()}, bad)
    assert cli(["eval", str(bad), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and err.count("\n") == 1
    assert not mark.exists()
    with open(tmp_path / "plain.ckpt", "wb") as f:
        pickle.dump(_Evil(), f)
    assert cli(["eval", str(tmp_path / "plain.ckpt"), "--data", str(tmp_path)]) == 2
    assert not mark.exists()
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert cli(["eval", str(tmp_path / "junk.ckpt"), "--data", str(tmp_path)]) == 2
    assert cli(["eval", str(tmp_path / "missing.ckpt"), "--data", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_eval_json(trained, capsys):
    prepared, run = trained["prep"], trained["run"]
    assert cli(["eval", str(run / "last.ckpt"), "--data", str(prepared), "--json", "--workers", "0",
                "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"count", "top1_acc", "top5_acc", "top1_err", "top5_err"}
    assert res["count"] == 64 and abs(res["top1_acc"] + res["top1_err"] - 1) < 1e-9
    assert res["top5_acc"] == 1.0  # 4 classes: the true one is always in the top 5


def test_ten_crop_uses_ten_patches(trained, monkeypatch):
    from alexnet.engine import evaluate as ev

    prepared, run = trained["prep"], trained["run"]
    seen = []
    real = ev.Checkpoint.load

    def spy(*a, **k):
        ck = real(*a, **k)
        ck.model.register_forward_pre_hook(lambda m, inp: seen.append(tuple(inp[0].shape)))
        return ck

    monkeypatch.setattr(ev.Checkpoint, "load", spy)
    res = ev.evaluate_checkpoint(run / "last.ckpt", prepared, tta="10crop", batch_size=16, workers=0, device="cpu",
                                 progress=False)
    assert res["count"] == 64
    assert sum(s[0] for s in seen) == 640 and all(s[0] % 10 == 0 for s in seen)
    assert seen[0][1:] == (3, 32, 32)


def _torchrun_train(prepared, out, sets):
    """``alexnet train`` in two CPU processes under torchrun; each rank's lines prefixed ``[default<rank>]:``."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "--tee", "3", "-m", "alexnet.cli.main", "train", "--data", str(prepared), "--out", str(out),
                           "--no-progress", *sets], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _killed_by_a_signal(stderr: str) -> bool:
    return any(line.strip().startswith("exitcode") and "(SIG" in line for line in stderr.splitlines())


def _rank_lines(stderr: str, keep: int = 60) -> str:
    """What the ranks themselves printed (the launcher's own summary left out), last ``keep`` lines."""
    lines = [l for l in stderr.splitlines() if l.startswith("[default")] or stderr.splitlines()
    return "\n".join(lines[-keep:])


@pytest.mark.slow
def test_ddp_two_processes_match_one(prepared, tmp_path):
    cfg = TINY + ["model.dropout=0.0", "run.epochs=1"]
    sets = [a for s in cfg for a in ("--set", s)]
    one = run_cli("train", "--data", str(prepared), "--out", str(tmp_path / "one"), "--no-progress", *sets)
    assert one.returncode == 0, one.stderr
    out = tmp_path / "two"
    two = _torchrun_train(prepared, out, sets)
    if two.returncode != 0 and _killed_by_a_signal(two.stderr):
        # Once in CI (stop 18) rank 1 died of SIGABRT with no Python error; 63 local repeats, under load and with
        # the LRN kernel built by both ranks at once, never did it. A rank killed by a signal is retried once, its
        # output kept in a warning; a Python error fails at once, and a second signal fails too.
        warnings.warn(f"DDP run: a rank was killed by a signal; retrying once. Its ranks said:\n{_rank_lines(two.stderr)}")
        out = tmp_path / "two-again"
        two = _torchrun_train(prepared, out, sets)
    assert two.returncode == 0, _rank_lines(two.stderr)
    a, b = weights(tmp_path / "one"), weights(out)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(l) for l in lines if '"epoch"' in l and json.loads(l)["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["val_count"] == 64  # each val image counted once over both ranks
