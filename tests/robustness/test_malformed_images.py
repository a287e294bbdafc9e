"""Over 200 malformed, odd and hostile files through ``prepare`` and ``predict``: no crash, each one accounted for.

``prepare`` stores every entry it keeps exactly once, under its own folder's
label, and lists every other entry in skipped.txt with a reason; links to
folders are never followed (no loop, no image counted twice or under another
class). ``predict`` answers for each file it can read, reports each one it
cannot on its own line, and exits non-zero. The two agree on which files
are usable. What happened to each class of file goes to the tally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet.data import prepare
from alexnet.data.prepare import read_skipped

import corpus
from fault_kit import TALLY


def skipped_paths(out) -> dict[str, str]:
    entries = read_skipped(out)
    return {os.fsdecode(bytes.fromhex(e["path_hex"])) if "path_hex" in e else e["path"]: e["reason"] for e in entries}


@pytest.mark.slow
def test_corpus_through_prepare_and_predict(tiny, tmp_path):
    items = corpus.build(tmp_path / "src")
    assert len(items) >= 200
    tally = TALLY["images"]
    for it in items:
        tally[it.kind]["tried"] += 1
    try:
        summary = prepare(tmp_path / "src", tmp_path / "out", size=32, workers=1, progress=False)
    except Exception:
        for it in items:
            tally[it.kind]["crashes"] += 1
        raise
    skipped = skipped_paths(tmp_path / "out")
    assert set(skipped) <= {it.path for it in items}, set(skipped) - {it.path for it in items}
    kept = [it for it in items if it.path not in skipped]
    for it in items:
        tally[it.kind]["skipped" if it.path in skipped else "kept"] += 1
    wrong = [(it.kind, os.path.basename(it.path), skipped.get(it.path, "kept")) for it in items
             if it.expect != "either" and (it.path in skipped) != (it.expect == "skipped")]
    assert not wrong, wrong
    # each kept entry stored once, under its own folder's label: nothing duplicated through a link, nothing relabelled
    index = np.load(tmp_path / "out" / "train.index.npy")
    per_class = [sum(f"/train/{c}/" in it.path for it in kept) for c in ("a", "b")]
    stored = np.bincount(index[:, 3], minlength=2).tolist()
    if stored != per_class:
        for it in items:
            tally[it.kind]["corrupted"] += 1
    assert summary["splits"]["train"] == len(kept) and stored == per_class, (stored, per_class)
    assert all(r for r in skipped.values())

    # predict: every file, one answer or one error line each
    ckpt = str(tiny.ckpt)
    r = subprocess.run([sys.executable, "-m", "alexnet.cli.main", "predict", ckpt, *[it.path for it in items],
                        "--json", "--topk", "1", "--device", "cpu"], capture_output=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    answered = {res["image"] for res in json.loads(r.stdout)}
    errors = r.stderr.decode("utf-8", "surrogateescape").splitlines()
    assert all(e.startswith("alexnet predict: error: ") for e in errors), errors[:5]
    assert len(answered) + len(errors) == len(items) and answered <= {it.path for it in items}
    for it in items:
        tally[it.kind]["predicted" if it.path in answered else "refused"] += 1
    disagree = [(it.kind, os.path.basename(it.path)) for it in items if (it.path in answered) != (it.path not in skipped)]
    assert not disagree, disagree
