"""``prepare`` under torchrun: two CPU processes (gloo) on this machine write what one process writes.

Each rank writes its share of the shards into the shared OUT and rank 0 merges; the result is compared with a
one-process prepare of the same tree: the same files byte for byte (shards, indexes, skipped.txt, meta.json) and
the same statistics. Also: a rank killed half way, then a rerun; a rank whose shards rank 0 never sees; more
ranks than shards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.data import prepare

SHARD = 8  # samples per shard: 60 train + 15 val images -> 8 + 2 shards


def photo(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (3 + seed % 5)) % 256, (y * (2 + seed % 7)) % 256, ((x + y) * 4) % 256], -1)
    return np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def tree(root: Path, train: int = 60, val: int = 15) -> Path:
    """A folder source of 80 x 70 photos in 3 classes: prepared at --size 72 they are stored as JPEG."""
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            d = root / split / f"c{i % 3}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo(80, 70, i + (1000 if split == "val" else 0))).save(d / f"{i}.png")
    return root


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """Two ranks on this machine under torchrun (each rank's lines prefixed ``[default<rank>]:``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "--tee", "3", *args], capture_output=True, text=True, timeout=300, env=env)


def cli(src: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    return torchrun("-m", "alexnet.cli.main", "prepare", str(src), str(out), "--size", "72", "--workers", "1",
                    "--shard-size", str(SHARD), "--no-progress", *more)


def assert_same(out: Path, reference: Path) -> None:
    a, b = files(out), files(reference)
    assert sorted(a) == sorted(b)
    assert len([n for n in a if n.endswith(".tar")]) == 10
    for name in a:
        if name != "stats.npz":
            assert a[name] == b[name], name  # shards, indexes, skipped.txt, meta.json: byte for byte
    with np.load(out / "stats.npz") as s, np.load(reference / "stats.npz") as r:
        assert sorted(s.files) == sorted(r.files)
        for k in r.files:
            np.testing.assert_allclose(s[k], r[k], rtol=1e-10, atol=1e-9, err_msg=k)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The tree and its one-process prepare."""
    root = tmp_path_factory.mktemp("dprep")
    src = tree(root / "src")
    prepare(src, root / "one", size=72, workers=1, progress=False, shard_size=SHARD)
    return src, root / "one"


def test_two_ranks_write_what_one_process_writes(source, tmp_path):
    src, one = source
    run = cli(src, tmp_path / "two")
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same(tmp_path / "two", one)
    assert "rank 1 of 2: 5 shards (0 already done), 35 images" in run.stdout  # train 1, 3, 5, 7 and val 1
    assert "60 train, 15 val images" in run.stdout and "by 2 ranks" in run.stdout  # rank 0's summary
    assert len(list((tmp_path / "two" / ".prepare").glob("*.npz"))) == 10


SCRIPT = """
import importlib, os, signal, sys
P = importlib.import_module("alexnet.data.prepare")  # the module (alexnet.data.prepare is also the function)
from alexnet.data.shards import ShardWriter

if os.environ["RANK"] == "1":
    if sys.argv[3] == "kill":  # SIGKILL while rank 1 writes its second shard
        real, calls = ShardWriter.commit, []
        def commit(self):
            calls.append(self.path.name)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            real(self)
        ShardWriter.commit = commit
    else:  # rank 1 writes nothing rank 0 sees (as if its OUT were another folder)
        P._run_all = lambda *a, **k: None
P.prepare(sys.argv[1], sys.argv[2], size=72, workers=1, progress=False, shard_size=%d)
""" % SHARD


def test_a_rank_killed_half_way_then_a_rerun(source, tmp_path):
    src, one = source
    script = tmp_path / "dying.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    run = torchrun(str(script), str(src), str(out), "kill")
    assert run.returncode != 0 and "SIGKILL" in run.stderr, run.stderr[-3000:]
    assert not (out / "meta.json").exists() and not (out / "stats.npz").exists()  # nothing merged
    parts = {p.name for p in (out / ".prepare").glob("*.npz")}
    assert "train-000001.npz" in parts and "train-000003.npz" not in parts
    again = cli(src, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done" in again.stdout
    assert_same(out, one)


def test_shards_rank_0_does_not_see_are_not_merged(source, tmp_path):
    src, one = source
    script = tmp_path / "lost.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    run = torchrun(str(script), str(src), str(out), "lost")
    assert run.returncode != 0
    line = next(l for l in run.stderr.splitlines() if "UserError: 5 of 10 shards are not done" in l)
    assert "train-000001.tar" in line and "rerun" in line
    assert "rank 0 of 2 stopped: 5 of 10 shards are not done" in run.stderr  # rank 1 stops too, no hang
    assert not (out / "meta.json").exists() and not (out / "stats.npz").exists()
    assert not (out / "train.index.npy").exists()
    again = cli(src, out)  # the rerun writes rank 1's shards
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same(out, one)


def test_more_ranks_than_shards_is_refused_before_writing(tmp_path):
    src = tree(tmp_path / "src", train=6, val=0)
    out = tmp_path / "out"
    run = cli(src, out, "--shard-size", "100")  # one shard for two ranks
    assert run.returncode != 0
    errors = [l for l in run.stderr.splitlines() if "alexnet prepare: error:" in l]
    assert len(errors) == 2, run.stderr[-3000:]  # each rank: one line
    assert all("2 ranks but 1 shards" in l for l in errors)
    assert "exitcode  : 2" in run.stderr or "exitcode: 2" in run.stderr.replace(" ", "")
    assert not out.exists()
