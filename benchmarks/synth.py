"""How fast the built-in dataset is generated: images per second at 32 px and at 256 px, one process.

    python benchmarks/synth.py [--images 1400] [--json]

(The test suite used to assert a rate; speed is measured here instead, on an
idle machine: about 1,500 images/s at 32 px on one core.)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from alexnet.data import generate_synth


def rate(size: int, images: int) -> float:
    per_class = max(1, images // 10)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_synth(Path(tmp) / "s", classes=10, train_per_class=per_class, val_per_class=0, size=size, progress=False)
        return 10 * per_class / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1400, help="images per size (default 1400)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    result = {"machine": platform.processor() or platform.machine(),
              "images_per_s": {str(size): rate(size, args.images if size <= 64 else args.images // 10) for size in (32, 256)}}
    if args.json:
        print(json.dumps(result))
    else:
        for size, r in result["images_per_s"].items():
            print(f"generate_synth at {size:>3} px: {r:8.1f} images/s")


if __name__ == "__main__":
    main()
