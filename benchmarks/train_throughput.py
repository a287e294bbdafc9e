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
  the achieved GFLOP/s of training can be read as a fraction of it;
* on CUDA also torchvision ``alexnet()`` with bf16 autocast and channels_last
  (what the classic example gives with today's two switches), and ours in
  bf16 channels_last (LRN through the fused Triton kernel), each as a ratio to
  the classic example and ours to torchvision's bf16 too;
* with ``--e2e PREPARED``: ``alexnet train --config paper`` end to end on
  prepared shards (JPEG decoding, augmentation, the step), images/s over its
  epochs after the first, and as a fraction of the model-only rate of ours.

Training FLOPs per image are counted as 3 x 2 x multiply-adds (forward, and a
backward twice the forward), with multiply-adds from ``alexnet info``.

    python benchmarks/train_throughput.py [--steps 5] [--warmup 3] [--batch 128] [--device cpu|cuda]
        [--e2e PREPARED [--e2e-epochs 3] [--e2e-workers N] [--set KEY=VALUE ...]] [--no-model] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from alexnet import models
from alexnet.engine.allocator import keep_freed_memory
from alexnet.engine.optim import make_optimizer
from alexnet.kernels import dispatch, lrn_cpu
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


def e2e_rate(prepared: str, device: torch.device, batch: int, epochs: int, workers: int, config: str,
             sets: list[str]) -> dict:
    """``alexnet train`` end to end on prepared shards, in its own process: images/s of its epochs.

    The trainer times each epoch's steps (loading, decoding, augmenting and training; not the validation
    or the checkpoint after it); the first epoch also pays for starting the loader processes, cuDNN's
    benchmarking and compiling kernels, so the figure is over the epochs after it.
    """
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        run_dir = Path(tmp) / "run"
        overrides = [f"data.batch_size={batch}", f"run.epochs={epochs}", f"data.workers={workers}",
                     "run.log_every=10", "run.checkpoint_minutes=0", *sets]
        cmd = [sys.executable, "-m", "alexnet.cli.main", "train", "--config", config, "--data", prepared,
               "--out", str(run_dir), "--device", str(device), "--no-progress"]
        cmd += [a for o in overrides for a in ("--set", o)]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            raise SystemExit(f"end-to-end run failed ({' '.join(cmd)}):\n{run.stderr[-3000:]}")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in records if r.get("kind") == "epoch"]
    steady = rows[1:] or rows
    images = sum(r["images_per_s"] * r["epoch_time_s"] for r in steady)
    seconds = sum(r["epoch_time_s"] for r in steady)
    return {"config": config, "overrides": overrides, "epochs": len(rows),
            "img_s": images / seconds, "first_epoch_img_s": rows[0]["images_per_s"],
            "epoch_img_s": [r["images_per_s"] for r in rows], "train_loss": [r["train_loss"] for r in rows],
            "wall_s": wall}


def lrn_name(device: torch.device) -> str:
    """Which LRN the runs above used on ``device``."""
    if device.type == "cpu":
        return "fused CPU kernel" if lrn_cpu.get() is not None else "PyTorch ops"
    if dispatch.triton_wanted():
        return "Triton kernel"
    return f"PyTorch ops ({dispatch._triton_state.get('error', 'ALEXNET_LRN_KERNEL=torch')})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    ap.add_argument("--matmul-size", type=int, default=4096, help="side of the matrices of the matmul rate")
    ap.add_argument("--e2e", metavar="PREPARED", default=None,
                    help="also time `alexnet train` end to end on this prepared folder (256 px JPEG shards)")
    ap.add_argument("--e2e-config", default="paper", help="recipe of the end-to-end run (default paper)")
    ap.add_argument("--e2e-epochs", type=int, default=3, help="epochs of the end-to-end run (the first is not counted)")
    ap.add_argument("--e2e-workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)),
                    help="loader processes of the end-to-end run (default: cores - 2, at most 14)")
    ap.add_argument("--set", dest="e2e_sets", action="append", default=[], metavar="KEY=VALUE",
                    help="more overrides for the end-to-end run (its batch is --batch)")
    ap.add_argument("--no-model", action="store_true", help="only the end-to-end run")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    summary: dict = {"device": str(device), "batch": args.batch}
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(device)
    if not args.no_model:
        summary.update(model_only(args, device))
    if args.e2e:
        e2e = e2e_rate(args.e2e, device, args.batch, args.e2e_epochs, args.e2e_workers, args.e2e_config,
                       args.e2e_sets)
        summary["e2e"] = e2e
        ours = summary.get("ours_bf16_channels_last_img_s")
        frac = f" = {e2e['img_s'] / ours:.2f} of ours model-only (bf16 channels_last)" if ours else ""
        print(f"end to end, alexnet train --config {args.e2e_config}, batch {args.batch}, {args.e2e_workers} "
              f"loader processes: {e2e['img_s']:.1f} img/s over epochs 2-{e2e['epochs']} (first epoch "
              f"{e2e['first_epoch_img_s']:.1f}){frac}")
        if ours:
            e2e["fraction_of_model_only"] = e2e["img_s"] / ours
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


def model_only(args, device: torch.device) -> dict:
    """The model-only figures (synthetic tensors), printed as they come; returns the summary's fields."""
    macs = summarize(models.create("alexnet"))["macs"]
    flops_per_image = 3 * 2 * macs
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} timed steps")

    n = args.matmul_size
    mm32 = matmul_rate(torch.float32, device, n)
    mm16 = matmul_rate(torch.bfloat16, device, n)
    print(f"matmul {n}^3: fp32 {mm32:.0f} GFLOP/s, bf16 {mm16:.0f} GFLOP/s")

    base = train_rate(torchvision.models.alexnet(), args.batch, device, "fp32", False, args.steps, args.warmup)
    print(f"baseline torchvision alexnet, fp32 NCHW, torch SGD: {base:.1f} img/s")
    base_tuned = None
    if device.type == "cpu" and keep_freed_memory():
        base_tuned = train_rate(torchvision.models.alexnet(), args.batch, device, "fp32", False, args.steps, args.warmup)
        print(f"baseline again, freed memory kept (alexnet.engine.allocator): {base_tuned:.1f} img/s")
    tv_bf16 = None
    if device.type == "cuda":
        tv_bf16 = train_rate(torchvision.models.alexnet(), args.batch, device, "bf16", True, args.steps, args.warmup)
        print(f"torchvision alexnet, bf16 autocast channels_last, torch SGD: {tv_bf16:.1f} img/s "
              f"({tv_bf16 / base:.2f}x baseline)")

    if device.type == "cpu":
        lrn_cpu.get()  # built (once) before the timed steps
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
    lrn_used = lrn_name(device)
    print(f"LRN: {lrn_used}")

    best = max(results, key=results.get)
    rate = results[best]
    gflops = rate * flops_per_image / 1e9
    ours_bf16 = results["bf16 channels_last"]
    summary = {
        "lrn": lrn_used,
        "baseline_img_s": base,
        "torchvision_bf16_channels_last_img_s": tv_bf16,
        "ours_bf16_channels_last_img_s": ours_bf16,
        "ours_bf16_channels_last_vs_baseline": ours_bf16 / base,
        "ours_bf16_channels_last_vs_torchvision_bf16": ours_bf16 / tv_bf16 if tv_bf16 else None,
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
    if tv_bf16:
        print(f"ours bf16 channels_last: {ours_bf16:.1f} img/s = {ours_bf16 / base:.2f}x the classic example, "
              f"{ours_bf16 / tv_bf16:.2f}x torchvision bf16 channels_last")
    return summary


if __name__ == "__main__":
    main()
