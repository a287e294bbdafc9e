"""A disk that fills up while a checkpoint is written: the previous checkpoint stays, whole, and the error says so.

A patched ``torch.save`` writes part of the checkpoint and then fails with
ENOSPC, as a full disk does; test_kill_resume.py does the same with a real
file-size limit (EFBIG from the kernel) in a separate process.
"""

from __future__ import annotations

import errno
import hashlib
import shutil

import pytest
import torch

from alexnet.cli.main import main
from alexnet.checkpoint import load_checkpoint, save_checkpoint
from alexnet.errors import UserError

from fault_kit import TALLY, TINY


def fill_disk_after(monkeypatch, nbytes: int) -> None:
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if not hasattr(f, "write"):
            return real(obj, f, *args, **kwargs)
        f.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("nbytes", [0, 1000, 100_000])
def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, nbytes):
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, {"model": {"name": "x"}, "state_dict": {"w": torch.arange(10.0)}, "step": 1})
    before = digest(path)
    fill_disk_after(monkeypatch, nbytes)
    TALLY["disk"]["tried"] += 1
    with pytest.raises(UserError) as e:
        save_checkpoint(path, {"model": {"name": "x"}, "state_dict": {"w": torch.ones(10)}, "step": 2})
    left = list(tmp_path.glob(".*.tmp"))
    TALLY["disk"].update(intact=digest(path) == before, said="intact" in str(e.value), left=len(left))
    assert "No space left on device" in str(e.value) and "the previous last.ckpt is intact" in str(e.value)
    assert digest(path) == before and not left
    assert load_checkpoint(path)["step"] == 1


def test_first_save_on_a_full_disk_says_nothing_was_written(tmp_path, monkeypatch):
    fill_disk_after(monkeypatch, 10)
    with pytest.raises(UserError, match="nothing was written"):
        save_checkpoint(tmp_path / "best.ckpt", {"model": {"name": "x"}, "state_dict": {}})
    assert not list(tmp_path.iterdir())


def test_train_on_a_full_disk_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny.run, run)
    before = digest(run / "last.ckpt")
    fill_disk_after(monkeypatch, 4096)
    TALLY["disk"]["tried"] += 1
    argv = ["train", "--data", str(tiny.prep), "--out", str(run), "--resume", "--no-progress"]
    assert main(argv + [a for s in TINY + ["run.epochs=2"] for a in ("--set", s)]) == 2
    err = capsys.readouterr().err.splitlines()
    left = list(run.glob(".*.tmp"))
    TALLY["disk"].update(intact=digest(run / "last.ckpt") == before, said=len(err) == 1 and "intact" in err[0],
                         left=len(left))
    assert len(err) == 1 and "No space left on device" in err[0] and "previous last.ckpt is intact" in err[0], err
    assert digest(run / "last.ckpt") == before and not left
