"""Approximate nearest-neighbour search over large feature sets: short binary codes, or faiss.

The paper (Section 6.1) suggests compressing fc7 to short binary codes so
that retrieval scales to the whole training set. :func:`build_index` does:

1. PCA to ``bits`` dimensions (256 by default), fitted in float64 on a sample
   of rows (50,000 by default) by an eigen-decomposition of their covariance;
2. optionally ITQ (iterative quantisation, Gong & Lazebnik 2011): an
   orthogonal rotation of the PCA space that makes its signs lose less,
   found by alternating ``B = sign(V R)`` and an orthogonal Procrustes step;
3. the sign of each rotated coordinate, packed to ``bits / 8`` bytes per
   vector (32 bytes for 256 bits: 41 MB for 1.28M images).

:meth:`RetrievalIndex.search` ranks every code by Hamming distance to the
query's (XOR, then popcount: ``np.bitwise_count`` or a 256-entry table),
keeps the ``candidates`` nearest (``R``) and re-ranks them by the exact
Euclidean distance of the original rows, read from the (memory-mapped)
feature file: the answer has exact distances and is exact whenever the true
neighbours are among the R candidates.

``kind="faiss"`` keeps the same PCA projection but stores the projected
vectors in a faiss IVF-PQ index (needs ``pip install alexnet[retrieval]``,
i.e. ``faiss-cpu``) whose candidates are re-ranked the same way.

An index is one ``.npz`` file (no pickle), written atomically: the arrays and
``info``, a JSON description that names the feature set it was built from
(its path, size, mtime, shape, dtype, layer and checkpoint). Searching it
with vectors of another dimension, or against another feature set, or
from another model, is refused in one line (:func:`check_source`,
:func:`check_queries`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_write

__all__ = [
    "FAISS_HINT",
    "RetrievalIndex",
    "build_index",
    "check_queries",
    "check_source",
    "feature_identity",
    "fit_pca",
    "hamming_distances",
    "hamming_topk",
    "index_path_for",
    "itq_rotation",
    "load_index",
    "pack_codes",
    "require_faiss",
    "save_index",
    "unpack_codes",
]

FORMAT = "alexnet-retrieval-index"
VERSION = 1
KINDS = ("binary", "faiss")
FAISS_HINT = "pip install alexnet[retrieval] (or pip install faiss-cpu)"


def require_faiss():
    """The faiss module, or a one-line :class:`UserError` naming the package to install."""
    try:
        import faiss
    except ImportError:
        raise UserError(f"--search faiss needs faiss, which is not installed: {FAISS_HINT}") from None
    return faiss


# ------------------------------------------------------------------ codes
_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def pack_codes(bits: np.ndarray) -> np.ndarray:
    """``N x B`` booleans (or 0/1) to ``N x ceil(B/8)`` uint8, first bit the most significant."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def unpack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_codes`: ``N x bits`` booleans."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, count=bits).astype(bool)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _POP8[x.view(np.uint8)].reshape(*x.shape, x.dtype.itemsize).sum(-1, dtype=np.uint16)


def _words(codes: np.ndarray) -> np.ndarray:
    """Codes as uint64 words when their width allows (8 bytes at a time), else uint8."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.shape[-1] % 8 == 0:
        return codes.view(np.uint64)
    return codes


def hamming_distances(qcodes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``Q x N`` Hamming distances (uint16) between packed codes ``qcodes`` (Q x W) and ``codes`` (N x W)."""
    q, c = _words(qcodes), _words(codes)
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"codes of {qcodes.shape[1]} and {codes.shape[1]} bytes")
    out = np.zeros((q.shape[0], c.shape[0]), np.uint16)
    for j in range(q.shape[1]):  # one word column at a time: no Q x N x W temporary
        out += _popcount(np.bitwise_xor(q[:, j : j + 1], c[None, :, j])).astype(np.uint16, copy=False)
    return out


def hamming_topk(qcodes: np.ndarray, codes: np.ndarray, r: int, *, exclude: np.ndarray | None = None,
                 query_batch: int = 16, code_batch: int = 1 << 20, kernel: bool = True) -> np.ndarray:
    """``Q x min(r, N)`` ids of the codes nearest each query's in Hamming distance (unordered; ties by lower id).

    The C kernel (:mod:`alexnet.kernels.hamming`) answers where it builds and the codes are whole 64-bit
    words; otherwise (or ``kernel=False``) numpy does, with the same set of ids.
    """
    n = codes.shape[0]
    r = min(r, n)
    nq = qcodes.shape[0]
    if kernel and 0 < r < n and codes.shape[1] % 8 == 0 and codes.shape[1] <= 8 * 1023 and nq > 0:
        from ..kernels import hamming

        out = hamming.topk(qcodes, codes, r, exclude, torch.get_num_threads())
        if out is not None:
            return out
    out = np.empty((nq, r), np.int64)
    for s in range(0, nq, query_batch):
        e = min(s + query_batch, nq)
        dist = np.empty((e - s, n), np.uint16)
        for cs in range(0, n, code_batch):
            dist[:, cs : cs + code_batch] = hamming_distances(qcodes[s:e], codes[cs : cs + code_batch])
        if exclude is not None:
            ex = np.asarray(exclude[s:e], dtype=np.int64)
            rows = np.nonzero(ex >= 0)[0]
            dist[rows, ex[rows]] = np.iinfo(np.uint16).max
        if r < n:
            # (distance, id) as one key, so equal distances keep the lower ids, deterministically
            key = dist.astype(np.int64) * n + np.arange(n)
            out[s:e] = np.argpartition(key, r - 1, axis=1)[:, :r]
        else:
            out[s:e] = np.arange(n)
    return out


# ------------------------------------------------------------------ PCA / ITQ
def _sample_rows(features, sample: int, seed: int) -> np.ndarray:
    n = features.shape[0]
    if sample >= n:
        ids = np.arange(n)
    else:
        ids = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    out = np.empty((len(ids), features.shape[1]), np.float64)
    for s in range(0, len(ids), 4096):  # sorted reads from a memory map, a block at a time
        out[s : s + 4096] = np.asarray(features[ids[s : s + 4096]], dtype=np.float64)
    return out


def fit_pca(sample: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (D,), components (D x dims))`` of the rows of ``sample``, in float64, largest variance first."""
    x = torch.from_numpy(np.asarray(sample, dtype=np.float64))
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(1, x.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    comps = evecs[:, torch.argsort(evals, descending=True)[:dims]]
    return mean.numpy(), comps.numpy()


def itq_rotation(v: np.ndarray, iterations: int = 50, seed: int = 0) -> np.ndarray:
    """An orthogonal ``B x B`` rotation ``R`` minimising ``|sign(V R) - V R|^2`` (ITQ), for PCA-projected ``v``."""
    v = torch.from_numpy(np.asarray(v, dtype=np.float64))
    b = v.shape[1]
    g = torch.Generator().manual_seed(seed)
    r, _ = torch.linalg.qr(torch.randn(b, b, generator=g, dtype=torch.float64))
    for _ in range(iterations):
        z = torch.where(v @ r >= 0, 1.0, -1.0).to(torch.float64)
        u, _, vh = torch.linalg.svd(v.T @ z)  # Procrustes: R = argmax tr(R^T V^T B)
        r = u @ vh
    return r.numpy()


# ------------------------------------------------------------------ identity of a feature set
def feature_identity(fs) -> dict[str, Any]:
    """What names a feature set (a :class:`~alexnet.features.store.FeatureSet` or an array)."""
    feats = fs.features if hasattr(fs, "features") else fs
    ident: dict[str, Any] = {"count": int(feats.shape[0]), "dim": int(feats.shape[1]), "dtype": str(feats.dtype)}
    path = getattr(fs, "path", None)
    if path is not None:
        st = Path(path).stat()
        ident.update(path=str(Path(path).resolve()), size=st.st_size, mtime_ns=st.st_mtime_ns)
    meta = getattr(fs, "meta", None) or {}
    for key in ("checkpoint", "data", "split", "layer", "key"):
        if key in meta:
            ident[key] = meta[key]
    return ident


def check_source(index: RetrievalIndex, fs) -> None:
    """Refuse (one line) searching ``index`` against a feature set other than the one it was built from."""
    want, got = index.source, feature_identity(fs)
    name = index.path or "the index"
    for key in ("dim", "count", "dtype", "path", "size", "mtime_ns", "checkpoint", "layer", "key"):
        if key in want and key in got and want[key] != got[key]:
            raise UserError(f"{name} was built from other features ({key} {want[key]!r}, these have {got[key]!r}): "
                            f"rebuild it from {got.get('path', 'these features')}")


def check_queries(index: RetrievalIndex, queries, meta: dict[str, Any] | None = None) -> None:
    """Refuse (one line) queries of another dimension, or (when ``meta`` says) of another model or layer."""
    d = int(queries.shape[1]) if getattr(queries, "ndim", 0) == 2 else -1
    name = index.path or "the index"
    if d != index.dim:
        raise UserError(f"queries have {d} dimensions but {name} was built from {index.dim}-dimensional features")
    for key in ("checkpoint", "layer"):
        if meta and key in meta and key in index.source and meta[key] != index.source[key]:
            raise UserError(f"queries come from {key} {meta[key]!r} but {name} was built from "
                            f"{key} {index.source[key]!r}")


# ------------------------------------------------------------------ the index
@dataclass
class RetrievalIndex:
    """Codes of one feature set, searched approximately and re-ranked exactly against it."""

    kind: str  # "binary" | "faiss"
    mean: np.ndarray  # D, float32
    projection: np.ndarray  # D x B, float32: PCA components (times the ITQ rotation)
    codes: np.ndarray | None = None  # N x B/8 uint8 (binary)
    faiss_index: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def source(self) -> dict[str, Any]:
        return self.info.get("source", {})

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def bits(self) -> int:
        return int(self.projection.shape[1])

    @property
    def count(self) -> int:
        return int(self.codes.shape[0]) if self.codes is not None else int(self.faiss_index.ntotal)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory for the search (codes or the faiss index, plus the projection)."""
        base = self.mean.nbytes + self.projection.nbytes
        if self.codes is not None:
            return base + self.codes.nbytes
        faiss = require_faiss()
        return base + int(faiss.serialize_index(self.faiss_index).nbytes)

    def describe(self, candidates: int) -> str:
        if self.kind == "binary":
            what = f"{self.bits}-bit codes (PCA{'+ITQ' if self.info.get('itq') else ''}), Hamming"
        else:
            what = f"faiss {self.info.get('faiss', 'IVF-PQ')} on PCA-{self.bits}"
        return f"{self.kind}: {what}, {candidates} candidates re-ranked exactly"

    def project(self, x, batch: int = 8192) -> np.ndarray:
        """``N x B`` float32 projections of rows ``x`` (a memory map is read a block at a time)."""
        mean = torch.from_numpy(self.mean)
        proj = torch.from_numpy(self.projection)
        out = np.empty((x.shape[0], self.bits), np.float32)
        for s in range(0, x.shape[0], batch):
            blk = torch.from_numpy(np.array(x[s : s + batch], dtype=np.float32))  # a writable copy
            out[s : s + batch] = ((blk - mean) @ proj).numpy()
        return out

    def encode(self, x) -> np.ndarray:
        """Packed binary codes of rows ``x``."""
        return pack_codes(self.project(x) >= 0)

    def candidates(self, queries, r: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """``Q x R'`` candidate ids for each query (R' <= r)."""
        if self.kind == "binary":
            return hamming_topk(self.encode(queries), self.codes, r, exclude=exclude)
        p = self.project(queries)
        r = min(r + (1 if exclude is not None else 0), self.count)
        _, ids = self.faiss_index.search(np.ascontiguousarray(p), r)
        return ids  # may hold -1 where a probed list ran short

    def search(self, queries, features, k: int, *, candidates: int | None = None,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows of ``features`` nearest each query: candidates from the index, re-ranked exactly.

        Returns ``(distances, ids)`` as :func:`~alexnet.features.knn.knn_search` does (Euclidean, sorted by
        distance then id). ``candidates``: R, the number re-ranked (default ``max(1000, 100 k)``).
        """
        from .knn import _refine

        if features.shape[0] != self.count or features.shape[1] != self.dim:
            raise UserError(f"index of {self.count} x {self.dim} searched against features of shape "
                            f"{tuple(features.shape)}")
        check_queries(self, queries)
        r = max(k, candidates if candidates is not None else max(1000, 100 * k))
        nq = queries.shape[0]
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
        kout = max(0, min(k, self.count - (1 if exclude is not None else 0)))
        if nq == 0 or kout == 0:
            return np.zeros((nq, kout), np.float32), np.zeros((nq, kout), np.int64)
        dist_all, ids_all = [], []
        for s in range(0, nq, 256):
            e = min(s + 256, nq)
            ex = exclude[s:e] if exclude is not None else None
            cand = self.candidates(queries[s:e], r, ex)
            cand = _fill_short(cand, self.count, kout)
            d, i = _refine(np.asarray(queries[s:e]), features, cand, min(kout, cand.shape[1]), ex)
            dist_all.append(d)
            ids_all.append(i)
        return np.concatenate(dist_all), np.concatenate(ids_all)


def _fill_short(cand: np.ndarray, n: int, k: int) -> np.ndarray:
    """Replace faiss's -1 (a short probe) by the row's first valid id, so re-ranking never reads row -1."""
    bad = cand < 0
    if not bad.any():
        return cand
    cand = cand.copy()
    for row in np.nonzero(bad.any(1))[0]:
        ok = cand[row][cand[row] >= 0]
        fill = ok[0] if len(ok) else 0
        cand[row][cand[row] < 0] = fill  # duplicates are harmless: the same row, the same distance
    return cand


def build_index(fs, kind: str = "binary", *, bits: int = 256, sample: int = 50_000, itq: int = 50, seed: int = 0,
                nlist: int | None = None, nprobe: int = 32, progress: bool = False) -> RetrievalIndex:
    """An index of feature set ``fs`` (a :class:`~alexnet.features.store.FeatureSet` or an N x D array).

    ``bits``: PCA dimensions (and code bits: a multiple of 8); ``sample``: rows the PCA and ITQ are fitted on;
    ``itq``: ITQ iterations (0: PCA signs alone). ``kind="faiss"``: IVF-PQ with ``nlist`` lists (default
    ~4 sqrt(N)) and 32-byte codes on the PCA projection, ``nprobe`` lists searched per query.
    """
    if kind not in KINDS:
        raise UserError(f"index kind must be one of {', '.join(KINDS)}, not {kind!r}")
    faiss = require_faiss() if kind == "faiss" else None
    feats = fs.features if hasattr(fs, "features") else fs
    n, d = int(feats.shape[0]), int(feats.shape[1])
    if bits % 8 or bits < 8:
        raise UserError(f"bits must be a positive multiple of 8, not {bits}")
    if n == 0:
        raise UserError("cannot index an empty feature set")
    bits_eff = min(bits, d - d % 8) if d >= 8 else bits
    t0 = time.perf_counter()
    x = _sample_rows(feats, sample, seed)
    mean, comps = fit_pca(x, bits_eff)
    if comps.shape[1] < bits_eff:  # fewer dimensions than bits: pad with zero columns (constant bits)
        comps = np.pad(comps, ((0, 0), (0, bits_eff - comps.shape[1])))
    info: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": kind, "bits": bits_eff,
                            "sample": int(x.shape[0]), "seed": seed, "itq": 0,
                            "source": feature_identity(fs)}
    if kind == "binary" and itq > 0:
        v = (x - mean) @ comps
        comps = comps @ itq_rotation(v, itq, seed)
        info["itq"] = int(itq)
    index = RetrievalIndex(kind, mean.astype(np.float32), np.ascontiguousarray(comps, dtype=np.float32), info=info)
    del x
    if kind == "binary":
        codes = np.empty((n, bits_eff // 8), np.uint8)
        for s in range(0, n, 65536):
            codes[s : s + 65536] = index.encode(feats[s : s + 65536])
        index.codes = codes
    else:
        nlist = nlist or int(max(1, min(n // 39, 4 * round(np.sqrt(n)))))
        m = 32 if bits_eff % 32 == 0 else bits_eff // 8
        nbits = 8 if n >= 256 * 39 else max(1, int(np.log2(max(2, n // 39))))
        quant = faiss.IndexFlatL2(bits_eff)
        ivf = faiss.IndexIVFPQ(quant, bits_eff, nlist, m, nbits)
        ivf.train(np.ascontiguousarray(index.project(_sample_rows(feats, sample, seed + 1))))
        for s in range(0, n, 65536):
            ivf.add(np.ascontiguousarray(index.project(feats[s : s + 65536])))
        ivf.nprobe = min(nprobe, nlist)
        index.faiss_index = ivf
        info["faiss"] = f"IVF{nlist},PQ{m}x{nbits}"
        info.update(nlist=nlist, nprobe=ivf.nprobe)
    info["build_s"] = round(time.perf_counter() - t0, 3)
    return index


# ------------------------------------------------------------------ files
def index_path_for(features_path: str | os.PathLike, kind: str) -> Path:
    """Where the index of kind ``kind`` of a feature file ``FILE.npy`` lives: ``FILE.KIND.npz``."""
    p = Path(features_path)
    return p.with_name(p.stem + f".{kind}.npz")


def save_index(index: RetrievalIndex, path: str | os.PathLike) -> Path:
    """Write ``index`` to ``path`` (``.npz``, no pickle) atomically."""
    path = Path(path)
    arrays = {"mean": index.mean, "projection": index.projection,
              "info": np.frombuffer(json.dumps(index.info).encode(), np.uint8)}
    if index.kind == "binary":
        arrays["codes"] = index.codes
    else:
        arrays["faiss"] = require_faiss().serialize_index(index.faiss_index)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    index.path = path
    return path


def load_index(path: str | os.PathLike) -> RetrievalIndex:
    """An index written by :func:`save_index`; a one-line :class:`UserError` when it is not one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(z["info"].tobytes().decode())
            if info.get("format") != FORMAT or info.get("kind") not in KINDS:
                raise ValueError("not a retrieval index")
            if int(info.get("version", 0)) > VERSION:
                raise ValueError(f"written by a newer version (format {info['version']})")
            arrays = {k: z[k] for k in z.files if k != "info"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read index {path}: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") \
            from None
    index = RetrievalIndex(info["kind"], arrays["mean"], arrays["projection"], info=info, path=path)
    if info["kind"] == "binary":
        index.codes = arrays["codes"]
    else:
        index.faiss_index = require_faiss().deserialize_index(arrays["faiss"])
    return index
