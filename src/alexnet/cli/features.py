"""``alexnet features CHECKPOINT --data PREPARED --split S [--layer fc7] --out FILE.npy``."""

from __future__ import annotations

from .argtypes import positive_int
from . import add_device_flag, add_progress_flag, add_workers_flag, show_progress


def add_parser(sub) -> None:
    p = sub.add_parser("features", help="activations of a layer (fc7 by default) for every image of a split, as .npy",
                       description="Write the activations of one layer for every image of a prepared split as a "
                                   "memory-mapped N x D .npy, with FILE.labels.npy, FILE.ids.npy (the image's position "
                                   "in the split) and FILE.json beside it. Layer 'pixels' is the preprocessed input.")
    p.add_argument("checkpoint", help="checkpoint file (e.g. RUN/best.ckpt)")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--split", default="train", help="split to run over (default: train)")
    p.add_argument("--layer", default="fc7", help="activation name (conv1..conv5, norm1, pool5, fc6, fc7, fc8, pixels)")
    p.add_argument("--out", required=True, help="output FILE.npy")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--index", choices=("binary", "faiss"),
                   help="also build a retrieval index of the features, FILE.KIND.npz (binary: 256-bit PCA+ITQ "
                        "codes; faiss: IVF-PQ, needs pip install alexnet[retrieval]) for "
                        "`alexnet neighbors --search KIND --index FILE.KIND.npz`")
    p.add_argument("--bits", type=positive_int, default=256, help="--index: PCA dimensions / code bits (default 256)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    add_workers_flag(p)
    add_device_flag(p)
    add_progress_flag(p, "progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from contextlib import closing

    from ..engine.inference import Checkpoint
    from ..features.extract import extract_features, layer_function
    from ..features.store import sidecar_paths
    from ..fileio import check_output_file

    paths = sidecar_paths(args.out)
    if args.index:
        from ..features.index import index_path_for, require_faiss

        if args.index == "faiss":
            require_faiss()  # before the (long) feature pass
        paths["index"] = index_path_for(args.out, args.index)
    for path in paths.values():
        check_output_file(path)
    ck = Checkpoint.load(args.checkpoint, args.device)
    layer_function(ck.model, args.layer)  # unknown layer: fail before reading data
    meta = {"checkpoint": str(ck.path), "data": str(args.data), "transform": ck.transform}
    with closing(ck.eval_loader(args.data, args.split, batch_size=args.batch_size, workers=args.workers)) as loader:
        fs = extract_features(ck.model, loader, args.layer, out=paths["features"], dtype=args.dtype, split=args.split,
                              meta=meta, class_names=ck.class_names, progress=show_progress(args))
    n, d = fs.features.shape
    print(f"{args.layer} of {n} {args.split} images: {n} x {d} {args.dtype} -> {paths['features']} "
          f"(+ {paths['labels'].name}, {paths['ids'].name}, {paths['meta'].name})")
    if args.index:
        from ..features.index import build_index, save_index

        index = build_index(fs, args.index, bits=args.bits, progress=show_progress(args))
        save_index(index, paths["index"])
        print(f"{args.index} index ({index.bits} bits, {index.nbytes / 2**20:.1f} MiB, built in "
              f"{index.info['build_s']:.1f} s) -> {paths['index']}")
    return 0
