"""``alexnet prepare SRC OUT [--size 256] [--workers N] [--seed S] [--shard-size N]``: a source into shards, index,
stats, meta. Also under torchrun: ``torchrun --nproc-per-node 2 -m alexnet.cli.main prepare SRC OUT``
(each rank writes its share of the shards into the shared OUT, rank 0 merges; see alexnet.data.prepare)."""

from __future__ import annotations

from ..data.meta import SMALL_IMAGE_SIDE
from .argtypes import positive_int
from . import add_progress_flag, show_progress


def add_parser(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="convert an image folder, ILSVRC-2012, IDX, CIFAR files or WebDataset shards into shards with mean "
             "and PCA statistics",
        description="Detects the source kind, rescales every image (shorter side to --size, central square; "
                    f"images of {SMALL_IMAGE_SIDE} px or less keep their size, stored raw), packs tar shards in a fixed "
                    "shuffled order and writes OUT/meta.json, OUT/stats.npz and OUT/skipped.txt. Rerunning resumes "
                    "an interrupted run. Runs under torchrun too (torchrun --nproc-per-node 2 -m alexnet.cli.main "
                    "prepare SRC OUT; several machines: SRC and OUT on a shared filesystem): each rank writes its "
                    "share of the shards, rank 0 merges the statistics exactly; the result equals a one-process prepare.")
    p.add_argument("src", help="source folder (train/<class>/..., ILSVRC-2012, MNIST-format IDX, CIFAR batches, "
                               "or WebDataset .tar shards with <key>.jpg and <key>.cls members)")
    p.add_argument("out", help="output folder (new, or an unfinished prepare of the same source)")
    p.add_argument("--size", type=positive_int, default=256, help="side of the stored square images in pixels (default 256)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: every core)")
    p.add_argument("--max-pixels", type=positive_int, default=None,
                   help="skip images declaring more pixels than this (decompression bombs; default 89,478,485)")
    p.add_argument("--max-image-bytes", type=positive_int, default=None,
                   help="skip image files and tar members larger than this, without reading them (default 64 MB)")
    p.add_argument("--shard-size", type=positive_int, default=None,
                   help="samples per shard (default: about 64 MB of data per shard); under torchrun there must be at "
                        "least one shard per rank")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the fixed shuffled order samples are written in (default 0; recorded in meta.json)")
    p.add_argument("--force", action="store_true",
                   help="redo OUT from scratch when it holds a prepare of other data or settings (or of this source "
                        "before it changed), deleting only the files prepare writes there")
    add_progress_flag(p, "progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import prepare
    from ..data.images import MAX_IMAGE_BYTES, MAX_PIXELS
    from ..fileio import check_output_dir

    check_output_dir(args.out)
    s = prepare(args.src, args.out, size=args.size, workers=args.workers, progress=show_progress(args),
                max_pixels=args.max_pixels or MAX_PIXELS, seed=args.seed, shard_size=args.shard_size,
                max_image_bytes=args.max_image_bytes or MAX_IMAGE_BYTES, force=args.force)
    if s.get("rank"):  # under torchrun, a rank other than 0: one line, rank 0 prints the summary
        print(f"rank {s['rank']} of {s['world_size']}: {s['shards']} shards ({s['resumed_shards']} already done), "
              f"{s['processed']:,} images in {s['seconds']:.1f} s")
        return 0
    splits = ", ".join(f"{n:,} {name}" for name, n in s["splits"].items())
    skipped = f"{s['skipped']:,} skipped (see {args.out}/skipped.txt)" if s["skipped"] else "none skipped"
    if s["processed"] == 0:
        work = f"nothing left to do ({s['resumed_shards']} shards already done)"
    else:
        resumed = f", {s['resumed_shards']} shards already done" if s["resumed_shards"] else ""
        work = f"{s['seconds']:.1f} s, {s['images_per_s']:.0f} images/s{resumed}"
    ranks = f" by {s['world_size']} ranks" if s.get("world_size", 1) > 1 else ""
    print(f"{s['source']}: {splits} images of {s['size']}x{s['size']}x{s['channels']} ({s['format']}), "
          f"{s['classes']} classes, {skipped}; {work}{ranks} -> {args.out}")
    return 0
