"""How fast the built-in dataset is generated: images per second at 32 px and 256 px (one process), and
with ImageNet sizes (``--sizes imagenet``) with 1 and 2 (``--workers``) processes, with the sizes drawn.

    python benchmarks/synth.py [--images 1400] [--imagenet-images 400] [--workers 1 2] [--json]

(The test suite used to assert a rate; speed is measured here instead, on an
idle machine: about 1,500 images/s at 32 px on one core. Note the load
average printed: other work on the machine lowers every rate.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from alexnet.data import generate_synth


def rate(size: int, images: int) -> float:
    per_class = max(1, images // 10)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_synth(Path(tmp) / "s", classes=10, train_per_class=per_class, val_per_class=0, size=size,
                       progress=False)
        return 10 * per_class / (time.perf_counter() - t0)


def imagenet(images: int, workers: int) -> dict:
    """``images`` images of up to 1,000 classes (every texture and background pattern) with ImageNet sizes."""
    from PIL import Image

    classes = min(1000, max(2, images))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = generate_synth(Path(tmp) / "s", classes=classes, train_per_class=max(1, images // classes),
                             val_per_class=0, sizes="imagenet", layout="ilsvrc", workers=workers, progress=False)
        dt = time.perf_counter() - t0
        files = sorted(out.rglob("*.JPEG"))
        sides = [Image.open(f).size for f in files]
        n = len(files)
        kb = sum(f.stat().st_size for f in files) / n / 1e3
    ws, hs = [s[0] for s in sides], [s[1] for s in sides]
    return {"images": n, "workers": workers, "images_per_s": n / dt, "mean_w": sum(ws) / n, "mean_h": sum(hs) / n,
            "min_side": min(ws + hs), "max_side": max(ws + hs), "mean_kb": kb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1400, help="images per fixed size (default 1400)")
    p.add_argument("--imagenet-images", type=int, default=400, help="images with ImageNet sizes per run (default 400)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts for ImageNet sizes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_before": os.getloadavg()[0],
              "images_per_s": {str(size): rate(size, args.images if size <= 64 else args.images // 10)
                               for size in (32, 256)},
              "imagenet": [imagenet(args.imagenet_images, w) for w in args.workers],
              "load_after": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['cpus']} CPUs, load average {result['load_before']:.1f} before, {result['load_after']:.1f} after")
    for size, r in result["images_per_s"].items():
        print(f"generate_synth at {size:>3} px, 1 worker: {r:8.1f} images/s")
    for r in result["imagenet"]:
        print(f"ImageNet sizes, {r['workers']} worker(s): {r['images_per_s']:8.1f} images/s over {r['images']} images; "
              f"mean {r['mean_w']:.0f} x {r['mean_h']:.0f} px, sides {r['min_side']}-{r['max_side']}, "
              f"{r['mean_kb']:.0f} kB a file")


if __name__ == "__main__":
    main()
