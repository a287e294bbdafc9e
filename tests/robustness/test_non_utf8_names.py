"""A class folder whose name is not UTF-8 (a Latin-1 ``caf\\xe9``): the figures and the report draw it (as U+FFFD)
instead of dying in matplotlib's font code, and every command exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fault_kit import TALLY, TINY
from helpers import write_images


@pytest.fixture(scope="module")
def latin1_run(tmp_path_factory):
    from alexnet.data import prepare
    from alexnet.engine.config import load_config
    from alexnet.engine.trainer import fit

    root = tmp_path_factory.mktemp("latin1")
    write_images(root / "raw", {"train": 6, "val": 2})
    for split in ("train", "val"):
        os.rename(os.fsencode(root / "raw" / split / "c1"), os.fsencode(root / "raw" / split) + b"/caf\xe9")
    prepare(root / "raw", root / "prep", workers=1, progress=False)
    fit(load_config(None, TINY + ["run.epochs=1"]), root / "prep", root / "run", progress=False)
    return root


COMMANDS = [
    ("viz-confusion", ["viz", "confusion", "{run}/last.ckpt", "--data", "{prep}", "--out", "{out}/confusion.png"]),
    ("neighbors-out", ["neighbors", "{run}/last.ckpt", "--data", "{prep}", "--out", "{out}/nb", "-k", "2",
                       "--no-cache", "--query", "{query}"]),
    ("report", ["report", "{run}", "--data", "{prep}", "--out", "{out}/report.html", "-k", "2"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_figures_draw_a_non_utf8_class_name(case, argv, latin1_run, tmp_path):
    """In a real process: the output names the file in its own bytes, which pytest's capture cannot decode."""
    query = os.fsdecode(os.fsencode(latin1_run / "raw" / "val") + b"/caf\xe9/0.png")
    argv = [a.format(run=latin1_run / "run", prep=latin1_run / "prep", out=tmp_path, query=query) for a in argv]
    TALLY["cli"]["tried"] += 1
    TALLY["cli"]["process"] += 1
    r = subprocess.run([sys.executable, "-m", "alexnet.cli.main", *argv, "--device", "cpu", "--no-progress"],
                       capture_output=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if b"Traceback" in r.stderr:
        TALLY["cli"]["tracebacks"] += 1
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    assert any(tmp_path.rglob("*.png")) or any(tmp_path.rglob("*.html")), sorted(tmp_path.rglob("*"))
