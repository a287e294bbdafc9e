"""The GPU check's input-pipeline measurements, one subcommand each (each prints a line and writes JSON):

* ``decode``: JPEG decode alone, 256 px images at quality 90 made in memory: nvJPEG on the GPU (batched,
  ``--batches`` batches after two of warm-up, the device synchronised) and libjpeg-turbo on one CPU thread
  (batched, as a loader worker decodes), with the CPU rate times the cores as what the workers could reach;
* ``tile``: a prepared folder whose train split lists each sample N times (shards hard-linked), so that one
  epoch is long enough for a steady-state window without generating more images;
* ``loader``: the loader alone on a prepared folder, batches delivered on ``--device``, for each of
  ``--decode`` (``main``: the main process decodes, nvJPEG on a GPU; ``workers``: the worker processes
  decode), ``--seconds`` each after ``--warmup`` batches;
* ``e2e``: ``alexnet train`` on a prepared folder (one long epoch, no validation split in a tiled folder, no
  checkpoint until the epoch ends) and its images/s over a steady-state window read from its own metrics.jsonl:
  from the first step line ``--warmup-s`` seconds after the first, until the window holds ``--steps`` steps
  or ``--window-s`` seconds; then the run is stopped. The run folder (``--run``) outlives it, and the JSON is
  rewritten at every poll, so a stage cut short still leaves its figure so far. The JSON names the decoder
  and the LRN kernel the run actually used (from its warnings).

    python benchmarks/gpu_pipeline.py decode [--device cuda] [--batch 256] [--batches 20] --json F
    python benchmarks/gpu_pipeline.py tile PREPARED OUT --samples N
    python benchmarks/gpu_pipeline.py loader PREPARED [--device cuda] [--decode main workers] [--seconds 10] --json F
    python benchmarks/gpu_pipeline.py e2e PREPARED --run DIR [--device cuda] [--decode auto] [--batch 256]
        [--workers N] [--steps 1000] [--window-s 60] [--warmup-s 15] [--limit-s 90] --json F
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_json(path, data) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)


# ---------------------------------------------------------------- decode
def decode_cmd(args) -> None:
    import torch
    from PIL import Image

    from alexnet.data.shards import decode_jpegs, device_decode_problem, jpeg_decoder
    from alexnet.data.synth import draw_class, image_rng

    jpegs = []
    for i in range(args.distinct):
        img = draw_class(i % 10, image_rng(7, "train", i % 10, i), 256)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        jpegs.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    batch = [jpegs[i % len(jpegs)] for i in range(args.batch)]
    out = {"batch": args.batch, "mean_kb": float(np.mean([len(j) for j in jpegs]) / 1024),
           "decoder": jpeg_decoder().name, "cores": os.cpu_count()}

    torch.set_num_threads(1)
    decode_jpegs(batch, 3)
    t = time.perf_counter()
    n = max(1, args.batches // 4)
    for _ in range(n):
        decode_jpegs(batch, 3)
    cpu = n * args.batch / (time.perf_counter() - t)
    out.update(cpu_one_thread_img_s=cpu, cpu_all_cores_img_s=cpu * (os.cpu_count() or 1))
    line = f"JPEG decode, 256 px, batch {args.batch}: libjpeg-turbo one thread {cpu:,.0f} img/s " \
           f"(x {os.cpu_count()} cores = {cpu * (os.cpu_count() or 1):,.0f})"
    device = torch.device(args.device)
    if device.type == "cuda":
        problem = device_decode_problem(device)
        out["gpu_problem"] = problem
        if problem is None:
            for _ in range(2):
                decode_jpegs(batch, 3, device)
            torch.cuda.synchronize(device)
            t = time.perf_counter()
            for _ in range(args.batches):
                decode_jpegs(batch, 3, device)
            torch.cuda.synchronize(device)
            gpu = args.batches * args.batch / (time.perf_counter() - t)
            out["gpu_img_s"] = gpu
            line += f"; nvJPEG on {torch.cuda.get_device_name(device)} {gpu:,.0f} img/s over {args.batches} batches"
        else:
            line += f"; GPU decode fails here: {problem}"
    print(line)
    write_json(args.json, out)


# ---------------------------------------------------------------- tile
def tile_cmd(args) -> None:
    prep, out = Path(args.prepared), Path(args.out)
    index = np.load(prep / "train.index.npy")
    factor = max(1, math.ceil(args.samples / len(index)))
    out.mkdir(parents=True)
    for f in prep.iterdir():
        if f.name.endswith(".tar") or f.name == "stats.npz":
            os.link(f, out / f.name)
    np.save(out / "train.index.npy", np.tile(index, (factor, 1)))
    meta = json.loads((prep / "meta.json").read_text())
    meta["splits"] = {"train": len(index) * factor}
    meta["shards"] = {"train": meta["shards"]["train"]}
    (out / "meta.json").write_text(json.dumps(meta))
    print(f"{out}: {len(index)} images listed {factor}x = {len(index) * factor} training samples")


# ---------------------------------------------------------------- loader
def loader_cmd(args) -> None:
    import torch

    from alexnet.data import make_loader

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    out = {"device": str(device), "batch": args.batch, "workers": args.workers}
    for where in args.decode:
        loader = make_loader(args.prepared, "train", args.batch, num_workers=args.workers,
                             device=None if device.type == "cpu" else device, decode=where)
        n, t0 = 0, None
        for k, (x, _) in enumerate(loader):
            if k == args.warmup:
                sync()
                t0 = time.perf_counter()
            elif k > args.warmup:
                n += x.shape[0]
                if time.perf_counter() - t0 >= args.seconds:
                    break
        sync()
        rate = n / (time.perf_counter() - t0) if t0 and n else None
        out[f"decode_{where}_img_s"] = rate
        out[f"decode_{where}_decoder"] = loader.decoder
        loader.close()
        print(f"loader alone, decode={where} ({loader.decoder}), batch {args.batch}, {args.workers} workers: "
              f"{rate or 0:,.0f} img/s")
        write_json(args.json, out)


# ---------------------------------------------------------------- e2e
def _window(rows: list[dict], batch: int, warmup_s: float, steps: int, window_s: float) -> dict | None:
    """The steady-state window of the step lines (time, step) so far, or None while it has not begun."""
    rows = [r for r in rows if r.get("kind") == "step"]
    if not rows:
        return None
    start = next((r for r in rows if r["time"] - rows[0]["time"] >= warmup_s), None)
    if start is None:
        return None
    inside = [r for r in rows if r["step"] >= start["step"]]
    end = inside[-1]
    for r in inside:  # the window ends at whichever limit comes first
        if r["step"] - start["step"] >= steps or r["time"] - start["time"] >= window_s:
            end = r
            break
    n, dt = end["step"] - start["step"], end["time"] - start["time"]
    return {"img_s": n * batch / dt if dt > 0 else None, "steps": n, "seconds": dt, "first_step": start["step"],
            "complete": n >= steps or dt >= window_s}


def _used(stderr: str, device: str, decode: str, fmt: str = "jpg") -> tuple[str, str]:
    """(decoder, LRN) the run used, from its warnings."""
    lrn = "PyTorch ops" if os.environ.get("ALEXNET_LRN_KERNEL") == "torch" else (
        "Triton kernel" if device.startswith("cuda") else "CPU (fused CPU kernel unless it warned)")
    for line in stderr.splitlines():
        if "fused CUDA LRN kernel" in line:
            lrn = "PyTorch ops, Triton fell back: " + line.split("alexnet: ", 1)[-1][:200]
    if fmt != "jpg":
        decoder = "none (raw pixels)"
    elif decode == "cpu" or not device.startswith("cuda"):
        decoder = "libjpeg-turbo in the loader processes"
    else:
        decoder = "nvJPEG on the GPU"
        for line in stderr.splitlines():
            if "decoding on the CPU in the loader processes instead" in line:
                decoder = "libjpeg-turbo in the loader processes (fallback: " + line.split("alexnet: ", 1)[-1][:200] + ")"
    return decoder, lrn


def _watch(args, proc, run_dir: Path, err_path: Path, fmt: str, out: dict, t0: float) -> dict | None:
    """Poll the run's metrics (JSON rewritten each time) until the window is complete, the run ends or the
    time limit comes; the window."""
    while True:
        time.sleep(1)
        rows = []
        try:
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        except (OSError, ValueError):
            pass
        window = _window(rows, args.batch, args.warmup_s, args.steps, args.window_s)
        out["decoder"], out["lrn"] = _used(err_path.read_text(errors="replace"), args.device, args.decode, fmt)
        out.update(window or {}, elapsed_s=time.monotonic() - t0, steps_logged=len(rows))
        write_json(args.json, out)
        if (window and window["complete"]) or proc.poll() is not None or time.monotonic() - t0 > args.limit_s:
            return window


def _stop(proc, out: dict, window) -> None:
    """End the run (its whole session) if it still runs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out["stopped"] = "after the window" if window and window["complete"] else "at the time limit"
    else:
        out["exit"] = proc.returncode


def e2e_cmd(args) -> None:
    run_dir = Path(args.run)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    sets = [f"data.batch_size={args.batch}", "run.epochs=1", f"data.workers={args.workers}",
            f"run.log_every={args.log_every}", "run.checkpoint_minutes=0", f"data.decode={args.decode}", *args.set]
    cmd = [sys.executable, "-m", "alexnet.cli.main", "train", "--config", args.config, "--data", args.prepared,
           "--out", str(run_dir), "--device", args.device, "--no-progress", "--force"]
    cmd += [a for s in sets for a in ("--set", s)]
    err_path = run_dir.parent / f"{run_dir.name}.stderr"
    fmt = json.loads((Path(args.prepared) / "meta.json").read_text()).get("format", "jpg")
    out = {"config": args.config, "sets": sets, "device": args.device, "batch": args.batch, "run": str(run_dir),
           "window_rule": f">= {args.steps} steps or >= {args.window_s:g} s, after {args.warmup_s:g} s of warm-up"}
    print("e2e:", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    window = None
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            window = _watch(args, proc, run_dir, err_path, fmt, out, t0)
        finally:  # also when this process is interrupted: the run is in its own session and would go on
            _stop(proc, out, window)
    stderr = err_path.read_text(errors="replace")
    out["stderr_tail"] = stderr[-1500:] if (proc.returncode not in (0, -signal.SIGTERM) or not window) else ""
    write_json(args.json, out)
    w = f"{out['img_s']:,.0f} img/s over {out['steps']} steps in {out['seconds']:.1f} s" if window and out.get("img_s") \
        else "no steady-state window"
    print(f"end to end, --config {args.config}, decode={args.decode} ({out['decoder']}), LRN {out['lrn']}: {w}"
          f"{'' if window and window['complete'] else ' (window incomplete)'}")
    if not window:
        print(stderr[-1500:], file=sys.stderr)
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("decode")
    d.add_argument("--device", default="cuda")
    d.add_argument("--batch", type=int, default=256)
    d.add_argument("--batches", type=int, default=20)
    d.add_argument("--distinct", type=int, default=64, help="distinct images the batches cycle through")
    d.add_argument("--json")
    t = sub.add_parser("tile")
    t.add_argument("prepared")
    t.add_argument("out")
    t.add_argument("--samples", type=int, required=True, help="at least this many training samples")
    lo = sub.add_parser("loader")
    lo.add_argument("prepared")
    lo.add_argument("--device", default="cuda")
    lo.add_argument("--decode", nargs="+", default=["main", "workers"], choices=("main", "workers"))
    lo.add_argument("--batch", type=int, default=256)
    lo.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    lo.add_argument("--warmup", type=int, default=3)
    lo.add_argument("--seconds", type=float, default=10)
    lo.add_argument("--json")
    e = sub.add_parser("e2e")
    e.add_argument("prepared")
    e.add_argument("--run", required=True, help="the run folder (kept)")
    e.add_argument("--config", default="paper")
    e.add_argument("--device", default="cuda")
    e.add_argument("--decode", default="auto", choices=("auto", "cpu", "cuda"))
    e.add_argument("--batch", type=int, default=256)
    e.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    e.add_argument("--log-every", type=int, default=20)
    e.add_argument("--steps", type=int, default=1000)
    e.add_argument("--window-s", type=float, default=60)
    e.add_argument("--warmup-s", type=float, default=15)
    e.add_argument("--limit-s", type=float, default=100, help="stop the run after this long whatever the window")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--json")
    args = ap.parse_args()
    {"decode": decode_cmd, "tile": tile_cmd, "loader": loader_cmd, "e2e": e2e_cmd}[args.cmd](args)


if __name__ == "__main__":
    main()
