"""How fast the loader hands ``data.decode: cuda`` batches (JPEG bytes, not pixels) to the main process.

In one run, on the CPU, the same ``make_loader(..., decode="main")`` over the same 256 px JPEG shards, the
decode itself stubbed (the main process only takes the batch apart into the per-image byte views nvJPEG is
given), two worker processes, batch 256:

* per-image: each worker hands over one tensor per JPEG (what the loader did before): 256 shared-memory
  handles per batch, each rebuilt in the main process;
* packed: one uint8 tensor with the batch's bytes and one of offsets (:func:`alexnet.data.loader.unpack`).

The two run alternately ``--repeats`` times; the best of each counts, over the batches after the first of
each epoch. Prints images/s of both and their ratio (the target: at least 5x). The shards are few real
images listed many times (the index tiled): the hand-over cost does not depend on the pixels.

    python benchmarks/loader_handover.py [--images 256] [--tile 20] [--batch 256] [--workers 2] [--epochs 2]
                                         [--repeats 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alexnet.data import generate_synth, make_loader, prepare
from alexnet.data import loader as loader_mod


class PerImage(loader_mod._Batches):
    """The loader's worker side as it was: one tensor per JPEG."""

    def read(self, ids, shared=False):
        (data, offsets), labels = super().read(ids, shared=False)
        return [torch.from_numpy(np.array(v.numpy())) for v in loader_mod.unpack((data, offsets))], labels


def tile(prep: Path, out: Path, factor: int) -> Path:
    """``prep`` with its train index listed ``factor`` times (shards hard-linked)."""
    out.mkdir()
    for f in prep.iterdir():
        if f.name.endswith(".tar") or f.name == "stats.npz":
            os.link(f, out / f.name)
    index = np.load(prep / "train.index.npy")
    np.save(out / "train.index.npy", np.tile(index, (factor, 1)))
    meta = json.loads((prep / "meta.json").read_text())
    meta["splits"] = {"train": len(index) * factor}
    meta["shards"] = {"train": meta["shards"]["train"]}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def rate(loader, epochs: int) -> float:
    """Images/s of the batches after each epoch's first, the main process only taking each batch apart."""
    images, seconds = 0, 0.0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        t = None
        for payload, labels, _ in loader._dataloader():
            views = loader_mod.unpack(payload)  # what the main process gives nvJPEG (a list passes through)
            assert len(views) == len(labels)
            if t is None:
                t = time.perf_counter()
            else:
                images += len(views)
        seconds += time.perf_counter() - t
    return images / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256, help="distinct JPEGs generated (default 256)")
    ap.add_argument("--tile", type=int, default=20, help="times the index lists each (default 20)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = Path(tempfile.mkdtemp(prefix="alexnet-handover-"))
    try:
        per_class = max(1, args.images // 4)
        generate_synth(base / "raw", classes=4, train_per_class=per_class, val_per_class=0, size=256, progress=False)
        prepare(base / "raw", base / "prep", workers=max(1, min(4, os.cpu_count() or 1)), progress=False)
        data = tile(base / "prep", base / "tiled", args.tile)
        kb = np.load(data / "train.index.npy")[:, 2].mean() / 1024
        runs: dict[str, list[float]] = {"per-image": [], "packed": []}
        for _ in range(args.repeats):
            for name in runs:
                loader = make_loader(data, "train", args.batch, num_workers=args.workers, decode="main")
                if name == "per-image":
                    loader._batches.__class__ = PerImage
                runs[name].append(rate(loader, args.epochs))
                loader.close()
        best = {k: max(v) for k, v in runs.items()}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ratio = best["packed"] / best["per-image"]
    print(f"{args.images} JPEGs of 256 px ({kb:.1f} KB mean) listed {args.tile}x, batch {args.batch}, "
          f"{args.workers} workers, {os.cpu_count()} cores, torch {torch.__version__}:")
    print(f"  per-image tensors (before):  {best['per-image']:9.0f} images/s")
    print(f"  packed batch (now):          {best['packed']:9.0f} images/s")
    print(f"  ratio packed / per-image:    {ratio:9.1f}x   (target >= 5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_image_img_s": best["per-image"], "packed_img_s": best["packed"], "ratio": ratio,
                       "batch": args.batch, "workers": args.workers, "mean_kb": kb}, f, indent=1)


if __name__ == "__main__":
    main()
