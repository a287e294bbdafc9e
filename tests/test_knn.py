"""Exact kNN search against a brute-force numpy computation; kNN scoring."""

import numpy as np
import pytest
import torch

from alexnet.features.knn import knn_classify, knn_scores, knn_search


def brute_force(q, x, k, exclude=None):
    """Every distance in float64, sorted by (distance, id) with a stable sort."""
    d = np.sqrt(((q[:, None, :].astype(np.float64) - x[None, :, :].astype(np.float64)) ** 2).sum(-1))
    if exclude is not None:
        d[np.arange(len(q)), exclude] = np.inf
    order = np.argsort(d, axis=1, kind="stable")
    kk = min(k, x.shape[0] - (exclude is not None))
    return np.take_along_axis(d, order, 1)[:, :kk], order[:, :kk]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((700, 48)).astype(np.float32)
    q = rng.standard_normal((130, 48)).astype(np.float32)
    # small blocks so the merge across index blocks and query blocks is exercised
    d, i = knn_search(q, x, 9, index_batch=100, query_batch=32)
    bd, bi = brute_force(q, x, 9)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, rtol=1e-6, atol=1e-6)
    assert d.dtype == np.float32 and i.dtype == np.int64


@pytest.mark.parametrize("k", [1, 4, 37, 299, 300, 1000])
def test_ties_and_k_beyond_n(k):
    """Small-integer vectors: many exact duplicates and equal distances; ties go to the lower id."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (300, 6)).astype(np.float32)
    q = rng.integers(0, 3, (50, 6)).astype(np.float32)
    # margin=0 leaves no slack: the tie handling alone must keep the lowest ids
    d, i = knn_search(q, x, k, index_batch=64, query_batch=16, margin=0)
    bd, bi = brute_force(q, x, k)
    assert i.shape == (50, min(k, 300))
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(d, bd.astype(np.float32))
    # there really were ties, and (for k < N) across the k-th place, where a
    # search that broke them arbitrarily would return other ids
    full, _ = brute_force(q, x, 300)
    assert (np.diff(full, axis=1) == 0).any()
    if k < 300:
        assert (full[:, k - 1] == full[:, k]).any()


def test_indexed_vector_is_its_own_nearest_neighbour():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 64)).astype(np.float32) * 30 + 100  # large norms: cancellation in |x|^2 - 2q.x
    d, i = knn_search(x, x, 3, index_batch=128)
    np.testing.assert_array_equal(i[:, 0], np.arange(500))
    assert (d[:, 0] == 0).all()


def test_exclude_is_leave_one_out():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, (120, 5)).astype(np.float32)
    d, i = knn_search(x, x, 8, exclude=np.arange(120), index_batch=50, margin=0)
    bd, bi = brute_force(x, x, 8, exclude=np.arange(120))
    np.testing.assert_array_equal(i, bi)
    assert not (i == np.arange(120)[:, None]).any()
    d, i = knn_search(x[:3], x[:4], 10, exclude=np.array([0, 1, 2]))
    assert i.shape == (3, 3)


def test_inputs_memmap_float16_and_tensor(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((400, 32)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    q = rng.standard_normal((20, 32)).astype(np.float32)
    bd, bi = brute_force(q, x.astype(np.float32), 5)
    for index in (xm, torch.from_numpy(x.astype(np.float32))):
        d, i = knn_search(q, index, 5, index_batch=90)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_allclose(d, bd, rtol=1e-5)


def test_never_materialises_n_by_n(monkeypatch):
    """The largest distance block is query_batch x index_batch, whatever N."""
    import alexnet.features.knn as knn

    shapes = []
    real = torch.addmm

    def spy(*a, **kw):
        out = real(*a, **kw)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(knn.torch, "addmm", spy)
    x = np.random.default_rng(7).standard_normal((1000, 8)).astype(np.float32)
    knn_search(x, x, 2, index_batch=100, query_batch=64)
    assert shapes and max(a * b for a, b in shapes) <= 64 * 100


def test_bad_arguments():
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError):
        knn_search(x, np.zeros((5, 4), np.float32), 1)
    with pytest.raises(ValueError):
        knn_search(x, x, 0)
    d, i = knn_search(x[:0], x, 3)
    assert d.shape == (0, 3)


def test_knn_vote_and_scores():
    nl = np.array([[2, 1, 1, 0], [0, 1, 2, 3], [3, 3, 1, 1]])
    # majority; a tie between classes goes to the one ranked first
    np.testing.assert_array_equal(knn_classify(nl, 4), [1, 0, 3])
    s = knn_scores(np.array([1, 1, 3]), nl, 4)
    assert s["knn_acc"] == pytest.approx(2 / 3)
    assert s["nn1_acc"] == pytest.approx(1 / 3)
    assert s["precision_at_k"] == pytest.approx((2 + 1 + 2) / 12)


def _benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "knn_faiss.py"
    spec = importlib.util.spec_from_file_location("knn_faiss_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_faiss_benchmark_skips_cleanly_without_faiss(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert _benchmark().main(["--n", "100", "--d", "8", "--q", "5"]) == 0
    assert "faiss-cpu is not installed" in capsys.readouterr().err


def test_faiss_agrees_when_installed(capsys):
    pytest.importorskip("faiss")
    assert _benchmark().main(["--n", "600", "--d", "16", "--q", "40", "--repeat", "1", "--json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["same_neighbour_sets"] == 1.0 and r["ours_equal_float64_brute_force"] == 1.0
