"""``alexnet neighbors CHECKPOINT --data PREPARED --query IMAGE... [-k 6] [--json] [--out DIR]``
and ``--evaluate SPLIT``: kNN accuracy of fc7 against raw pixels."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..strict_json import dumps
from .argtypes import positive_int
from . import add_device_flag, add_progress_flag, add_workers_flag, show_progress


def add_parser(sub) -> None:
    p = sub.add_parser(
        "neighbors", help="nearest training images in fc7 space (the paper's Figure 4); --evaluate: kNN accuracy",
        description="Euclidean nearest neighbours among the training images, in fc7 space: exact by default, or "
                    "through 256-bit binary codes (--search binary: PCA + ITQ, Hamming distance, the best "
                    "--candidates re-ranked exactly) or a faiss IVF-PQ index (--search faiss, needs "
                    "pip install alexnet[retrieval]). The training features (and an index) are computed once and "
                    "cached beside the checkpoint (CHECKPOINT.features/). "
                    "--evaluate SPLIT scores kNN classification of SPLIT against the training set in fc7 space "
                    "and in raw-pixel space.")
    p.add_argument("checkpoint", help="checkpoint file (e.g. RUN/best.ckpt)")
    p.add_argument("--data", required=True, help="prepared data folder (its train split is searched)")
    p.add_argument("--query", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("--evaluate", metavar="SPLIT", help="score kNN classification of this split instead")
    p.add_argument("-k", type=positive_int, default=6, help="neighbours per query (default 6)")
    p.add_argument("--layer", default="fc7", help="feature layer (default fc7)")
    p.add_argument("--json", action="store_true",
                   help='print [{"query", "neighbors": [{"id", "class", "distance"}, ...]}] (or the scores)')
    p.add_argument("--out", metavar="DIR", help="also write neighbors.json and neighbors.png (or knn.json) here")
    p.add_argument("--search", choices=("exact", "binary", "faiss"), default="exact",
                   help="exact (default), binary (codes + exact re-ranking) or faiss (IVF-PQ + exact re-ranking)")
    p.add_argument("--index", metavar="FILE.npz",
                   help="an index written by `alexnet features ... --index KIND` (default: one cached beside the "
                        "checkpoint, built on first use)")
    p.add_argument("--candidates", type=positive_int, metavar="R",
                   help="binary/faiss: candidates re-ranked exactly per query (default max(1000, 100 k))")
    p.add_argument("--no-pixels", action="store_true", help="--evaluate: skip the raw-pixel baseline")
    p.add_argument("--no-cache", action="store_true", help="recompute features in memory, write no cache")
    p.add_argument("--batch-size", type=positive_int, default=256)
    add_workers_flag(p)
    add_device_flag(p)
    add_progress_flag(p)
    p.set_defaults(func=run)


def _write(out: Path, name: str, obj) -> Path:
    from ..fileio import atomic_write

    path = out / name
    atomic_write(path, lambda f: f.write((dumps(obj, indent=1) + "\n").encode()))
    return path


def run(args) -> int:
    from ..engine.inference import Checkpoint
    from ..fileio import check_output_dir, check_output_file

    if bool(args.query) == bool(args.evaluate):
        raise UserError("give either --query IMAGE... or --evaluate SPLIT")
    out = Path(args.out) if args.out else None
    if out:
        check_output_dir(out)
        names = ["knn.json"] if args.evaluate else ["neighbors.json"] + (["neighbors.png"] if args.layer == "fc7" else [])
        for name in names:
            check_output_file(out / name)
    progress = show_progress(args)
    common = dict(device=args.device, workers=args.workers, progress=progress)
    if args.search == "faiss":
        from ..features.index import require_faiss

        require_faiss()  # before any model or data is loaded
    if args.index and args.search == "exact":
        raise UserError("--index needs --search binary or faiss")
    how = dict(search=args.search, index=args.index, candidates=args.candidates)

    if args.evaluate:
        from ..features.knn import evaluate_knn, format_evaluation

        r = evaluate_knn(args.checkpoint, args.data, args.evaluate, k=args.k, layer=args.layer,
                         pixels=not args.no_pixels, batch_size=args.batch_size, cache=not args.no_cache, **common,
                         **how)
        print(dumps(r) if args.json else format_evaluation(r))
        if out:
            _write(out, "knn.json", r)
        return 0

    from ..features.neighbors import find_neighbors

    ck = Checkpoint.load(args.checkpoint, args.device)
    res = find_neighbors(ck, args.data, args.query, k=args.k, layer=args.layer, batch_size=args.batch_size,
                         cache=not args.no_cache, **common, **how)
    if args.json:
        print(dumps(res))
    else:
        print(f"search: {args.search}" + (f" (index {args.index})" if args.index else ""))
        for r in res:
            print(r["query"])
            for j, n in enumerate(r["neighbors"], 1):
                print(f"  {j:>3}. train id {n['id']:<7} distance {n['distance']:<10.4g} {n['class']}")
    if out:
        from ..features.neighbors import neighbor_panels
        from ..viz.figures import neighbors_figure, save_figure

        _write(out, "neighbors.json", res)
        if args.layer == "fc7":
            panels = neighbor_panels(ck, args.data, args.query, k=args.k, results=res, **common)
            save_figure(neighbors_figure(panels), out / "neighbors.png")
        if not args.json:
            print(f"wrote {out / 'neighbors.json'}" + (f" and {out / 'neighbors.png'}" if args.layer == "fc7" else ""))
    return 0
