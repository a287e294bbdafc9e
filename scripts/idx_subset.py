"""Write the first N training images of an IDX dataset (Fashion-MNIST, MNIST) as a smaller IDX dataset.

The test files are copied whole, so a subset is scored on the same test set.
Used for studies that need many short runs (``alexnet ablate``) and for the
one-minute CI test of the Fashion-MNIST recipe.

    python scripts/idx_subset.py /usr/share/datasets/fashion-mnist fm-15k --train 15000
    alexnet prepare fm-15k fm-15k-prepared
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path


def _read(path: Path) -> bytes:
    return gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()


def _first(data: bytes, n: int) -> bytes:
    """The IDX header with its first dimension set to ``n``, then the first ``n`` records."""
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if n > dims[0]:
        raise ValueError(f"asked for {n} records, the file holds {dims[0]}")
    record = 1
    for d in dims[1:]:
        record *= d
    head = data[:4] + n.to_bytes(4, "big") + data[8:4 + 4 * ndim]
    return head + data[4 + 4 * ndim:4 + 4 * ndim + n * record]


def write_subset(src: str | Path, out: str | Path, train: int) -> Path:
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = sorted(src.glob(f"train-{kind}*"))
        if not found:
            raise FileNotFoundError(f"{src}: no train-{kind} file")
        (out / f"train-{kind}").write_bytes(_first(_read(found[0]), train))
        test = sorted(src.glob(f"t10k-{kind}*"))
        if not test:
            raise FileNotFoundError(f"{src}: no t10k-{kind} file")
        shutil.copyfile(test[0], out / test[0].name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="folder with train-/t10k- IDX files (gzipped or not)")
    ap.add_argument("out", help="folder to write")
    ap.add_argument("--train", type=int, required=True, help="training images to keep (the first N)")
    args = ap.parse_args()
    try:
        write_subset(args.src, args.out, args.train)
    except (OSError, ValueError) as e:
        print(f"idx_subset: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
