"""Exact Euclidean k-nearest-neighbour search, and kNN evaluation of features.

The paper (its Figure 4) retrieves, for a query image, the training images
whose fc7 vectors are closest in Euclidean distance. :func:`knn_search` does
this exactly (every index vector is compared; nothing is approximated) with
batched matrix products, so it runs at BLAS speed on a CPU or a GPU and never
holds more than ``query_batch x index_batch`` distances:

1. coarse pass: for each block of index rows (read once, e.g. from a
   memory-mapped ``.npy``) and each block of queries,
   ``|x|^2 - 2 q.x`` (the squared distance less the query's own norm, which
   does not change a query's ranking) by one ``addmm``, then the
   ``k + margin`` smallest per query by ``topk``, merged into a running
   candidate list;
2. refinement: the candidates' distances are recomputed directly,
   ``sqrt(sum((q - x)^2))`` in float64, and sorted by (distance, index).

The refinement removes the cancellation error of the expanded form (an
indexed vector's distance to itself is exactly 0) and makes the order
deterministic: equal distances are broken by the lower index, as
``np.argsort(kind="stable")`` does. A true neighbour could only be missed if
float32 rounding in the coarse pass pushed it below ``margin`` other vectors,
which needs more than ``margin`` vectors within rounding error (~1e-6
relative) of the k-th distance.

``k`` larger than the index returns every index vector (``min(k, N)``
columns), nearest first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..engine.distributed import resolve_device
from ..engine.inference import Checkpoint
from .cache import cached_features

__all__ = [
    "knn_search",
    "knn_classify",
    "knn_scores",
    "evaluate_knn",
    "format_evaluation",
]


def _rows(a, start: int, stop: int, device) -> torch.Tensor:
    """Rows ``start:stop`` of a numpy array / memmap / tensor as float32 on ``device``."""
    if isinstance(a, torch.Tensor):
        return a[start:stop].to(device=device, dtype=torch.float32)
    block = np.asarray(a[start:stop], dtype=np.float32)
    if not (block.flags.writeable and block.flags.c_contiguous):  # a read-only memmap slice: torch wants a copy
        block = np.array(block, dtype=np.float32, order="C")
    return torch.from_numpy(block).to(device)


def _gather(a, ids: np.ndarray) -> np.ndarray:
    """Index rows ``ids`` (any shape) of ``a`` as float64 numpy, reading each row once."""
    flat = ids.reshape(-1)
    uniq, inv = np.unique(flat, return_inverse=True)
    if isinstance(a, torch.Tensor):
        rows = a[torch.from_numpy(uniq)].detach().cpu().double().numpy()
    else:
        rows = np.asarray(a[uniq], dtype=np.float64)
    return rows[inv].reshape(*ids.shape, rows.shape[-1])


def _shape(a) -> tuple[int, int]:
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {tuple(a.shape)}")
    return int(a.shape[0]), int(a.shape[1])


@torch.no_grad()
def knn_search(
    queries,
    index,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    margin: int | None = None,
    query_batch: int = 1024,
    index_batch: int = 8192,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` index vectors nearest each query, by Euclidean distance.

    ``queries`` (Q x D) and ``index`` (N x D): numpy arrays (memory-mapped is
    fine, float16 is upcast block by block) or tensors. ``exclude``: for each
    query an index id it may not return (``-1``: none), e.g. ``arange(N)``
    for leave-one-out search of the index against itself.

    Returns ``(distances, ids)``, both Q x min(k, N') (N' = N, less one when
    ``exclude`` is given), sorted by distance then id; distances are Euclidean
    (not squared), float32; ids int64.
    """
    nq, d = _shape(queries)
    n, d2 = _shape(index)
    if d != d2:
        raise ValueError(f"queries have {d} dimensions but the index has {d2}")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    device = torch.device("cpu") if device is None else resolve_device(device)
    available = n - (1 if exclude is not None else 0)
    kout = max(0, min(k, available))
    if nq == 0 or kout == 0:
        return np.zeros((nq, kout), np.float32), np.zeros((nq, kout), np.int64)
    margin = max(16, k) if margin is None else margin
    kk = min(kout + margin, available)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if exclude.shape[0] != nq:
            raise ValueError(f"exclude has {exclude.shape[0]} entries for {nq} queries")
    cand = _candidates(queries, index, kk, exclude, query_batch, index_batch, device, progress)
    return _refine(queries, index, cand, kout, exclude)


def _candidates(queries, index, kk: int, exclude: np.ndarray | None, query_batch: int, index_batch: int,
                device: torch.device, progress: bool) -> np.ndarray:
    """The coarse pass: ``Q x kk`` ids of the index rows with the smallest ``|x|^2 - 2 q.x`` for each query."""
    nq, d = _shape(queries)
    n = _shape(index)[0]
    excl_t = torch.from_numpy(exclude).to(device) if exclude is not None else None
    inf = torch.tensor(float("inf"), device=device)
    state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # query block -> (values, ids) kept so far
    blocks = [(s, min(s + index_batch, n)) for s in range(0, n, index_batch)]
    qblocks = [(s, min(s + query_batch, nq)) for s in range(0, nq, query_batch)]
    bar = tqdm(total=len(blocks) * len(qblocks), desc="knn", unit="block", disable=not progress, leave=False)
    cache_q = {}  # queries kept on the device when they fit
    keep_q = nq * d * 4 <= 512 * 2**20
    for s, e in blocks:
        x = _rows(index, s, e, device)
        xn = (x * x).sum(1)
        ar = torch.arange(s, e, device=device)
        for qs, qe in qblocks:
            q = cache_q.get(qs)
            if q is None:
                q = _rows(queries, qs, qe, device)
                if keep_q:
                    cache_q[qs] = q
            dist = torch.addmm(xn.unsqueeze(0), q, x.T, beta=1.0, alpha=-2.0)  # |x|^2 - 2 q.x
            if excl_t is not None:
                hit = excl_t[qs:qe].unsqueeze(1) == ar.unsqueeze(0)
                dist = torch.where(hit, inf, dist)
            v, i = _smallest(dist, ar.unsqueeze(0).expand_as(dist), kk)
            if qs in state:
                v0, i0 = state[qs]
                v, i = _smallest(torch.cat([v0, v], 1), torch.cat([i0, i], 1), kk)
            state[qs] = (v, i)
            bar.update()
    bar.close()
    return torch.cat([state[qs][1] for qs, _ in qblocks]).cpu().numpy()


def _refine(queries, index, cand: np.ndarray, kout: int,
            exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The refinement: exact float64 distances of the candidates, the ``kout`` nearest sorted by (distance, id)."""
    nq, d = _shape(queries)
    kk = cand.shape[1]
    out_d = np.empty((nq, kout), np.float32)
    out_i = np.empty((nq, kout), np.int64)
    rb = max(1, int(64 * 2**20 // max(1, kk * d * 8)))  # ~64 MB of gathered rows per block
    for s in range(0, nq, rb):
        e = min(s + rb, nq)
        ids = cand[s:e]
        q = queries[s:e].cpu().numpy() if isinstance(queries, torch.Tensor) else queries[s:e]
        q = np.asarray(q, dtype=np.float64)
        x = _gather(index, ids)
        dist = np.sqrt(((x - q[:, None, :]) ** 2).sum(-1))
        if exclude is not None:  # (an excluded id only survives the coarse pass when nothing else is left)
            dist[ids == exclude[s:e, None]] = np.inf
        # sort by (distance, id): ids first, then a stable sort on distance
        o = np.argsort(ids, axis=1, kind="stable")
        ids, dist = np.take_along_axis(ids, o, 1), np.take_along_axis(dist, o, 1)
        o = np.argsort(dist, axis=1, kind="stable")[:, :kout]
        out_i[s:e] = np.take_along_axis(ids, o, 1)
        out_d[s:e] = np.take_along_axis(dist, o, 1)
    return out_d, out_i


def _smallest(values: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the ``k`` smallest values and their ids (in no particular order).

    Among values equal at the cut the lowest ids are kept. ``topk`` alone
    picks arbitrarily there, so rows whose ``k``-th and ``k+1``-th values
    are equal are redone with a stable (value, id) sort; elsewhere the kept
    set is already exact.
    """
    width = values.shape[1]
    if width <= k:
        return values, ids
    v, pos = torch.topk(values, k + 1, dim=1, largest=False, sorted=True)
    tied = v[:, k - 1] == v[:, k]
    v, pos = v[:, :k], pos[:, :k]
    i = torch.gather(ids, 1, pos)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        by_id = torch.argsort(ids[rows], dim=1, stable=True)
        vv = torch.gather(values[rows], 1, by_id)
        by_v = torch.gather(by_id, 1, torch.argsort(vv, dim=1, stable=True))[:, :k]
        v[rows] = torch.gather(values[rows], 1, by_v)
        i[rows] = torch.gather(ids[rows], 1, by_v)
    return v, i


# ------------------------------------------------------------ classification
def knn_classify(neighbor_labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Majority vote over each row of neighbour labels (nearest first).

    A tie between classes goes to the class whose nearest member ranks
    first, so 1-NN and k-NN agree when every class appears once.
    """
    labels = np.asarray(neighbor_labels, dtype=np.int64)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ValueError("need a Q x k array of neighbour labels with k >= 1")
    q, k = labels.shape
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    votes = np.zeros((q, c), np.float64)
    np.add.at(votes, (np.arange(q)[:, None], labels), 1.0)
    # tie-break: the earliest rank of each class, as a fraction below one vote
    first = np.full((q, c), k, np.float64)
    np.minimum.at(first, (np.arange(q)[:, None], labels), np.broadcast_to(np.arange(k), (q, k)).astype(np.float64))
    return np.argmax(votes - first / (k + 1), axis=1)


def knn_scores(query_labels: np.ndarray, neighbor_labels: np.ndarray, num_classes: int | None = None) -> dict[str, float]:
    """1-NN and k-NN accuracy, and precision@k (the share of neighbours of the query's class)."""
    y = np.asarray(query_labels, dtype=np.int64)
    nl = np.asarray(neighbor_labels, dtype=np.int64)
    if len(y) == 0:
        return {"nn1_acc": float("nan"), "knn_acc": float("nan"), "precision_at_k": float("nan")}
    pred = knn_classify(nl, num_classes)
    return {
        "nn1_acc": float((nl[:, 0] == y).mean()),
        "knn_acc": float((pred == y).mean()),
        "precision_at_k": float((nl == y[:, None]).mean()),
    }


def evaluate_knn(
    checkpoint,
    data,
    split: str = "val",
    *,
    k: int = 6,
    layer: str = "fc7",
    pixels: bool = True,
    batch_size: int = 256,
    workers: int | None = None,
    device: str | torch.device | None = None,
    cache: bool = True,
    progress: bool = True,
    search: str = "exact",
    index=None,
    candidates: int | None = None,
) -> dict[str, Any]:
    """kNN classification of ``split`` against the training set, in fc7 space and in pixel space.

    The paper's claim (Section 6.1): images close in fc7 space share a class,
    images close in pixel space need not. Returns::

        {"split", "k", "count", "train_count", "classes", "chance",
         "fc7":    {"space", "dim", "nn1_acc", "knn_acc", "precision_at_k"},
         "pixels": {...}}            # when pixels=True

    ``split == "train"`` is scored leave-one-out (an image is not its own
    neighbour). Training features come from the cache beside the checkpoint
    (a path or a :class:`~alexnet.engine.inference.Checkpoint`).
    ``search`` (exact, binary, faiss), ``index``, ``candidates``: how the
    ``layer`` space is searched (see
    :func:`~alexnet.features.neighbors.training_searcher`); the result's
    ``"search"`` names it. The pixel baseline is always searched exactly.
    """
    from .neighbors import Searcher, training_searcher

    ck = Checkpoint.load(checkpoint, device)
    kw = dict(batch_size=batch_size, workers=workers, progress=progress, cache=cache)
    out: dict[str, Any] = {"split": split, "k": k}
    for space in [layer] + (["pixels"] if pixels else []):
        if space == layer:
            searcher = training_searcher(ck, data, layer, search=search, index=index, candidates=candidates, **kw)
            out["search"] = searcher.describe(k)
        else:  # the pixel baseline: always exact
            searcher = Searcher(cached_features(ck, data, "train", space, **kw), device=ck.device)
        train = searcher.train
        if split == "train":
            query, exclude = train, np.arange(train.count)
        else:
            query, exclude = cached_features(ck, data, split, space, **kw), None
        _, ids = searcher(query.features, k, exclude=exclude, progress=progress)
        scores = knn_scores(query.labels, train.labels[ids], len(train.class_names) or None)
        key = "fc7" if space == layer and layer == "fc7" else ("pixels" if space == "pixels" else space)
        out[key] = {"space": space, "dim": int(train.features.shape[1]), **scores}
        out.update(count=int(query.count), train_count=int(train.count))
        out["classes"] = len(train.class_names)
    out["chance"] = 1.0 / out["classes"] if out.get("classes") else float("nan")
    return out


def format_evaluation(result: dict[str, Any]) -> str:
    """A small table of :func:`evaluate_knn`'s result."""
    k = result["k"]
    lines = [
        f"kNN on {result['split']} ({result['count']} images) against train ({result['train_count']} images), "
        f"k={k}, {result.get('classes', '?')} classes (chance {100 * result['chance']:.1f}%)",
        f"{'space':<10} {'dim':>7} {'1-NN acc':>9} {f'{k}-NN acc':>9} {f'P@{k}':>7}",
    ]
    if result.get("search"):
        lines.insert(1, f"search ({result.get('fc7', {}).get('space', 'fc7')}): {result['search']}")
    for key, r in result.items():
        if isinstance(r, dict) and "knn_acc" in r:
            lines.append(f"{r['space']:<10} {r['dim']:>7} {100 * r['nn1_acc']:>8.1f}% {100 * r['knn_acc']:>8.1f}% "
                         f"{100 * r['precision_at_k']:>6.1f}%")
    return "\n".join(lines)
