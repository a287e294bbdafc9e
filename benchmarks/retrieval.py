"""Retrieval at scale: exact search against binary codes (PCA + ITQ, Hamming, exact re-ranking) and faiss IVF-PQ.

Index vectors are real features (``--features``, e.g. a checkpoint's cached
train fc7) replicated to ``--rows`` rows: row i is base row ``i mod n0``
plus Gaussian noise of ``--noise`` times each dimension's standard
deviation (copies then differ, so ranking them is not a matter of ties),
written as float16 to a memory-mapped ``.npy`` in ``--workdir`` (removed
at the end unless ``--keep``). Queries are ``--queries`` (e.g. the val fc7
of the same checkpoint), their first ``--q`` rows. Without ``--features``
clustered random vectors stand in.

For each method: recall@k against exact search, queries per second, index
build time, index bytes in memory, and kNN classification accuracy (majority
of the k neighbours' labels, Figure 4's kNN) against exact's. faiss is
skipped when not installed.

    python benchmarks/retrieval.py                                    # 100,000 random x 4096
    python benchmarks/retrieval.py --features RUN/best.ckpt.features/train-fc7-*.npy \\
        --queries RUN/best.ckpt.features/val-fc7-*.npy --rows 1281167 --q 200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _replicate(path: Path, base: np.ndarray, labels: np.ndarray, rows: int, noise: float, seed: int):
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    scale = (noise * base.astype(np.float32).std(0)).astype(np.float32)
    out = open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, base.shape[1]))
    n0 = base.shape[0]
    for s in range(0, rows, 32768):
        e = min(s + 32768, rows)
        src = np.arange(s, e) % n0
        blk = base[src].astype(np.float32)
        if s >= n0:  # the first copy is the real rows themselves
            blk += rng.standard_normal(blk.shape, dtype=np.float32) * scale
        out[s:e] = blk
    out.flush()
    del out
    return np.load(path, mmap_mode="r"), labels[np.arange(rows) % n0]


def _random(rows: int, d: int, q: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, d)).astype(np.float32) * 2
    lab = rng.integers(0, 100, rows)
    qlab = rng.integers(0, 100, q)
    x = np.empty((rows, d), np.float16)
    for s in range(0, rows, 16384):
        e = min(s + 16384, rows)
        x[s:e] = centres[lab[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32) * 3
    qs = centres[qlab] + rng.standard_normal((q, d), dtype=np.float32) * 3
    return x, lab, qs, qlab


def main(argv=None) -> int:
    from alexnet.features.index import build_index
    from alexnet.features.knn import knn_scores, knn_search
    from alexnet.features.store import read_features

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", help="base index features (a feature set .npy); default clustered random")
    p.add_argument("--queries", help="query feature set .npy (default: random, or the base rows perturbed)")
    p.add_argument("--rows", type=int, default=100_000, help="index rows (default 100000; ImageNet: 1281167)")
    p.add_argument("--d", type=int, default=4096, help="dimension of the random data (default 4096)")
    p.add_argument("--q", type=int, default=200, help="queries (default 200; exact search is timed on these)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--candidates", type=int, default=1000, help="R re-ranked exactly (default 1000)")
    p.add_argument("--bits", type=int, default=256)
    p.add_argument("--sample", type=int, default=50_000, help="rows the PCA / ITQ / IVF-PQ are fitted on")
    p.add_argument("--itq", type=int, default=50, help="ITQ iterations (default 50)")
    p.add_argument("--noise", type=float, default=0.1, help="replica noise, times each dimension's std (0.1)")
    p.add_argument("--methods", default="exact,binary-pca,binary,faiss")
    p.add_argument("--workdir", default=None, help="folder for the replicated feature file (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the replicated feature file")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    if "faiss" in methods:
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            print("faiss-cpu is not installed (pip install alexnet[retrieval]): skipping faiss", file=sys.stderr)
            methods.remove("faiss")

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="retrieval-", dir=args.workdir))
    try:
        t = time.perf_counter()
        if args.features:
            base = read_features(args.features)
            if args.queries:
                qfs = read_features(args.queries)
                queries, qlab = np.asarray(qfs.features[: args.q], np.float32), qfs.labels[: args.q]
            else:
                rng = np.random.default_rng(args.seed + 1)
                pick = rng.choice(base.count, args.q, replace=False)
                queries = np.asarray(base.features[pick], np.float32)
                queries += rng.standard_normal(queries.shape, dtype=np.float32) * queries.std(0) * args.noise
                qlab = base.labels[pick]
            x, lab = _replicate(tmp / "index.npy", np.asarray(base.features), base.labels, args.rows, args.noise,
                                args.seed)
            source = f"{args.features} ({base.count} real rows) replicated to {args.rows} with noise {args.noise}"
        else:
            x, lab, queries, qlab = _random(args.rows, args.d, args.q, args.seed)
            source = f"clustered random {args.rows} x {args.d}"
        prep_s = time.perf_counter() - t
        print(f"index: {source}, {x.shape[0]} x {x.shape[1]} {x.dtype} ({x.nbytes / 2**30:.2f} GiB, made in "
              f"{prep_s:.0f} s); {len(queries)} queries, k={args.k}, R={args.candidates}", flush=True)
        ncls = int(max(lab.max(), qlab.max())) + 1

        rows, exact_ids, exact_qps = [], None, None
        for m in methods:
            t = time.perf_counter()
            if m == "exact":
                index, build_s, mem = None, 0.0, x.nbytes
            else:
                kind = "faiss" if m == "faiss" else "binary"
                itq = 0 if m == "binary-pca" else args.itq
                index = build_index(x, kind, bits=args.bits, sample=args.sample, itq=itq, seed=args.seed)
                build_s, mem = time.perf_counter() - t, index.nbytes
            t = time.perf_counter()
            if index is None:
                _, ids = knn_search(queries, x, args.k)
            else:
                _, ids = index.search(queries, x, args.k, candidates=args.candidates)
            search_s = time.perf_counter() - t
            if m == "exact":
                exact_ids, exact_qps = ids, len(queries) / search_s
            recall = (float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, exact_ids)]))
                      if exact_ids is not None else float("nan"))
            sc = knn_scores(qlab, lab[ids], ncls)
            rows.append({"rows": int(x.shape[0]), "method": m, "recall_at_k": recall, "qps": len(queries) / search_s,
                         "build_s": build_s, "memory_bytes": int(mem), "knn_acc": sc["knn_acc"],
                         "nn1_acc": sc["nn1_acc"], "speedup": (len(queries) / search_s) / exact_qps
                         if exact_qps else float("nan")})
            r = rows[-1]
            print(f"  {m}: recall@{args.k} {r['recall_at_k']:.3f}, {r['qps']:.1f} q/s, build {build_s:.1f} s, "
                  f"{mem / 2**20:.1f} MiB, kNN acc {r['knn_acc']:.3f}", flush=True)
        exact_acc = next((r["knn_acc"] for r in rows if r["method"] == "exact"), float("nan"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if args.json:
            print(json.dumps({"source": source, "k": args.k, "candidates": args.candidates, "rows": rows,
                              "peak_rss_gib": peak}))
        else:
            print(f"\n{'N':>9} {'method':<11} {f'recall@{args.k}':>9} {'q/s':>8} {'x exact':>8} {'build s':>8} "
                  f"{'memory':>10} {'kNN acc':>8} {'vs exact':>8}")
            for r in rows:
                print(f"{r['rows']:>9} {r['method']:<11} {r['recall_at_k']:>9.3f} {r['qps']:>8.1f} "
                      f"{r['speedup']:>7.1f}x {r['build_s']:>8.1f} {r['memory_bytes'] / 2**20:>8.1f}Mi "
                      f"{r['knn_acc']:>8.3f} {r['knn_acc'] - exact_acc:>+8.3f}")
            print(f"peak RSS {peak:.2f} GiB; CPU threads {args.threads}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
