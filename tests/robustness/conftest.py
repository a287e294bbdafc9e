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

from fault_kit import TALLY, TINY


@pytest.fixture(scope="session")
def tiny(prepared_data, tmp_path_factory):
    """Raw images (3 classes, 8 train and 3 val each), their prepared folder, and a checkpoint trained one
    epoch on them; ``roots``: the folders that hold them all (what no failed command may change)."""
    from alexnet.engine.config import load_config
    from alexnet.engine.trainer import fit

    prep = prepared_data({"train": 8, "val": 3})
    run = tmp_path_factory.mktemp("tiny") / "run"
    fit(load_config(None, TINY + ["run.epochs=1"]), prep, run, progress=False)
    return types.SimpleNamespace(roots=(prep.parent, run), raw=prep.parent / "raw", prep=prep, run=run,
                                 ckpt=run / "last.ckpt")


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
