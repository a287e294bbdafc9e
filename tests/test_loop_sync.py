"""The training loop reads the device once per logging interval, not once per step, and logs the same numbers.

On the CPU (the device the sums live on is then the CPU, chosen on purpose: the arithmetic is the point, and it is
the same float64 arithmetic on any device).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from alexnet import models
from alexnet.engine.config import load_config
from alexnet.engine.loop import TrainState, train_one_epoch
from alexnet.engine.trainer import Trainer


def _state(read_every: int) -> TrainState:
    torch.manual_seed(0)
    model = models.create("alexnet-small", num_classes=4, width=0.25, lrn=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return TrainState(model, opt, scaler, torch.device("cpu"), read_every=read_every)


def _batches(n=7, b=6):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, 4, (b,), generator=g)) for _ in range(n)]


def test_sums_read_every_k_steps_equal_the_per_step_host_sums():
    """read_every=1 is the old per-step read: its host sum of loss * n is the reference. With read_every=3 the
    on_step loss is None between reads, equal to the reference's at the reads (and at the epoch's last batch),
    and the epoch's sums are bitwise the reference's."""
    data = _batches()
    ref, per_step = [], {}
    host_sum = 0.0

    def every(state, loss, ips):
        nonlocal host_sum
        host_sum += loss * 6  # what the loop did before: loss.item() per step, summed on the host
        per_step[state.step] = (loss, state.correct)
        ref.append(loss)

    a = _state(1)
    res_a = train_one_epoch(a, data, every, progress=False)
    assert a.loss_sum == host_sum  # bit for bit
    seen = {}

    def some(state, loss, ips):
        seen[state.step] = (loss, None if loss is None else state.correct, ips)

    b = _state(3)
    res_b = train_one_epoch(b, data, some, progress=False)
    assert res_a == res_b and b.loss_sum == a.loss_sum and b.correct == a.correct and b.seen == a.seen == 42
    for step, (loss, correct, ips) in seen.items():
        if step % 3 == 0 or step == len(data):
            assert (loss, correct) == per_step[step] and ips > 0
        else:
            assert loss is None and ips is None


def test_non_finite_runs_are_counted_across_reads_and_epochs():
    s = _state(1)
    reads = []
    for losses in ([1.0, math.nan, math.nan], [math.inf, 2.0, math.nan], [math.nan], [math.nan, math.nan]):
        for v in losses:
            s.record(torch.tensor(v, dtype=torch.float64), torch.tensor(1), 2)
        s.read()
        reads.append(s.nonfinite_steps)
        if len(reads) == 3:
            s.loss_sum, s.correct = 0.0, 0  # a new epoch: the run of non-finite steps goes on
    # 2 in a row; then 3 (nan, nan, inf); then 1 (nan, after 2.0), 2 across the read; then 4 across the epoch
    assert reads == [2, 3, 2, 4]
    assert math.isnan(s.last_loss) and s.correct == 2 and math.isnan(s.loss_sum)


@pytest.mark.parametrize("log_every", [3])
def test_metrics_jsonl_has_the_per_step_numbers(prepared, tmp_path, log_every):
    """Two CPU runs of the trainer, logging every step and every third: the step lines they share and the
    epoch lines are the same numbers (train_loss of the step; the epoch's loss and error)."""
    tiny = ["model.name=alexnet-small", "model.lrn=false", "model.width=0.25", "data.batch_size=16",
            "data.workers=0", "run.device=cpu", "run.epochs=2"]

    def records(log, out):
        cfg = load_config(None, tiny + [f"run.log_every={log}"])
        Trainer(cfg, prepared, tmp_path / out, progress=False).fit()
        rows = [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
        return ({r["step"]: r for r in rows if r["kind"] == "step"}, [r for r in rows if r["kind"] == "epoch"])

    steps1, epochs1 = records(1, "a")
    steps3, epochs3 = records(log_every, "b")
    assert steps3 and set(steps3) == {s for s in steps1 if s % log_every == 0}
    for step, r in steps3.items():
        assert r["train_loss"] == steps1[step]["train_loss"]
    for e1, e3 in zip(epochs1, epochs3, strict=True):
        for key in ("train_loss", "train_top1_err", "val_top1_err", "val_top5_err"):
            assert e1[key] == e3[key], key
