"""Shared by the fault suite: its tally, its override of the tiny recipe, and how it runs and watches a command."""

from __future__ import annotations

import collections
import os
from pathlib import Path

from helpers import TINY as _TINY

TALLY = {
    "cli": collections.Counter(),
    "images": collections.defaultdict(collections.Counter),
    "kills": collections.Counter(),
    "disk": collections.Counter(),
    "runs": collections.Counter(),
    "trust": collections.Counter(),
}

# The tests' tiny recipe (tests/helpers.py) with the fault suite's override: its data is 8 images a class, so a
# batch of 4 gives several steps an epoch (kills land between them, mid-epoch checkpoints need them); a quarter
# width keeps its hundreds of runs fast; biases 0 so the net learns (experiments/bias_stall.py).
TINY = _TINY + ["model.width=0.25", "model.bias=0.0", "data.batch_size=4"]


def run_cli(argv: list[str], capsys, tally: str = "cli") -> tuple[int, list[str], bool]:
    """``alexnet ARGV`` in this process, counted in ``TALLY[tally]``: (exit code, stderr lines, whether it
    ended as one clean error line with exit 2). A traceback is counted and re-raised."""
    from alexnet.cli.main import main

    TALLY[tally]["tried"] += 1
    try:
        rc = main(argv)
    except BaseException:
        TALLY[tally]["tracebacks"] += 1
        raise
    lines = capsys.readouterr().err.splitlines()
    return rc, lines, rc == 2 and len(lines) == 1 and ": error: " in lines[0]


def fingerprint(*roots: Path) -> dict[str, tuple]:
    """Every path under ``roots`` (links not followed) with its kind, size and modification time
    (a folder's own time is left out: the output checks create and remove a probe file)."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                folder = os.path.isdir(p) and not os.path.islink(p)
                seen[p] = (st.st_mode >> 12, 0 if folder else st.st_size, 0 if folder else st.st_mtime_ns)
    return seen
