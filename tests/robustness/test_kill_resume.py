"""SIGKILL of ``alexnet train`` at random moments, then resume: the weights end equal to an uninterrupted run's.

The moments (train_driver.py) are drawn at random from the baseline run's own
events with a fixed seed: steps, a checkpoint cut off after a random share
of its bytes, between a checkpoint's fsync and its rename and after it,
between last.ckpt and best.ckpt, in validation, half way through a metrics
line, and timers at random instants. A checkpoint write that fails for lack
of room (a file-size limit: the kernel's EFBIG) must leave the previous
checkpoint intact and say so in one line. All on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fault_kit import TALLY, TINY

KILLS = 11  # one of them a timer, which may fire after the run has ended
# 2 epochs of 6 steps (3 classes x 8 images, batch 4); a checkpoint every 2 steps and at each epoch's end
OVERRIDES = TINY + ["run.epochs=2", "run.checkpoint_steps=2", "run.threads=1"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tiny, tmp_path):
    spec = {"data": str(tiny.prep), "overrides": OVERRIDES, "work": str(tmp_path), "seed": 14, "kills": KILLS,
            "disk_step": 5, "results": str(tmp_path / "results.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    driver = Path(__file__).with_name("train_driver.py")
    r = subprocess.run([sys.executable, str(driver), str(tmp_path / "spec.json")], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())

    kills = TALLY["kills"]
    for k in res["kills"]:
        kills["killed"] += k["killed"]
        kills["in_write"] += k["killed"] and k["moment"]["event"] in ("write", "fsync")
        kills["resumed"] += k["resumed"] == 0
        kills["equal"] += k["killed"] and k["equal"]
        kills["unreadable"] += not k["readable"]
    disk = res["disk"]
    TALLY["disk"].update(tried=1, intact=disk["intact"], said="intact" in disk["stderr"], left=len(disk["left"]))

    assert sum(k["killed"] for k in res["kills"]) >= 10
    assert any(k["killed"] and k["moment"]["event"] in ("write", "fsync") for k in res["kills"])
    for k in res["kills"]:
        assert k["readable"], k  # a kill never leaves a checkpoint that cannot be read
        assert k["resumed"] == 0, k
        assert k["equal"], k
        assert not k["left_after_resume"], k  # the resume clears a cut write's temporary
        assert k["metrics_bad_lines"] <= 1, k  # at most the line a kill cut short

    assert disk["exit"] == 2, disk
    lines = disk["stderr"].splitlines()
    assert len(lines) == 1 and "last.ckpt" in lines[0] and "intact" in lines[0], lines
    assert disk["intact"] and not disk["left"], disk
