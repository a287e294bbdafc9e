"""The loader: deterministic for (seed, epoch) whatever the workers, DDP-disjoint, eval exactly once, resumable."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from alexnet.data import generate_synth, make_loader, prepare, read_meta
from alexnet.data.loader import rank_order, sample_uniforms
from alexnet.data.shards import decode_jpegs, shuffled_order
from alexnet.data.transforms import TrainTransform
from alexnet.data import load_stats
from alexnet.errors import UserError

N = 31  # odd, and prime: no world size divides it
IDENTITY = {"mean": [0.0], "std": [1 / 255]}  # (x/255 - 0) / (1/255) = x: the stored pixel values


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """A prepared IDX set whose sample i (row i of the index) is the constant image i (any crop, flip or
    padding of it reads i): the source image that prepare's shuffled order writes at i holds i."""
    src = tmp_path_factory.mktemp("idx")
    for prefix, split in (("train", "train"), ("t10k", "val")):
        value = np.empty(N, np.uint8)
        value[shuffled_order(N, split)] = np.arange(N)
        images = np.repeat(value, 8 * 8).reshape(N, 8, 8)
        hdr = bytes([0, 0, 8, 3]) + struct.pack(">3I", N, 8, 8)
        (src / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(hdr + images.tobytes()))
        lab = bytes([0, 0, 8, 1]) + struct.pack(">I", N) + (np.arange(N) % 3).astype(np.uint8).tobytes()
        (src / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab))
    out = src / "prepared"
    prepare(src, out, workers=1, progress=False)
    return out


def prepared_synth(tmp_path_factory, **synth):
    root = tmp_path_factory.mktemp(f"synth{synth['size']}")
    generate_synth(root / "raw", progress=False, **synth)
    prepare(root / "raw", root / "prepared", workers=1, progress=False)
    return root / "prepared"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return prepared_synth(tmp_path_factory, classes=4, train_per_class=12, val_per_class=3, size=32)


@pytest.fixture(scope="module")
def jpg(tmp_path_factory):
    return prepared_synth(tmp_path_factory, classes=2, train_per_class=5, val_per_class=2, size=256)


def ids_of(loader) -> list[list[int]]:
    """The sample ids of each batch, read back from the constant images."""
    return [x[:, 0, 0, 0].round().long().tolist() for x, _ in loader]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_visits_every_sample_exactly_once(numbered, world):
    seen, counts = [], []
    for rank in range(world):
        loader = make_loader(numbered, "val", 4, train=False, rank=rank, world_size=world, num_workers=0,
                             normalize=IDENTITY)
        batches = ids_of(loader)
        assert len(batches) == len(loader) and sum(map(len, batches)) == loader.num_samples
        flat = [i for b in batches for i in b]
        assert flat == loader.indices().tolist() == sorted(flat)  # stored order, no shuffling
        seen += flat
        counts.append(len(flat))
    assert sorted(seen) == list(range(N))  # complete, no padding duplicates
    assert max(counts) - min(counts) <= 1


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("drop_last", [True, False])
def test_train_ranks_are_disjoint_with_equal_batch_counts(numbered, world, drop_last):
    per_rank = {}
    for rank in range(world):
        loader = make_loader(numbered, "train", 2, train=True, rank=rank, world_size=world, num_workers=0,
                             lighting=0.0, normalize=IDENTITY, drop_last=drop_last)
        batches = ids_of(loader)
        per_rank[rank] = [i for b in batches for i in b]
        assert len(batches) == len(loader) == (N // world) // 2 + (0 if drop_last else (N // world) % 2)
        assert per_rank[rank] == loader.indices().tolist()
    lengths = {len(v) for v in per_rank.values()}
    assert len(lengths) == 1  # same number of samples, so the same number of steps on every rank
    everything = [i for v in per_rank.values() for i in v]
    assert len(set(everything)) == len(everything)  # disjoint
    if not drop_last:
        assert len(everything) == world * (N // world)  # only the N % W left over sit out
    # the sitting-out samples change with the epoch
    left_out = [set(range(N)) - set(np.concatenate([rank_order(N, True, 0, e, r, world, 2) for r in range(world)]).tolist())
                for e in range(6)]
    assert all(len(s) == N % world for s in left_out) and len({frozenset(s) for s in left_out}) > 1


def test_training_order_is_a_permutation_per_epoch(numbered):
    loader = make_loader(numbered, "train", 31, train=True, num_workers=0, lighting=0.0, normalize=IDENTITY)
    first = ids_of(loader)[0]
    assert sorted(first) == list(range(N)) and first != list(range(N))
    loader.set_epoch(1)
    second = ids_of(loader)[0]
    assert sorted(second) == list(range(N)) and second != first
    loader.set_epoch(0)
    assert ids_of(loader)[0] == first


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_deterministic_for_seed_and_epoch_whatever_the_workers(small):
    a = batches(make_loader(small, "train", 8, train=True, seed=3, epoch=2, num_workers=0))
    b = batches(make_loader(small, "train", 8, train=True, seed=3, epoch=2, num_workers=2))
    assert len(a) == len(b) == 6
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = batches(make_loader(small, "train", 8, train=True, seed=3, epoch=3, num_workers=0))
    assert not torch.equal(a[0][0], c[0][0])
    d = batches(make_loader(small, "train", 8, train=True, seed=4, epoch=2, num_workers=0))
    assert not torch.equal(a[0][0], d[0][0])


def test_set_epoch_start_batch_continues_an_interrupted_epoch(small):
    loader = make_loader(small, "train", 8, train=True, seed=1, num_workers=2)
    loader.set_epoch(5)
    full = batches(loader)
    loader.set_epoch(5, start_batch=4)
    rest = batches(loader)
    assert len(rest) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    loader.set_epoch(6)  # the persistent workers follow the epoch
    assert len(batches(loader)) == len(loader)


def test_small_data_defaults(small):
    meta = read_meta(small)
    assert meta["size"] == 32 and meta["format"] == "raw" and meta["classes"] == sorted(meta["classes"])
    train = make_loader(small, "train", 10, train=True, num_workers=0)
    x, y = next(iter(train))
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert train.input_size == 32 and len(train) == 4 and train.num_samples == 40 and train.classes == meta["classes"]
    ten = make_loader(small, "val", 5, train=False, tta="10crop", num_workers=0)
    x, y = next(iter(ten))
    assert x.shape == (5, 10, 3, 32, 32) and len(ten) == 3 and ten.num_samples == 12


def test_jpeg_loader_matches_the_documented_pipeline(jpg):
    loader = make_loader(jpg, "train", 4, train=True, seed=9, epoch=1, num_workers=0)
    assert loader.input_size == 224 and len(loader) == 2
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 224, 224)
    # by hand: the epoch's permutation, the JPEGs decoded, batch 0's draws, the small transforms composed
    meta, stats = read_meta(jpg), load_stats(jpg)
    index = np.load(jpg / "train.index.npy")
    ids = rank_order(len(index), True, 9, 1, 0, 1, 4)[:4]
    data = []
    for s, o, n, _ in index[ids]:
        raw = (jpg / meta["shards"]["train"][s]).read_bytes()[o:o + n]
        data.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    images = torch.stack(decode_jpegs(data))
    t = TrainTransform(224, stats, lighting=0.1)
    params = t.sample(4, 256, 256, uniforms=sample_uniforms(9, 1, ids, t.uniforms_needed(3)))
    torch.testing.assert_close(x, t.reference(images, params), atol=255 * 2e-6, rtol=0)  # pixel units
    assert y.tolist() == index[ids, 3].tolist()
    ten = make_loader(jpg, "val", 3, train=False, tta="10crop", num_workers=0)
    x, _ = next(iter(ten))
    assert x.shape == (3, 10, 3, 224, 224) and len(ten) == 2


def test_bad_requests_are_user_errors(small, tmp_path):
    with pytest.raises(UserError, match="no split"):
        make_loader(small, "test", 4)
    with pytest.raises(UserError, match="does not fit"):
        make_loader(small, "train", 4, input_size=40)
    with pytest.raises(UserError, match="fewer than one batch"):
        make_loader(small, "train", 1000)
    with pytest.raises(UserError, match="not a prepared"):
        make_loader(tmp_path, "train", 4)
    with pytest.raises(UserError, match="rank"):
        make_loader(small, "train", 4, rank=2, world_size=2)


def test_a_samples_augmentation_depends_on_the_sample_alone(small):
    """(seed, epoch, sample id) fix the crop, flip and lighting: batch size and ranks do not matter."""
    whole = make_loader(small, "train", 48, train=True, seed=5, epoch=2, num_workers=0)
    x, _ = next(iter(whole))
    by_id = dict(zip(whole.indices().tolist(), x))
    for world, b in ((1, 8), (2, 4), (3, 5)):
        for rank in range(world):
            loader = make_loader(small, "train", b, train=True, seed=5, epoch=2, rank=rank, world_size=world, num_workers=0)
            ids = loader.indices().tolist()
            got = torch.cat([xb for xb, _ in loader])
            for i, img in zip(ids, got):
                torch.testing.assert_close(img, by_id[i], atol=1e-6, rtol=0)
    u = sample_uniforms(5, 2, np.arange(20000), 3)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float(torch.corrcoef(u.T)[0, 1])) < 0.03  # the streams of a sample are independent


def test_iterating_leaves_the_global_rng_alone(small):
    """A resumed run restores torch's RNG for dropout: starting an epoch must not draw from it."""
    for workers in (0, 2):
        loader = make_loader(small, "train", 8, train=True, num_workers=workers)
        torch.manual_seed(123)
        next(iter(loader))
        after = torch.rand(3)
        torch.manual_seed(123)
        assert torch.equal(after, torch.rand(3))
        loader.close()


@pytest.mark.parametrize("kind", ["array", "jpg"])
def test_reading_keeps_few_files_open_and_maps_nothing(kind, small, jpg, tmp_path, monkeypatch):
    """Samples are read with pread from a bounded set of open shard files, never memory-mapped: a map's pages
    stayed in the reader's resident set, which grew by every byte read (1.2 GB over 40,000 images)."""
    import alexnet.data.loader as loader_mod

    src = (small if kind == "array" else jpg).parent / "raw"
    out = tmp_path / "many-shards"
    prepare(src, out, workers=1, progress=False, shard_size=3)
    assert len(read_meta(out)["shards"]["train"]) >= 3
    want = [x for x, _ in make_loader(out, "train", 4, train=False, num_workers=0)]
    monkeypatch.setattr(loader_mod, "OPEN_SHARDS", 2)
    ld = make_loader(out, "train", 4, train=False, num_workers=0)
    got = [x for x, _ in ld]
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and len(got) == len(want)
    reader = ld._batches
    assert 0 < len(reader._files) <= 2
    held = [m for v in vars(reader).values() for m in (v.values() if isinstance(v, dict) else [v])]
    assert not any(isinstance(m, np.memmap) for m in held)
