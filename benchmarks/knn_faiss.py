"""Exact kNN: ``alexnet.features.knn.knn_search`` against ``faiss.IndexFlatL2``.

Both search the same float32 vectors exhaustively; the script reports the
time of each (best of --repeat), their ratio, and how far the answers agree
(same neighbour ids; largest distance difference). faiss is optional: without
``faiss-cpu`` installed the script says so and exits 0.

    python benchmarks/knn_faiss.py                          # random 20,000 x 4096 index, 1,000 queries
    python benchmarks/knn_faiss.py --index RUN/best.ckpt.features/train-fc7-*.npy --queries .../val-fc7-*.npy
    python benchmarks/knn_faiss.py --n 100000 --d 512 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch


def _timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", help="N x D .npy of index vectors (e.g. cached train fc7 features); default random")
    p.add_argument("--queries", help="Q x D .npy of queries; default --q rows drawn from the index, perturbed")
    p.add_argument("--n", type=int, default=20000, help="random index size (default 20000)")
    p.add_argument("--d", type=int, default=4096, help="random dimension (default 4096, fc7)")
    p.add_argument("--q", type=int, default=1000, help="queries (default 1000)")
    p.add_argument("-k", type=int, default=6)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for both (default all)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported (default 3)")
    p.add_argument("--device", default="cpu", help="device for our search (cpu, cuda); faiss-cpu runs on CPU")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    try:
        import faiss
    except ImportError:
        print("faiss-cpu is not installed (pip install faiss-cpu); skipping the comparison", file=sys.stderr)
        return 0

    from alexnet.features.knn import knn_search

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    if args.index:
        x = np.ascontiguousarray(np.load(args.index, mmap_mode="r", allow_pickle=False), dtype=np.float32)
    else:
        x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    if args.queries:
        q = np.ascontiguousarray(np.load(args.queries, mmap_mode="r", allow_pickle=False), dtype=np.float32)[: args.q]
    else:
        rows = rng.choice(x.shape[0], size=min(args.q, x.shape[0]), replace=False)
        q = x[rows] + 0.1 * x.std() * rng.standard_normal((len(rows), x.shape[1]), dtype=np.float32)
    n, d = x.shape
    dev = torch.device(args.device)

    def ours():
        r = knn_search(q, x, args.k, device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return r

    def theirs():
        index = faiss.IndexFlatL2(d)
        index.add(x)
        return index.search(q, args.k)

    ours()  # warm-up (thread pools, CUDA context)
    t_ours, (d_ours, i_ours) = _timed(ours, args.repeat)
    t_faiss, (d2_faiss, i_faiss) = _timed(theirs, args.repeat)
    d_faiss = np.sqrt(np.maximum(d2_faiss, 0))
    same_ids = float((i_ours == i_faiss).mean())
    # ground truth on a sample of queries: every distance in float64, stable sort
    sample = np.arange(0, q.shape[0], max(1, q.shape[0] // 50))
    exact = np.empty((len(sample), i_ours.shape[1]), np.int64)
    x64 = None if n * d > 50_000_000 else x.astype(np.float64)
    for j, r in enumerate(sample):
        xx = x64 if x64 is not None else x.astype(np.float64)
        dd = ((xx - q[r].astype(np.float64)) ** 2).sum(1)
        exact[j] = np.argsort(dd, kind="stable")[: i_ours.shape[1]]
    same_sets = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(i_ours.tolist(), i_faiss.tolist())]))
    result = {
        "index": args.index or f"random {n} x {d}",
        "n": n, "d": d, "queries": int(q.shape[0]), "k": args.k, "threads": args.threads,
        "device": str(dev), "faiss": faiss.__version__,
        "ours_s": round(t_ours, 4), "faiss_s": round(t_faiss, 4), "ratio_ours_over_faiss": round(t_ours / t_faiss, 3),
        "ours_queries_per_s": round(q.shape[0] / t_ours, 1), "faiss_queries_per_s": round(q.shape[0] / t_faiss, 1),
        "same_ids": same_ids, "same_neighbour_sets": same_sets,
        "ours_equal_float64_brute_force": float((i_ours[sample] == exact).mean()),
        "faiss_equal_float64_brute_force": float((i_faiss[sample] == exact).mean()),
        "brute_force_sample": int(len(sample)),
        "max_distance_diff": float(np.abs(d_ours - d_faiss).max()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"index {result['index']}, {result['queries']} queries, k={args.k}, {args.threads} threads, "
              f"faiss {result['faiss']}")
        print(f"  ours  ({dev}): {t_ours:8.3f} s  {result['ours_queries_per_s']:>10.1f} queries/s")
        print(f"  faiss IndexFlatL2: {t_faiss:8.3f} s  {result['faiss_queries_per_s']:>10.1f} queries/s")
        print(f"  ratio ours/faiss: {result['ratio_ours_over_faiss']:.2f}; same ids {100 * same_ids:.2f}%, "
              f"same neighbour sets {100 * same_sets:.2f}%, max distance difference {result['max_distance_diff']:.2e}")
        exact_ours, exact_faiss = result["ours_equal_float64_brute_force"], result["faiss_equal_float64_brute_force"]
        print(f"  ids equal to a float64 brute force on {len(sample)} queries: ours {100 * exact_ours:.2f}%, "
              f"faiss {100 * exact_faiss:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
