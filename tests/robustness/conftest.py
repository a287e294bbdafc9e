"""Fixtures of the fault suite and its tally, printed at the end of the run.

``python -m pytest tests/robustness`` ends with its counts:
CLI cases tried, clean errors, tracebacks, crashes, data corrupted; malformed
images tried and how each class was handled by ``prepare`` and ``predict``;
kills survived with weights equal to an uninterrupted run's.
"""

from __future__ import annotations

import collections
import types

import pytest

from fault_kit import TALLY, TINY, write_images

@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Raw images, their prepared folder, and a checkpoint trained one epoch on them."""
    from alexnet.data import prepare
    from alexnet.engine.config import load_config
    from alexnet.engine.trainer import fit

    root = tmp_path_factory.mktemp("tiny")
    write_images(root / "raw", {"train": 8, "val": 3})
    prepare(root / "raw", root / "prep", workers=1, progress=False)
    fit(load_config(None, TINY + ["run.epochs=1"]), root / "prep", root / "run", progress=False)
    return types.SimpleNamespace(root=root, raw=root / "raw", prep=root / "prep", run=root / "run",
                                 ckpt=root / "run" / "last.ckpt")


def pytest_terminal_summary(terminalreporter):
    cli, images, kills, disk, runs, trust = (TALLY[k] for k in ("cli", "images", "kills", "disk", "runs", "trust"))
    if not (cli or images or kills or disk or runs or trust):
        return
    w = terminalreporter.write_line
    w("")
    w("robustness tally")
    if cli:
        w(f"  CLI cases tried {cli['tried']}: clean one-line errors (exit 2) {cli['clean']}, tracebacks "
          f"{cli['tracebacks']}, crashes {cli['crashes']}, data corrupted or half-written {cli['corrupted']}"
          f" (of which in a real process: {cli['process']})")
    if images:
        total = collections.Counter()
        for c in images.values():
            total.update(c)
        w(f"  malformed images tried {total['tried']} in {len(images)} classes: prepare kept {total['kept']}, "
          f"skipped and listed {total['skipped']}; predict answered {total['predicted']}, "
          f"reported {total['refused']}; crashes {total['crashes']}, duplicated or mislabelled {total['corrupted']}")
        for kind in sorted(images):
            c = images[kind]
            w(f"    {kind:<27} {c['tried']:>3} tried: prepare kept {c['kept']:>3} / skipped {c['skipped']:>3}; "
              f"predict answered {c['predicted']:>3} / reported {c['refused']:>3}")
    if kills:
        w(f"  SIGKILLs of train {kills['killed']} (during a checkpoint write: {kills['in_write']}); resumed to the end "
          f"{kills['resumed']}; weights equal to the uninterrupted run {kills['equal']}; checkpoints unreadable "
          f"after a kill {kills['unreadable']}")
    if disk:
        w(f"  failed checkpoint writes {disk['tried']}: previous checkpoint intact {disk['intact']}, "
          f"said so in one line {disk['said']}, temporaries left {disk['left']}")
    if runs:
        w(f"  run-folder cases tried {runs['tried']}: clean one-line errors (exit 2) {runs['clean']}, correct "
          f"{runs['correct']}, tracebacks {runs['tracebacks']}, silent (exit 0 where an error was due) "
          f"{runs['silent']}, writes or deletes outside the run folder {runs['outside']}; killed and resumed "
          f"{runs['resumed']} of {runs['killed']}")
    if trust:
        w(f"  inputs from others (crafted folders, tars, recipes) {trust['tried']}: clean one-line errors (exit 2) "
          f"{trust['clean']}, correct documented behaviour {trust['correct']}, tracebacks {trust['tracebacks']}, "
          f"silent {trust['silent']}, files outside the folder opened {trust['outside']} "
          f"(in a real process: {trust['process']})")
