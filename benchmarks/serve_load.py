"""``alexnet serve`` under load, beside ``alexnet predict`` on the same images in one process.

In one run:

(a) offline: ``alexnet.engine.predict.predict`` (what ``alexnet predict``
    runs) over the images, batch ``--max-batch``, in this process: decode,
    preprocess and forward pass one after the other; images/s, measured before
    and after the load (the best is kept, so the ratio is not flattered);
(b) served: ``alexnet serve CKPT --port 0`` in a subprocess, driven from this
    process by ``C`` concurrent clients (httpx, asyncio; each posts one JPEG as
    the raw body, waits for the answer, posts the next) for ``--seconds``
    after a warm-up of 3 s, for each C of ``--clients``: requests/s, p50 and
    p99 latency, errors (any answer but 200, any failed connection), and the
    mean forward-pass batch the server formed (from /healthz).

The ratio served/offline at the largest C is printed; the target is >= 0.7.
Client and server share the machine (and its cores) with the offline pass
not running meanwhile; the client's own CPU time is printed.

The checkpoint is ``--ckpt`` or, by default, the paper's full-size
``alexnet`` (1,000 classes, 224 px, randomly initialised: speed does not
depend on the weights) saved as a checkpoint with the paper's eval transform.
The images are ``--images`` generated 500 x 375 JPEGs (quality 90).

    python benchmarks/serve_load.py [--ckpt CKPT] [--images 64] [--seconds 20] [--clients 1 8 32]
                                    [--max-batch 32] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def machine() -> str:
    """CPU model, cores and the bf16/AMX flags, from lscpu and /proc/cpuinfo."""
    name = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        name = m.group(1).strip() if m else name
    except (OSError, subprocess.SubprocessError):
        pass
    flags = set()
    try:
        flags = set(re.search(r"^flags\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    except (OSError, AttributeError):
        pass
    has = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(has) or 'none of avx2/avx512/amx'}, torch {torch.__version__}"


def full_size_checkpoint(path: Path) -> Path:
    from alexnet import models
    from alexnet.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    m = models.create("alexnet", num_classes=1000)
    classes = [f"n{i:08d}" for i in range(1000)]
    stats = {"mean_image": np.full((256, 256, 3), 118.0, np.float32), "mean_rgb": np.array([123.7, 116.3, 103.5], np.float32)}
    save_checkpoint(path, make_checkpoint("alexnet", {"num_classes": 1000}, m.state_dict(), classes, None,
                                          {"resize": 256, "crop": 224, "mean": "image", "scale": 1.0, "normalize": None,
                                           "channels": 3}, stats))
    return path


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` 500 x 375 JPEGs: smooth random colour fields with noise (about 40-80 KB each)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        arr = np.clip(np.asarray(low, np.int16) + rng.integers(-20, 21, (375, 500, 3)), 0, 255).astype(np.uint8)
        p = folder / f"img_{i:03d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        out.append(p)
    return out


def offline_rate(ckpt: Path, images: list[Path], batch: int, min_seconds: float = 8.0) -> float:
    """Images/s of ``engine.predict.predict`` over ``images`` (repeated for at least ``min_seconds``)."""
    from alexnet.engine.inference import Checkpoint
    from alexnet.engine.predict import predict

    ck = Checkpoint.load(ckpt, "cpu")
    predict(ck, images[:batch], batch_size=batch, device="cpu")  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        predict(ck, images, batch_size=batch, device="cpu")
        done += len(images)
    return done / (time.perf_counter() - start)


def start_server(ckpt: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "alexnet.cli.main", "serve", str(ckpt), "--port", "0",
                             "--device", "cpu", "--no-access-log", "--max-batch", str(max_batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    m = re.search(r"(http://[\d.]+:\d+)/", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, m.group(1)


async def drive(url: str, payloads: list[bytes], clients: int, seconds: float, warmup: float = 3.0) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    t_start = time.perf_counter() + warmup
    t_end = t_start + seconds
    headers = {"content-type": "image/jpeg"}

    async def one(c: httpx.AsyncClient, k: int) -> None:
        nonlocal errors
        i = k
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            try:
                r = await c.post("/v1/predict", content=payloads[i % len(payloads)], headers=headers)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            t1 = time.perf_counter()
            if t_start <= t0 and t1 <= t_end:  # requests wholly inside the window
                lat.append(t1 - t0)
                errors += not ok
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        h0 = (await c.get("/healthz")).json()
        cpu0 = time.process_time()
        await asyncio.gather(*(one(c, k) for k in range(clients)))
        cpu = time.process_time() - cpu0
        h1 = (await c.get("/healthz")).json()
    a = np.array(lat) * 1000
    batches = h1["batches"] - h0["batches"]
    return {"clients": clients, "requests_per_s": len(lat) / seconds, "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
            "p99_ms": float(np.percentile(a, 99)) if len(a) else None, "errors": errors, "requests": len(lat),
            "mean_batch": (h1["inputs"] - h0["inputs"]) / batches if batches else 0.0,
            "client_cpu_s": cpu}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", help="checkpoint to serve (default: a full-size alexnet, randomly initialised)")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.ckpt) if args.ckpt else full_size_checkpoint(tmp / "alexnet.ckpt")
        images = make_images(tmp / "images", args.images)
        payloads = [q.read_bytes() for q in images]
        info = {"machine": machine(), "checkpoint": str(args.ckpt or "full-size alexnet, random weights, 224 px"),
                "images": f"{len(images)} JPEGs 500x375, {np.mean([len(b) for b in payloads]) / 1024:.0f} KB mean",
                "max_batch": args.max_batch, "seconds": args.seconds}
        print(f"machine: {info['machine']}\ncheckpoint: {info['checkpoint']}; images: {info['images']}", flush=True)
        print("client and server share this machine's cores; the offline pass runs while the server is idle", flush=True)
        offline = [offline_rate(ckpt, images, args.max_batch)]
        print(f"offline (engine.predict, batch {args.max_batch}): {offline[0]:.1f} images/s", flush=True)
        proc, url = start_server(ckpt, args.max_batch)
        try:
            rows = []
            for c in args.clients:
                rows.append(asyncio.run(drive(url, payloads, c, args.seconds)))
                r = rows[-1]
                print(f"  {c:>3} clients: {r['requests_per_s']:.1f} req/s, p50 {r['p50_ms']:.0f} ms, "
                      f"p99 {r['p99_ms']:.0f} ms, errors {r['errors']}, mean batch {r['mean_batch']:.1f}, "
                      f"client CPU {r['client_cpu_s']:.1f} s of {args.seconds + 3:g} s", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        offline.append(offline_rate(ckpt, images, args.max_batch))
        print(f"offline again after the load: {offline[1]:.1f} images/s", flush=True)

    best = max(offline)
    ratio = rows[-1]["requests_per_s"] / best
    print()
    print("| clients | requests/s | p50 ms | p99 ms | errors | mean batch | served / offline |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | "
              f"{r['mean_batch']:.1f} | {r['requests_per_s'] / best:.2f} |")
    print(f"| offline `alexnet predict`, batch {args.max_batch} | {best:.1f} images/s (runs: "
          f"{', '.join(f'{o:.1f}' for o in offline)}) | | | | | 1.00 |")
    print(f"\nserved/offline at {rows[-1]['clients']} clients: {ratio:.2f} (target >= 0.7): "
          f"{'met' if ratio >= 0.7 else 'NOT met'}")
    if args.json:
        print(json.dumps({**info, "offline_images_per_s": offline, "rows": rows, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
