"""Prepared shards of the built-in dataset for throughput checks, generated on every core.

``generate_synth`` draws about 100 images/s at 256 px on one core; this runs it in several processes
(one seed each, images of the same class merged under distinct names), then ``alexnet prepare``s the
result: ``OUT/prep`` holds 256 px JPEG shards like ILSVRC-2012's after ``prepare``, 10 classes.

    python benchmarks/synth_shards.py OUT [--train 12800] [--val 200] [--size 256] [--workers N]

Prints one JSON line: images, seconds for generation and for prepare, the prepared folder.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CLASSES = 10


def _generate(job: tuple[str, int, int, int, int]) -> str:
    from alexnet.data import generate_synth

    out, seed, train, val, size = job
    generate_synth(out, classes=CLASSES, train_per_class=train, val_per_class=val, size=size, seed=seed,
                   progress=False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write (parts/, src/, prep/)")
    p.add_argument("--train", type=int, default=12800, help="training images in all (default 12800)")
    p.add_argument("--val", type=int, default=200, help="validation images in all (default 200)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every core)")
    args = p.parse_args()

    from alexnet.data import prepare

    out = Path(args.out)
    procs = max(1, min(args.workers, args.train // CLASSES))
    per_train = max(1, args.train // (CLASSES * procs))
    per_val = max(0, -(-args.val // (CLASSES * procs)))
    t0 = time.perf_counter()
    jobs = [(str(out / "parts" / f"seed{i}"), i, per_train, per_val, args.size) for i in range(procs)]
    with ProcessPoolExecutor(procs) as pool:
        parts = list(pool.map(_generate, jobs))
    src = out / "src"  # one folder tree: links to every part's images, named after their seed
    for part in map(Path, parts):
        for image in part.glob("*/*/*.jpg"):
            link = src / image.parent.parent.name / image.parent.name / f"{part.name}_{image.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(image.resolve())
    t1 = time.perf_counter()
    summary = prepare(src, out / "prep", size=args.size, workers=args.workers, progress=False)
    t2 = time.perf_counter()
    print(json.dumps({"train_images": summary["splits"].get("train", 0), "val_images": summary["splits"].get("val", 0),
                      "size": args.size, "generate_s": round(t1 - t0, 1), "prepare_s": round(t2 - t1, 1),
                      "prepared": str(out / "prep")}))


if __name__ == "__main__":
    main()
