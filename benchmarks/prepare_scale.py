"""``alexnet prepare`` at ImageNet's scale: its cost curve against the physical limit, in one run.

For each file count N (nested subsets of one generated ImageNet-shaped tree:
1,000 classes, ImageNet's spread of sizes, the ILSVRC-2012 layout), it runs
``alexnet prepare`` in a child process and reports:

* images/s, and per worker (per core when workers = cores);
* peak resident memory of the whole process tree (sampled from /proc every
  0.1 s: the main process and its workers together), which must stay flat as
  N grows;
* disk written (the prepared folder);
* the physical limit on the same files in the same run: decode (with the
  reduced-size DCT decode Pillow's ``draft`` gives JPEGs) + resize + centre
  crop + JPEG encode alone (no damage check, statistics or writing), on one
  core and in as many processes at once as prepare has workers; prepare's
  rate per worker as a fraction of the first (the target is at least 0.8),
  and its rate as a fraction of the second (the same parallelism: a machine
  whose cores do not scale holds both to the same cap);
* prepare's work on one image, step by step (ms on one core);
* the extrapolation to ImageNet's 1,281,167 training files on 2 and 16 cores
  (linear in cores: an assumption, said as such).

``--kill-at F`` also kills the smallest prepare when a fraction F of its
shards are done, reruns it, and reports the rerun's time and whether its
index equals that of an uninterrupted prepare.

    python benchmarks/prepare_scale.py --counts 10000 40000 --root /tmp/prep-scale   # about 15 min on 2 cores
    python benchmarks/prepare_scale.py --counts 2000 8000 --root /tmp/ps --kill-at 0.5 --json

The generated tree is kept under ``--root`` (reused by a later run with the
same seed); ``--clean`` removes the prepared folders afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

IMAGENET_TRAIN = 1_281_167
VAL_PER_CLASS = 5  # 5,000 val images: enough for a val error that tells learning from chance


def tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and every descendant, in KB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def run_measured(cmd: list[str], kill_when=None) -> dict:
    """Run ``cmd``; wall time, peak tree RSS, exit code. ``kill_when()``: SIGKILL the tree when it says so."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak, killed = 0, False
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        if kill_when is not None and not killed and kill_when():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.1)
    out, err = proc.communicate()
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak / 1024, "rc": proc.returncode,
            "killed": killed, "stdout": out, "stderr": err}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def generate(root: Path, per_class: int, seed: int) -> Path:
    """The ImageNet-shaped tree (1,000 classes x per_class training files), generated once."""
    tree = root / f"synth-{per_class}-s{seed}"
    if (tree / ".complete").exists():
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "alexnet.cli.main", "data", "synth", str(tree), "--classes", "1000",
                    "--train-per-class", str(per_class), "--val-per-class", str(VAL_PER_CLASS), "--sizes", "imagenet",
                    "--layout", "ilsvrc", "--seed", str(seed), "--no-progress"], check=True)
    seconds = time.perf_counter() - t
    (tree / ".complete").write_text(json.dumps({"seconds": seconds, "files": 1000 * (per_class + VAL_PER_CLASS)}))
    return tree


def train_files(tree: Path) -> list[Path]:
    return sorted(p for p in (tree / "train").rglob("*") if p.is_file())


def subset(tree: Path, files: list[Path], n: int, root: Path) -> Path:
    """A tree with the first ``n`` training files per the round-robin over classes (hard links: no copies)."""
    out = root / f"subset-{n}"
    if (out / ".complete").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    by_class: dict[str, list[Path]] = {}
    for f in files:
        by_class.setdefault(f.parent.name, []).append(f)
    chosen, i = [], 0
    classes = sorted(by_class)
    while len(chosen) < n:
        for c in classes:
            if i < len(by_class[c]) and len(chosen) < n:
                chosen.append(by_class[c][i])
        i += 1
    for f in chosen:
        dst = out / f.relative_to(tree)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dst)
    for extra in tree.iterdir():  # the devkit and val of the ILSVRC layout, as they are
        if extra.name not in ("train", ".complete"):
            dst = out / extra.name
            if extra.is_dir():
                shutil.copytree(extra, dst, copy_function=os.link)
            else:
                os.link(extra, dst)
    (out / ".complete").write_text("")
    return out


def _limit_work(files: list[Path], side: int = 256) -> float:
    """Seconds for decode (Pillow, reduced-size DCT where it applies) + resize + centre crop + JPEG encode of
    ``files`` on one core: the work prepare cannot avoid, without its damage check, statistics or writing."""
    import io

    import torch
    from PIL import Image

    from alexnet.data.images import square

    torch.set_num_threads(1)
    t = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            w, h = im.size
            scale = side / min(w, h)
            im.draft("RGB", (int(w * scale + 0.5), int(h * scale + 0.5)))
            out = square(im.convert("RGB"), side)
        out.save(io.BytesIO(), format="JPEG", quality=95)
    return time.perf_counter() - t


def physical_limit(files: list[Path], workers: int, n: int = 600) -> tuple[float, float]:
    """``(images/s on one core, images/s of ``workers`` processes at once)`` of :func:`_limit_work` on a sample
    of ``files``: the second is the limit a ``workers``-process prepare is held to (cores may not scale)."""
    import multiprocessing as mp

    step = max(1, len(files) // n)
    sample = files[::step][:n]
    _limit_work(sample[:30])  # warm the page cache and the code paths
    one = len(sample) / _limit_work(sample)
    parts = [sample[i::workers] for i in range(workers)]
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_limit_work, [p[:10] for p in parts])  # warm the workers
        t = time.perf_counter()
        pool.map(_limit_work, parts)
        together = len(sample) / (time.perf_counter() - t)
    return one, together


def per_image_ms(files: list[Path], side: int = 256, n: int = 300) -> dict[str, float]:
    """prepare's work on one image, step by step, in ms (one core, this process): what it adds to the limit."""
    import numpy as np
    import torch

    from alexnet.data.images import decode_reporting, load_square
    from alexnet.data.prepare import decode_jpeg, encode_jpeg
    from alexnet.data.stats import PixelStats

    torch.set_num_threads(1)
    sample = files[:: max(1, len(files) // n)][:n]
    load_square(sample[0], side)
    out = {}
    t = time.perf_counter()
    for f in sample:
        decode_reporting(f.read_bytes())
    out["read + decode with the damage check"] = time.perf_counter() - t
    t = time.perf_counter()
    arrays = [load_square(f, side) for f in sample]
    out["load_square (all of the above + resize + crop)"] = time.perf_counter() - t
    t = time.perf_counter()
    data = [encode_jpeg(a) for a in arrays]
    out["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    stored = [decode_jpeg(d, 3) for d in data]
    out["decode the stored JPEG for the statistics"] = time.perf_counter() - t
    t = time.perf_counter()
    stats = PixelStats(side, side, 3)
    for i in range(0, len(stored), 64):
        stats.add(np.stack(stored[i:i + 64]))
    out["statistics"] = time.perf_counter() - t
    return {k: round(v / len(sample) * 1e3, 2) for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[10000, 40000])
    p.add_argument("--root", default="/tmp/prep-scale")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kill-at", type=float, default=None, help="fraction of the smallest prepare's shards, then kill")
    p.add_argument("--clean", action="store_true", help="remove the prepared folders afterwards")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    counts = sorted(args.counts)
    per_class = -(-counts[-1] // 1000)
    tree = generate(root, per_class, args.seed)
    gen = json.loads((tree / ".complete").read_text())
    files = train_files(tree)
    limit, limit_together = physical_limit(files, args.workers)
    steps = per_image_ms(files)
    rows = []
    for n in counts:
        src = subset(tree, files, n, root)
        out = root / f"prep-{n}"
        if out.exists():
            shutil.rmtree(out)
        cmd = [sys.executable, "-m", "alexnet.cli.main", "prepare", str(src), str(out), "--workers", str(args.workers),
               "--no-progress"]
        r = run_measured(cmd)
        if r["rc"] != 0:
            print(r["stderr"], file=sys.stderr)
            return 1
        images = n + 1000 * VAL_PER_CLASS  # train + val
        rate = images / r["seconds"]
        row = {"files": images, "seconds": round(r["seconds"], 1), "images_per_s": round(rate, 1),
               "per_worker": round(rate / args.workers, 1), "peak_rss_mb": round(r["peak_rss_mb"]),
               "disk_mb": round(folder_bytes(out) / 2**20), "of_limit": round(rate / args.workers / limit, 2),
               "of_limit_together": round(rate / limit_together, 2)}
        rows.append(row)
        if args.kill_at is not None and n == counts[0]:
            row["kill"] = kill_and_rerun(cmd, out, args.kill_at)
        if args.clean:
            shutil.rmtree(out)
    per_core = max(r["per_worker"] for r in rows)
    result = {
        "cpu": cpu_name(), "workers": args.workers, "generate": {"files": gen["files"], "seconds": round(gen["seconds"], 1),
                                                                  "images_per_s": round(gen["files"] / gen["seconds"], 1)},
        "physical_limit_per_core": round(limit, 1), "physical_limit_together": round(limit_together, 1),
        "per_image_ms": steps, "rows": rows,
        "imagenet_hours": {"2 cores": round(IMAGENET_TRAIN / (per_core * 2) / 3600, 2),
                           "16 cores": round(IMAGENET_TRAIN / (per_core * 16) / 3600, 2)},
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"CPU: {result['cpu']}, {args.workers} workers")
        print(f"generate: {gen['files']:,} files in {gen['seconds']:.0f} s ({result['generate']['images_per_s']}/s)")
        print(f"physical limit (decode + resize + crop + encode): {limit:.1f} images/s on one core, "
              f"{limit_together:.1f} images/s in {args.workers} processes at once ({limit_together / limit:.2f}x one)")
        print("prepare's steps, ms per image on one core: " + "; ".join(f"{k} {v}" for k, v in steps.items()))
        print(f"| files | s | images/s | per worker | of the one-core limit | of the {args.workers}-process limit "
              "| peak RSS MB | disk MB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['files']:,} | {r['seconds']} | {r['images_per_s']} | {r['per_worker']} | {r['of_limit']} | "
                  f"{r['of_limit_together']} | "
                  f"{r['peak_rss_mb']} | {r['disk_mb']} |")
            if "kill" in r:
                print(f"  killed at {r['kill']['done_at_kill']} of {r['kill']['shards']} shards; rerun "
                      f"{r['kill']['rerun_seconds']} s; index equal to the uninterrupted one: {r['kill']['equal']}")
        h = result["imagenet_hours"]
        print(f"ImageNet's {IMAGENET_TRAIN:,} training files at the best per-core rate: {h['2 cores']} h on 2 cores, "
              f"{h['16 cores']} h on 16 (assumes the rate scales with cores)")
    return 0


def kill_and_rerun(cmd: list[str], out: Path, fraction: float) -> dict:
    """SIGKILL the prepare into ``out`` once ``fraction`` of its shards are done; rerun; compare the index."""
    import numpy as np

    reference = {s: np.load(out / f"{s}.index.npy") for s in ("train", "val")}
    shards = len(list(out.glob("train-*.tar"))) + len(list(out.glob("val-*.tar")))
    shutil.rmtree(out)
    parts = out / ".prepare"

    def enough():
        return parts.is_dir() and len(list(parts.glob("*.npz"))) >= max(1, int(fraction * shards))

    first = run_measured(cmd, kill_when=enough)
    done = len(list(parts.glob("*.npz"))) if parts.is_dir() else 0
    again = run_measured(cmd)
    equal = again["rc"] == 0 and all(np.array_equal(np.load(out / f"{s}.index.npy"), reference[s]) for s in reference)
    return {"shards": shards, "done_at_kill": done, "killed": first["killed"], "rerun_seconds": round(again["seconds"], 1),
            "equal": bool(equal)}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
