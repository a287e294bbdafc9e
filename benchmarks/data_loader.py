"""Data pipeline throughput: ``prepare``, and our loader against the classic PyTorch ImageNet example.

On a generated set of ImageNet-like JPEGs (default 2,000 in 10 classes,
500 x 375 landscape and 375 x 500 portrait, quality 90, about 110 KB each
like ILSVRC-2012's training images), in one run:

(a) ``alexnet.data.prepare`` with every core: images/s;
(b) training-pipeline images/s over one epoch, 2 loader workers each,
    batch 128, the main process only consuming batches:

    * ours: ``make_loader(..., train=True)``: the prepared 256 x 256 JPEG
      shards, batched libjpeg-turbo decode, random 224 crop + flip + PCA
      lighting + mean-image subtraction, float32 batches;
    * classic: the PyTorch ImageNet example's pipeline, torchvision
      ``ImageFolder`` on the source JPEGs with PIL ``Resize(256)``,
      ``RandomCrop(224)``, ``RandomHorizontalFlip()``, ``ToTensor()``,
      ``Normalize``; ``shuffle=True``.

Both rates count the batches after the first (worker start-up and the
first decode excluded; the rate with start-up is printed too), over
``--epochs`` epochs; the two pipelines run alternately ``--repeats`` times
and the best run of each is kept. The ratio ours/classic is printed; the
target is >= 3x.

``--decode cpu device`` measures instead where our loader decodes, the
loader alone on the same shards in the same run (rates counted as above,
the device synchronised before the clock stops):

    * ``cpu``: the worker processes decode and augment (libjpeg-turbo), the
      batches copied to ``--device`` from pinned memory on a side stream;
    * ``device``: the workers only read the JPEG bytes; decoding (nvJPEG on
      a GPU, batched) and augmentation run on ``--device`` in the main
      process, prefetched on a side stream.

``--device`` defaults to CUDA when there is one. On a CPU, ``device`` is the
bytes-only path decoding in the main process (the tests' path): it runs,
and is not expected to be faster than the workers.

    python benchmarks/data_loader.py [--images 2000] [--workers 2] [--batch 128] [--epochs 1]
                                     [--repeats 2] [--dir DIR] [--json]
                                     [--decode {cpu,device} ...] [--device auto|cpu|cuda]

``--dir`` keeps the generated images and prepared shards for a rerun.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alexnet.data import make_loader, prepare
from alexnet.data.synth import CLASSES, draw, image_rng

SIZES = ((375, 500), (500, 375), (333, 500))  # (height, width): landscape, portrait, 3:2
NOISE = 26  # std of the added pixel noise, in 0-255 units


def _write_one(job) -> int:
    from PIL import Image

    path, k, i = job
    h, w = SIZES[i % len(SIZES)]
    rng = image_rng(1234, "train", k, i)
    img = draw(CLASSES[k], rng, h, w).astype(np.int16)
    # photo-like fine detail, so the files are ImageNet-sized (about 110 KB) rather than smooth and small
    img += rng.normal(0, NOISE, img.shape).astype(np.int16)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def make_images(root: Path, n: int, workers: int) -> dict:
    marker = root / "done.json"
    if marker.is_file() and json.loads(marker.read_text()).get("key") == [n, NOISE]:
        return json.loads(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for j in range(n):
        k, i = j % len(CLASSES), j // len(CLASSES)
        folder = root / "train" / CLASSES[k]
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:05d}.jpg", k, i))
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        sizes = pool.map(_write_one, jobs, chunksize=16)
    info = {"key": [n, NOISE], "mean_kb": float(np.mean(sizes)) / 1024, "seconds": time.perf_counter() - t0}
    marker.write_text(json.dumps(info))
    return info


def rate(loader, epochs: int, set_epoch=None, sync=lambda: None) -> dict:
    """Images/s over the batches after the first, and over everything (start-up included); ``sync`` waits
    for the device before a clock is read."""
    t_start = time.perf_counter()
    total = after_first = 0
    t_first = None
    for e in range(epochs):
        if set_epoch is not None:
            set_epoch(e)
        for images, labels in loader:
            n = labels.shape[0]
            total += n
            if t_first is None:
                sync()
                t_first = time.perf_counter()
            else:
                after_first += n
            assert images.dtype == torch.float32 and images.shape[-1] == 224
    sync()
    t_end = time.perf_counter()
    return {"images": total, "seconds": t_end - t_start, "images_per_s": after_first / (t_end - t_first),
            "images_per_s_with_startup": total / (t_end - t_start)}


def classic_loader(train_dir: Path, batch: int, workers: int):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    ds = ImageFolder(str(train_dir), transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2, help="loader processes for each pipeline")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each pipeline; the best is reported")
    ap.add_argument("--dir", default=None, help="keep the generated images and shards here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--decode", nargs="+", choices=("cpu", "device"), default=None,
                    help="measure our loader alone with decoding in the worker processes (cpu) and/or on --device "
                         "in the main process (device), instead of ours against the classic pipeline")
    ap.add_argument("--device", default="auto", help="where the batches go for --decode: auto (cuda if any) | cpu | cuda")
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.set_num_threads(1)  # the main process only consumes batches

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        gen = make_images(base / "src", args.images, cores)
        out = base / "prepared"
        shutil.rmtree(out, ignore_errors=True)
        prep = prepare(base / "src", out, progress=False)

        if args.decode:
            return report_decode(args, device, decode_rates(out, args, device), gen, prep, cores)
        runs_ours, runs_classic = [], []
        for _ in range(args.repeats):  # alternate, and keep the best of each: less at the mercy of other load
            ours = make_loader(out, "train", args.batch, train=True, num_workers=args.workers)
            runs_ours.append(rate(ours, args.epochs, ours.set_epoch))
            ours.close()
            del ours
            runs_classic.append(rate(classic_loader(base / "src" / "train", args.batch, args.workers), args.epochs))
        r_ours = max(runs_ours, key=lambda r: r["images_per_s"])
        r_classic = max(runs_classic, key=lambda r: r["images_per_s"])
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}",
        "images": args.images, "repeats": args.repeats, "mean_source_kb": round(gen["mean_kb"], 1),
        "workers": args.workers, "batch": args.batch,
        "prepare_images_per_s": round(prep["images_per_s"], 1), "prepare_workers": prep["workers"],
        "ours_images_per_s": round(r_ours["images_per_s"], 1), "classic_images_per_s": round(r_classic["images_per_s"], 1),
        "ratio": round(r_ours["images_per_s"] / r_classic["images_per_s"], 2),
        "ours_with_startup": round(r_ours["images_per_s_with_startup"], 1),
        "classic_with_startup": round(r_classic["images_per_s_with_startup"], 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.images} JPEGs of about 500x375 ({result['mean_source_kb']} KB mean), {result['machine']}")
    print(f"prepare ({prep['workers']} processes):           {result['prepare_images_per_s']:8.1f} images/s")
    print(f"train pipeline, {args.workers} workers, batch {args.batch}:")
    print(f"  ours (shards, decode_jpeg, fused): {result['ours_images_per_s']:8.1f} images/s"
          f"  ({result['ours_with_startup']:.1f} with start-up)")
    print(f"  classic (ImageFolder + PIL):       {result['classic_images_per_s']:8.1f} images/s"
          f"  ({result['classic_with_startup']:.1f} with start-up)")
    print(f"  ratio ours / classic:              {result['ratio']:8.2f}x   (target >= 3x)")


def decode_rates(prepared: Path, args, device: torch.device) -> dict:
    """Best images/s of our loader alone for each decode location of ``args.decode``, run alternately."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = {where: [] for where in args.decode}
    for _ in range(args.repeats):
        for where in args.decode:
            loader = make_loader(prepared, "train", args.batch, train=True, num_workers=args.workers, device=device,
                                 decode="workers" if where == "cpu" else "main")
            runs[where].append(rate(loader, args.epochs, loader.set_epoch, sync))
            loader.close()
            del loader
    return {where: max(r, key=lambda x: x["images_per_s"]) for where, r in runs.items()}


def report_decode(args, device: torch.device, rates: dict, gen: dict, prep: dict, cores: int) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}",
        "device": f"{device} ({name})", "images": args.images, "repeats": args.repeats, "workers": args.workers,
        "batch": args.batch, "mean_source_kb": round(gen["mean_kb"], 1),
        "prepare_images_per_s": round(prep["images_per_s"], 1), "prepare_workers": prep["workers"],
    }
    for where, r in rates.items():
        result[f"decode_{where}_images_per_s"] = round(r["images_per_s"], 1)
        result[f"decode_{where}_with_startup"] = round(r["images_per_s_with_startup"], 1)
    if len(rates) == 2:
        result["ratio_device_over_cpu"] = round(rates["device"]["images_per_s"] / rates["cpu"]["images_per_s"], 2)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.images} JPEGs of about 500x375 ({result['mean_source_kb']} KB mean), {result['machine']}")
    print(f"prepare ({prep['workers']} processes):           {result['prepare_images_per_s']:8.1f} images/s")
    print(f"our loader alone, batches on {result['device']}, {args.workers} workers, batch {args.batch}:")
    labels = {"cpu": "decode in the workers (cpu):", "device": f"decode on {device.type} (device):"}
    for where, r in rates.items():
        print(f"  {labels[where]:33s}{r['images_per_s']:8.1f} images/s  ({r['images_per_s_with_startup']:.1f} with start-up)")
    if "ratio_device_over_cpu" in result:
        print(f"  ratio device / cpu:              {result['ratio_device_over_cpu']:8.2f}x")


if __name__ == "__main__":
    main()
