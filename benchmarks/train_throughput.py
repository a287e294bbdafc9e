"""Training throughput of the paper's network against the classic PyTorch example.

In one process, on synthetic tensors (batch 128, 224 px, 1000 classes):

* baseline: torchvision ``alexnet()`` trained as the classic PyTorch ImageNet
  example does it (fp32, NCHW, ``torch.optim.SGD``, cross-entropy), run first,
  with the C library's default allocator;
* on a CPU, the same baseline again after :func:`keep_freed_memory` (what
  ``alexnet train`` does on a CPU), so the allocator's share of the speed-up
  can be read off: the ratio against it is the speed-up from everything else;
* ours: ``alexnet`` (two towers, per-tower LRN through the fused CPU kernel)
  with each candidate setting (fp32/bf16 x NCHW/channels_last; ``--compile``
  adds torch.compile), the best one reported;
* the machine's matrix-multiply rate in fp32 and bf16, measured here too, so
  the achieved GFLOP/s of training can be read as a fraction of it.

Training FLOPs per image are counted as 3 x 2 x multiply-adds (forward, and a
backward twice the forward), with multiply-adds from ``alexnet info``.

    python benchmarks/train_throughput.py [--steps 5] [--warmup 3] [--batch 128] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

from alexnet import models
from alexnet.engine.allocator import keep_freed_memory
from alexnet.engine.optim import make_optimizer
from alexnet.models import lrn_kernel
from alexnet.models.summary import summarize


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(dtype, device, n=4096, reps=5) -> float:
    """GFLOP/s of an n x n matrix product in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def train_rate(model, batch, device, precision="fp32", channels_last=False, steps=5, warmup=3, rule="torch") -> float:
    """Images/s of full training steps (forward, backward, SGD update), from the median step.

    The warm-up steps also let a kept heap (``keep_freed_memory``) reach its
    steady state; the median keeps one step slowed by a shared machine from
    deciding the figure.
    """
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), rule, 0.01, 0.9, 5e-4)
    x = torch.randn(batch, 3, 224, 224, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    model.train()

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    macs = summarize(models.create("alexnet"))["macs"]
    flops_per_image = 3 * 2 * macs
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} timed steps")

    mm32 = matmul_rate(torch.float32, device)
    mm16 = matmul_rate(torch.bfloat16, device)
    print(f"matmul 4096^3: fp32 {mm32:.0f} GFLOP/s, bf16 {mm16:.0f} GFLOP/s")

    base = train_rate(torchvision.models.alexnet(), args.batch, device, "fp32", False, args.steps, args.warmup)
    print(f"baseline torchvision alexnet, fp32 NCHW, torch SGD: {base:.1f} img/s")
    base_tuned = None
    if device.type == "cpu" and keep_freed_memory():
        base_tuned = train_rate(torchvision.models.alexnet(), args.batch, device, "fp32", False, args.steps, args.warmup)
        print(f"baseline again, freed memory kept (alexnet.engine.allocator): {base_tuned:.1f} img/s")
    fused = device.type == "cpu" and lrn_kernel.get() is not None
    print(f"LRN: {'fused CPU kernel' if fused else 'PyTorch ops'}")

    results = {}
    candidates = [(p, cl, False) for p in ("fp32", "bf16") for cl in (False, True)]
    if args.compile:
        candidates += [("bf16", True, True), ("fp32", True, True)]
    for precision, cl, comp in candidates:
        m = models.create("alexnet")
        if comp:
            m = torch.compile(m)
        name = f"{precision}{' channels_last' if cl else ' NCHW'}{' compile' if comp else ''}"
        rate = train_rate(m, args.batch, device, precision, cl, args.steps, args.warmup, rule="paper")
        results[name] = rate
        print(f"ours alexnet, {name}: {rate:.1f} img/s  ({rate / base:.2f}x baseline)")

    best = max(results, key=results.get)
    rate = results[best]
    gflops = rate * flops_per_image / 1e9
    summary = {
        "device": str(device),
        "lrn": "fused" if fused else "torch",
        "baseline_img_s": base,
        "baseline_same_allocator_img_s": base_tuned,
        "speedup_same_allocator": rate / base_tuned if base_tuned else None,
        "best_setting": best,
        "ours_img_s": rate,
        "speedup": rate / base,
        "achieved_gflops": gflops,
        "matmul_fp32_gflops": mm32,
        "matmul_bf16_gflops": mm16,
        "fraction_of_bf16_matmul": gflops / mm16,
        "fraction_of_fp32_matmul": gflops / mm32,
        "all": results,
    }
    same = f" ({rate / base_tuned:.2f}x it with the same allocator)" if base_tuned else ""
    print(f"best: {best}, {rate:.1f} img/s = {rate / base:.2f}x the classic example{same}; "
          f"{gflops:.0f} GFLOP/s = {gflops / mm16:.2f} of bf16 matmul, {gflops / mm32:.2f} of fp32 matmul")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
