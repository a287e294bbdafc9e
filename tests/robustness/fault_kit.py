"""Shared by the fault suite: its tally and the tiny data and recipe every test uses."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np

TALLY = {
    "cli": collections.Counter(),
    "images": collections.defaultdict(collections.Counter),
    "kills": collections.Counter(),
    "disk": collections.Counter(),
    "runs": collections.Counter(),
    "trust": collections.Counter(),
}

# Tiny and fast: alexnet-small at a quarter width on 32 px images, batch 4, CPU.
TINY = ["model.name=alexnet-small", "model.width=0.25", "model.bias=0.0", "data.batch_size=4", "data.workers=0",
        "run.channels_last=false", "run.device=cpu", "run.log_every=1"]


def write_images(root, per_split: dict[str, int], classes: int = 3, seed: int = 0) -> None:
    """``root/<split>/c<k>/<i>.png``: 32 px noise with a bright band whose row says the class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 100, (32, 32, 3), dtype=np.uint8)
                a[c * 10:c * 10 + 10] += 120
                Image.fromarray(a).save(folder / f"{i}.png")


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
