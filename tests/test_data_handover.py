"""How batches reach the training loop: packed batches, the decoder probe and its fallback, a hung or dead worker,
a 512-image batch under ``ulimit -n 1024``, and (with CUDA) that a handed-over batch never changes afterwards.

Everything but the last test runs on the CPU (``device=None``, or the GPU feeding thread forced on with
``_background``); the CUDA test chooses CUDA on purpose and is skipped without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import torch

from alexnet.data import generate_synth, make_loader, prepare
from alexnet.data import loader as loader_mod
from alexnet.data.loader import LoaderFailed, prefetch
from alexnet.errors import UserError

PARENT = os.getpid()


@pytest.fixture(scope="module")
def jpg(tmp_path_factory):
    """80 px JPEG shards (not small images: the JPEG path), 4 classes x 6 training images: 80 px batches."""
    root = tmp_path_factory.mktemp("handover")
    generate_synth(root / "raw", classes=4, train_per_class=6, val_per_class=0, size=80, progress=False)
    prepare(root / "raw", root / "prep", size=80, workers=1, progress=False)
    return root / "prep"


def tiled(prep, out, factor: int):
    """A copy of a prepared folder whose train split lists every sample ``factor`` times (shards linked, not
    copied): many batches from few images."""
    out.mkdir()
    for f in prep.iterdir():
        if f.name.endswith(".tar") or f.name == "stats.npz":
            os.link(f, out / f.name)  # a hard link: symbolic links out of a prepared folder are refused
    index = np.load(prep / "train.index.npy")
    np.save(out / "train.index.npy", np.tile(index, (factor, 1)))
    meta = json.loads((prep / "meta.json").read_text())
    meta["splits"] = {"train": len(index) * factor}
    meta["shards"] = {"train": meta["shards"]["train"]}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------ the decoder probe
def test_probe_decodes_where_it_works_and_falls_back_once_where_it_does_not(jpg, monkeypatch):
    """decode="probe" (data.decode: auto on CUDA): the first batch is decoded on the device; if that works the main
    process decodes (here the CPU, device=None), if not (no nvJPEG, or the first batch fails) the workers decode,
    after ONE warning for the process; the batches are the workers' either way."""
    monkeypatch.setattr(loader_mod, "_PROBED", {})
    plain = batches(make_loader(jpg, "train", 4, seed=2, num_workers=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the probe succeeds
        ok = make_loader(jpg, "train", 4, seed=2, num_workers=0, decode="probe")
        assert_same(plain, batches(ok))
    assert ok.decode == "main" and "in this process" in ok.decoder

    # the device check fails (a torchvision without nvJPEG): the workers decode, one warning for the process
    monkeypatch.setattr(loader_mod, "_PROBED", {})
    monkeypatch.setattr(loader_mod, "device_decode_problem", lambda device: "RuntimeError: not compiled with nvJPEG")
    with pytest.warns(RuntimeWarning, match="not compiled with nvJPEG.*decoding on the CPU in the loader processes"):
        first = make_loader(jpg, "train", 4, seed=2, num_workers=2, decode="probe")
        assert_same(plain, batches(first))
    assert first.decode == "workers" and "worker processes" in first.decoder
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second loader of the process (validation) does not warn again
        again = make_loader(jpg, "train", 4, seed=2, num_workers=0, decode="probe")
        assert_same(plain, batches(again))
    assert again.decode == "workers"
    first.close()
    # data.decode: cuda asked for explicitly on a device that cannot decode: one line, no fallback
    with pytest.raises(UserError, match=r"data.decode: cuda: JPEG decoding on .* fails here \(RuntimeError: not "
                                        r"compiled with nvJPEG\); data.decode=cpu"):
        next(iter(make_loader(jpg, "train", 4, num_workers=0, decode="main")))


def test_probe_falls_back_when_the_first_batch_fails(jpg, monkeypatch):
    """The device check passes but decoding the first batch there raises (a JPEG the GPU decoder refuses)."""
    monkeypatch.setattr(loader_mod, "_PROBED", {})
    real = loader_mod.decode_jpegs

    def decode(data, channels=3, device=None):
        if os.getpid() == PARENT:  # the probe, in this process; the forked workers decode for real
            raise RuntimeError("Error while decoding JPEG images: nvjpeg status 6")
        return real(data, channels, device)

    monkeypatch.setattr(loader_mod, "decode_jpegs", decode)
    with pytest.warns(RuntimeWarning, match="failed on the first batch .*nvjpeg status 6"):
        loader = make_loader(jpg, "train", 4, seed=2, num_workers=1, decode="probe")
        got = batches(loader)
    assert loader.decode == "workers" and len(got) == len(loader)
    loader.close()


# ------------------------------------------------------------------ a hung or dead worker
def _stall_after_first(self, ids, shared=False, _real=loader_mod._Batches.read):
    """``_Batches.read`` that hangs in a worker process from its second batch on (the first passes)."""
    if os.getpid() != PARENT:
        calls = getattr(self, "_calls", 0)
        self._calls = calls + 1
        if calls >= 1:
            time.sleep(120)
    return _real(self, ids, shared)


def _die(self, ids, shared=False):
    if os.getpid() != PARENT:
        os._exit(3)
    raise AssertionError("not in a worker")


@pytest.mark.parametrize("decode", [pytest.param("workers", marks=pytest.mark.slow), "main"])  # 10 s each
def test_a_hung_worker_is_a_clear_error_not_a_hang(jpg, monkeypatch, decode):
    """A worker that stops answering: the loader raises LoaderFailed (a UserError: one line from the CLI) after its
    timeout, whether the workers decode or only read bytes, through the prefetch thread that feeds a GPU (run here
    on the CPU); the loader then shuts its workers down."""
    monkeypatch.setattr(loader_mod._Batches, "read", _stall_after_first)
    loader = make_loader(jpg, "train", 4, seed=2, num_workers=1, decode=decode, timeout=2)
    loader._background = True  # the GPU feeding thread, on the CPU
    got = []
    t0 = time.monotonic()
    with pytest.raises(LoaderFailed, match="hung") as e:
        for x, _ in loader:
            got.append(x)
    assert len(got) >= 1 and time.monotonic() - t0 < 30
    assert "\n" not in str(e.value) and isinstance(e.value, UserError)
    assert loader._loader is None  # the workers were shut down
    for _ in range(100):  # the thread was waiting on the hung worker: it ends once the workers' queue is closed
        if not [t for t in threading.enumerate() if t.name == "alexnet-prefetch"]:
            break
        time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "alexnet-prefetch"]


def test_a_dead_worker_is_a_clear_error(jpg, monkeypatch):
    """A worker that exits: the DataLoader's own check notices within seconds (long before the timeout)."""
    monkeypatch.setattr(loader_mod._Batches, "read", _die)
    loader = make_loader(jpg, "train", 4, seed=2, num_workers=1, decode="main", timeout=60)
    loader._background = True
    with pytest.raises(LoaderFailed, match="died"):
        next(iter(loader))
    loader.close()


def test_prefetch_gives_up_on_a_source_that_hangs():
    """prefetch's own timeout: the consumer stops waiting and the thread, stuck in the source, is not waited for
    longer than the timeout."""
    release = threading.Event()

    def source():
        yield 1
        release.wait(60)  # a batch that never comes
        yield 2

    t0 = time.monotonic()
    got = []
    with pytest.raises(LoaderFailed, match=r"no batch from the loader for 0.5 s"):
        for v in prefetch(source(), lambda i: i, None, background=True, timeout=0.5):
            got.append(v)
    assert got == [1] and time.monotonic() - t0 < 5
    release.set()


# ------------------------------------------------------------------ 512 images under ulimit -n 1024
ULIMIT_CHILD = """
import resource, sys
import torch
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
from alexnet.data import make_loader
from alexnet.data.loader import unpack
prep, decode = sys.argv[1], sys.argv[2]
loader = make_loader(prep, "train", 520, seed=1, num_workers=2, decode=decode, timeout=120)
loader._background = decode == "main"
n = 0
for epoch in range(2):
    loader.set_epoch(epoch)
    for x, y in loader:
        assert x.shape == (520, 3, 80, 80) and x.dtype == torch.float32
        n += 1
loader.close()
print("batches", n, "limit", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize("decode", ["main", "workers"])
def test_a_batch_of_520_runs_under_ulimit_n_1024(jpg, tmp_path, decode):
    """Two workers, two batches in flight each, 520 JPEGs per batch: with one shared tensor per image (as before
    packing) that is over 2,000 descriptors in flight and the workers fail with "Too many open files"; packed, a
    batch is four tensors. Runs in a child process whose open-file limit is 1024."""
    prep = tiled(jpg, tmp_path / "tiled", 87)  # 24 images x 87 = 2088 samples: 4 batches of 520 per epoch
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(ULIMIT_CHILD), str(prep), decode],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "batches 8 limit 1024" in run.stdout
    shutil.rmtree(tmp_path / "tiled")


# ------------------------------------------------------------------ CUDA: a batch never changes after hand-over
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_do_not_change_after_hand_over(jpg, tmp_path):
    """nvJPEG decodes batch k + 1 on its own stream while batch k's augmentation may still be queued; without the
    wait in shards.decode_jpegs, memory batch k's kernels still read can be reused for batch k + 1's pixels. Each
    batch is copied the moment it is handed over and compared with the same tensor after the whole epoch (the
    GPU kept busy meanwhile, so that queued work lags behind), and with the CPU decode within decoder rounding."""
    prep = tiled(jpg, tmp_path / "tiled", 20)
    device = torch.device("cuda", torch.cuda.current_device())
    gpu = make_loader(prep, "train", 32, seed=5, num_workers=2, device=device, decode="main")
    cpu = make_loader(prep, "train", 32, seed=5, num_workers=0)
    busy = torch.randn(2048, 2048, device=device)
    kept, snapshots = [], []
    for x, y in gpu:
        for _ in range(4):  # the consumer's stream lags: freed blocks wait longer for their readers
            busy = (busy @ busy).tanh_()
        snapshots.append(x.clone())
        kept.append((x, y))
    torch.cuda.synchronize(device)
    assert len(kept) == len(gpu)
    for (x, y), snap, (xc, yc) in zip(kept, snapshots, batches(cpu)):
        assert torch.equal(x, snap)  # not overwritten after it was handed over
        assert torch.equal(y.cpu(), yc)
        assert (x.cpu() - xc).abs().mean() < 2  # and it is this batch's pixels, not another's
    gpu.close()
