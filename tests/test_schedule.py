"""The one-cycle schedule, label smoothing and the training error the trainer logs."""

import json

import pytest
import torch

from alexnet.engine.config import load_config
from alexnet.engine.optim import OneCycleSchedule
from alexnet.engine.trainer import fit
from alexnet.errors import UserError

from helpers import TINY


def _optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_one_cycle_rises_then_falls_to_zero():
    s = OneCycleSchedule(_optimizer(0.1), warmup_steps=4, total_steps=12)
    rates = [s.rate(i) for i in range(12)]
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert rates[4:] == pytest.approx([0.1 * (12 - i) / 8 for i in range(4, 12)])
    assert all(a > b for a, b in zip(rates[4:], rates[5:])) and s.rate(12) == 0.0
    s.warm_up(6)
    assert s.lr == pytest.approx(0.075)
    assert s.step(0.5) is False and s.state_dict() == {}  # the cycle ignores validation error
    with pytest.raises(RuntimeError, match="total_steps"):
        OneCycleSchedule(_optimizer()).rate(0)


def test_config_keys_and_their_errors():
    cfg = load_config(None, ["schedule.kind=onecycle", "optim.label_smoothing=0.1", "model.towers=1"])
    assert (cfg.schedule.kind, cfg.optim.label_smoothing, cfg.model.towers) == ("onecycle", 0.1, 1)
    for bad, says in (("schedule.kind=cosine", "onecycle"), ("optim.label_smoothing=1", "below 1"),
                      ("model.towers=3", "1 or 2")):
        with pytest.raises(UserError, match=says):
            load_config(None, [bad])


@pytest.mark.slow
def test_trainer_follows_the_cycle_and_logs_training_error(prepared, tmp_path):
    sets = [*TINY, "model.bias=0.0", "schedule.kind=onecycle", "schedule.warmup_steps=2",
            "optim.label_smoothing=0.1"]
    fit(load_config(None, sets), prepared, tmp_path / "run", progress=False)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if l["kind"] == "step"]
    epochs = [l for l in lines if l["kind"] == "epoch"]
    total = epochs[-1]["step"]
    # the rate logged after step k is the one step k+1 will use; the last step ran at the smallest rate
    expected = OneCycleSchedule(_optimizer(0.02), warmup_steps=2, total_steps=total)
    assert [l["lr"] for l in steps] == pytest.approx([expected.rate(l["step"] - 1) for l in steps])
    for line in steps + epochs:
        assert 0.0 <= line["train_top1_err"] <= 1.0
    # one-step windows: every logged error is a multiple of 1/32
    assert all(abs(l["train_top1_err"] * 32 - round(l["train_top1_err"] * 32)) < 1e-9 for l in steps)

