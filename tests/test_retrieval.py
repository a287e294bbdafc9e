"""Retrieval indexes: binary codes (PCA + ITQ + Hamming, re-ranked exactly) and the optional faiss index."""

import json
import sys

import numpy as np
import pytest

from alexnet.cli.main import main as cli
from alexnet.errors import UserError
from alexnet.features import index as index_mod
from alexnet.features.index import (build_index, check_queries, check_source, hamming_distances, hamming_topk,
                                    load_index, pack_codes, require_faiss, save_index, unpack_codes)
from alexnet.features.knn import knn_search
from alexnet.features.store import FeatureWriter, read_features


def _clustered(n=2000, d=64, q=60, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)) * 4
    x = (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d))).astype(np.float32)
    qs = (centres[rng.integers(0, clusters, q)] + rng.normal(size=(q, d))).astype(np.float32)
    return x, qs


def _write_set(path, x, meta=None):
    with FeatureWriter(path, len(x), "float16") as w:
        w.add(x, np.zeros(len(x), np.int64))
        return w.finish(np.arange(len(x)), {"layer": "fc7", "split": "train", "class_names": [], **(meta or {})})


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(1)
    for bits in (8, 64, 256, 72):
        b = rng.random((37, bits)) < 0.5
        codes = pack_codes(b)
        assert codes.dtype == np.uint8 and codes.shape == (37, bits // 8)
        np.testing.assert_array_equal(unpack_codes(codes, bits), b)


@pytest.mark.parametrize("width", [32, 9])  # uint64 words, and bytes when the width is not a multiple of 8
def test_hamming_matches_naive(width, monkeypatch):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (13, width), dtype=np.uint8)
    b = rng.integers(0, 256, (101, width), dtype=np.uint8)
    naive = (unpack_codes(a, width * 8)[:, None, :] != unpack_codes(b, width * 8)[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming_distances(a, b), naive)
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # the lookup-table path of numpy < 2.0
    np.testing.assert_array_equal(hamming_distances(a, b), naive)
    # top-r: the r smallest distances, ties to the lower id
    top = hamming_topk(a, b, 10, query_batch=4, code_batch=30)
    key = naive * len(b) + np.arange(len(b))
    np.testing.assert_array_equal(np.sort(top, 1), np.sort(np.argsort(key, 1, kind="stable")[:, :10], 1))


def test_hamming_kernel_picks_the_numpy_set(monkeypatch):
    """The C kernel and the numpy form pick the same ids: many tied distances, excluded ids, r near N."""
    import shutil

    from alexnet.kernels import hamming

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (3000, 16), dtype=np.uint8)
    codes[::5] = codes[0]  # 600 codes at one distance from every query: the cut falls among ties
    queries = rng.integers(0, 256, (9, 16), dtype=np.uint8)
    queries[2] = codes[0]
    exclude = np.array([-1, 0, 5, 2999, -1, 10, 0, 1, 3])
    if shutil.which("cc") or shutil.which("gcc"):
        assert hamming.get() is not None, "the kernel should build where a C compiler is"
    for r in (1, 10, 700, 2999):
        for ex in (None, exclude):
            got = hamming_topk(queries, codes, r, exclude=ex)
            want = hamming_topk(queries, codes, r, exclude=ex, kernel=False)
            np.testing.assert_array_equal(np.sort(got, 1), np.sort(want, 1))
    # where it cannot be built: one warning, and numpy answers
    monkeypatch.setattr(hamming, "_state", {})
    monkeypatch.setattr(hamming, "_build", lambda: (_ for _ in ()).throw(RuntimeError("no C compiler")))
    with pytest.warns(RuntimeWarning, match="Hamming kernel unavailable"):
        got = hamming_topk(queries, codes, 10)
    np.testing.assert_array_equal(np.sort(got, 1), np.sort(hamming_topk(queries, codes, 10, kernel=False), 1))


def test_binary_search_equals_exact_after_reranking():
    x, q = _clustered()
    idx = build_index(x, "binary", bits=64, itq=20)
    assert idx.codes.shape == (2000, 8) and idx.info["itq"] == 20
    d0, i0 = knn_search(q, x, 10)
    d1, i1 = idx.search(q, x, 10, candidates=400)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-6)
    # leave-one-out, as --evaluate train does
    d0, i0 = knn_search(x[:50], x, 5, exclude=np.arange(50))
    d1, i1 = idx.search(x[:50], x, 5, candidates=400, exclude=np.arange(50))
    np.testing.assert_array_equal(i1, i0)
    # fewer candidates: still k answers, sorted, with exact distances
    d2, i2 = idx.search(q, x, 10, candidates=20)
    assert i2.shape == (60, 10) and (np.diff(d2, axis=1) >= 0).all()
    np.testing.assert_allclose(d2, np.linalg.norm(x[i2] - q[:, None], axis=-1), rtol=1e-5)


def test_itq_rotation_is_orthogonal_and_helps():
    x, _ = _clustered(n=3000, d=48)
    v = (x - x.mean(0)) @ index_mod.fit_pca(x, 16)[1]
    r = index_mod.itq_rotation(v, 30)
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-10)
    loss = lambda m: float(((np.where(v @ m >= 0, 1.0, -1.0) - v @ m) ** 2).sum())  # noqa: E731
    assert loss(r) < loss(np.eye(16))


def test_index_file_round_trip_and_identity(tmp_path):
    x, q = _clustered(n=500, d=32, q=10)
    fs = _write_set(tmp_path / "train.npy", x, {"checkpoint": "run/best.ckpt"})
    idx = build_index(fs, "binary", bits=32, itq=5)
    path = save_index(idx, tmp_path / "train.binary.npz")
    with np.load(path, allow_pickle=False) as z:  # loads without pickle
        assert set(z.files) == {"mean", "projection", "codes", "info"}
    back = load_index(path)
    assert back.source["path"] == str((tmp_path / "train.npy").resolve()) and back.source["dim"] == 32
    assert back.source["checkpoint"] == "run/best.ckpt"
    np.testing.assert_array_equal(back.codes, idx.codes)
    check_source(back, fs)
    np.testing.assert_array_equal(back.search(q, fs.features, 5)[1], idx.search(q, fs.features, 5)[1])
    # queries of another dimension, another model, another feature set: one-line errors
    with pytest.raises(UserError, match="16 dimensions"):
        back.search(q[:, :16], fs.features, 5)
    with pytest.raises(UserError, match="checkpoint"):
        check_queries(back, q, {"checkpoint": "other.ckpt"})
    other = _write_set(tmp_path / "other.npy", x[:400])
    with pytest.raises(UserError, match="other features") as e:
        check_source(back, other)
    assert "\n" not in str(e.value)
    # not an index
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read index"):
        load_index(tmp_path / "junk.npz")


def test_faiss_missing_is_a_clean_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(UserError, match=r"pip install alexnet\[retrieval\]"):
        require_faiss()
    with pytest.raises(UserError, match="faiss-cpu"):
        build_index(np.zeros((10, 8), np.float32), "faiss")
    # the CLI: exit 2 and one line, before any checkpoint or data is read
    assert cli(["neighbors", str(tmp_path / "none.ckpt"), "--data", str(tmp_path), "--query", "x.jpg",
                "--search", "faiss"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install alexnet[retrieval]" in err


def test_faiss_index_when_installed(tmp_path):
    pytest.importorskip("faiss")
    x, q = _clustered(n=3000, d=64)
    idx = build_index(x, "faiss", bits=32, nlist=16, nprobe=16)
    d0, i0 = knn_search(q, x, 10)
    d1, i1 = idx.search(q, x, 10, candidates=500)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i0, i1)]) >= 0.95
    back = load_index(save_index(idx, tmp_path / "f.npz"))
    np.testing.assert_array_equal(back.search(q, x, 10, candidates=500)[1], i1)


def test_cli_features_index_and_neighbors_search(trained, tmp_path, capsys):
    ck, prep = str(trained["ckpt"]), str(trained["prep"])
    out = tmp_path / "train.npy"
    assert cli(["features", ck, "--data", prep, "--split", "train", "--out", str(out), "--index", "binary",
                "--bits", "64", "--no-progress", "--workers", "0", "--device", "cpu"]) == 0
    assert (tmp_path / "train.binary.npz").is_file() and "binary index" in capsys.readouterr().out
    query = tmp_path / "q.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(query)
    base = ["neighbors", ck, "--data", prep, "--query", str(query), "-k", "4", "--json", "--no-progress",
            "--workers", "0", "--device", "cpu"]
    assert cli(base) == 0
    exact = json.loads(capsys.readouterr().out)
    for extra in (["--search", "binary"], ["--search", "binary", "--index", str(tmp_path / "train.binary.npz")]):
        assert cli(base + extra) == 0
        res = json.loads(capsys.readouterr().out)
        assert res[0]["search"] == "binary"
        assert [n["id"] for n in res[0]["neighbors"]] == [n["id"] for n in exact[0]["neighbors"]]
    # an index of features from another checkpoint is refused in one line
    info = json.loads((tmp_path / "train.json").read_text())
    info["checkpoint"] = str(tmp_path / "other.ckpt")
    other = tmp_path / "other.npy"
    fs = read_features(out)
    with FeatureWriter(other, fs.count, "float32") as w:
        w.add(np.asarray(fs.features), fs.labels)
        w.finish(fs.ids, info)
    save_index(build_index(read_features(other), "binary", bits=64), tmp_path / "other.binary.npz")
    assert cli(base + ["--search", "binary", "--index", str(tmp_path / "other.binary.npz")]) == 2
    assert "other.ckpt" in capsys.readouterr().err
