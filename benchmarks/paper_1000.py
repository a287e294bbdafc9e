"""The paper's recipe on 1,000 classes: does its training loss leave ln(1000) and its val error fall below chance?

``configs/paper.yaml`` as it is (the full ``alexnet``, biases 1, N(0, 0.01)
weights, lr 0.01, raw pixels 0..255 minus the mean image, PCA lighting,
batch 128) trained on a prepared 1,000-class folder, for example the
ImageNet-shaped built-in data ``benchmarks/prepare_scale.py`` prepares.
Only the length of the run (``--epochs``), the loader processes and the
device are set from here. It prints the curve: step, images seen, minutes,
the training loss (mean of the logged steps since the last row), and the val
top-1 / top-5 error after each epoch, against ln(1000) = 6.91 and chance
(99.9% / 99.5%), and draws it as a PNG.

    python benchmarks/prepare_scale.py --counts 40000 --root /tmp/prep-scale   # 1,000 classes x 40 + 5 val
    python benchmarks/paper_1000.py --data /tmp/prep-scale/prep-40000 --out /tmp/paper-1000 --epochs 4
    python benchmarks/paper_1000.py --out /tmp/paper-1000 --report-only          # the table and PNG of a run

A run that exists is resumed (``--resume``), so a killed benchmark goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

CLASSES = 1000


def curve(run: Path, every: int) -> dict:
    from alexnet.engine.metrics import read_metrics

    records = read_metrics(run)
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    setups = [r for r in records if r.get("kind") == "setup"]
    t0 = setups[0]["time"] if setups else (steps[0]["time"] if steps else 0.0)
    batch = None
    rows, window = [], []
    for r in steps:
        if r.get("train_loss") is not None:
            window.append(r["train_loss"])
        if r["step"] % every == 0 and window:
            rows.append({"step": r["step"], "minutes": round((r["time"] - t0) / 60, 1),
                         "train_loss": round(sum(window) / len(window), 3)})
            window = []
    val = [{"epoch": e["epoch"] + 1, "step": e.get("step"), "minutes": round((e["time"] - t0) / 60, 1),
            "val_top1_err": e.get("val_top1_err"), "val_top5_err": e.get("val_top5_err"),
            "train_loss": e.get("train_loss")} for e in epochs]
    config = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    for line in config.splitlines():
        if line.strip().startswith("batch_size:"):
            batch = int(line.split(":")[1].split("#")[0])
    return {"rows": rows, "val": val, "batch": batch, "setup": setups[0] if setups else {}}


def draw(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot([r["step"] for r in result["rows"]], [r["train_loss"] for r in result["rows"]], lw=1.2, label="training loss")
    a.axhline(math.log(CLASSES), color="grey", ls="--", lw=0.8, label="ln(1000) = 6.91")
    a.set_xlabel("step (batch 128)")
    a.set_ylabel("cross-entropy")
    a.legend(frameon=False)
    a.set_title("the paper's recipe, 1,000 classes")
    if result["val"]:
        xs = [v["step"] for v in result["val"]]
        b.plot(xs, [100 * v["val_top1_err"] for v in result["val"]], "o-", label="val top-1 error")
        b.plot(xs, [100 * v["val_top5_err"] for v in result["val"]], "s-", label="val top-5 error")
    b.axhline(99.9, color="C0", ls=":", lw=0.8, label="chance top-1 (99.9%)")
    b.axhline(99.5, color="C1", ls=":", lw=0.8, label="chance top-5 (99.5%)")
    b.set_xlabel("step")
    b.set_ylabel("%")
    b.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a prepared 1,000-class folder")
    p.add_argument("--out", required=True, help="the run folder (resumed when it exists)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="loader processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--every", type=int, default=50, help="steps per row of the loss table")
    p.add_argument("--report-only", action="store_true", help="no training: the table and PNG of --out")
    p.add_argument("--png", default=None, help="where to draw the curve (default: OUT/paper-1000.png)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        if not args.data:
            p.error("--data is required unless --report-only")
        meta = json.loads((Path(args.data) / "meta.json").read_text())
        if len(meta["classes"]) != CLASSES:
            p.error(f"{args.data} has {len(meta['classes'])} classes, not {CLASSES}")
        cmd = [sys.executable, "-m", "alexnet.cli.main", "train", "--config", "paper", "--data", args.data,
               "--out", str(out), "--device", args.device, "--set", f"run.epochs={args.epochs}",
               "--set", f"data.workers={args.workers}", "--set", "run.log_every=10"]
        if (out / "last.ckpt").exists():
            cmd.append("--resume")
        subprocess.run(cmd, check=True)
    result = curve(out, args.every)
    png = Path(args.png) if args.png else out / "paper-1000.png"
    draw(result, png)
    setup = result["setup"]
    print(f"the paper's recipe on {CLASSES} classes: {setup.get('device')}, {setup.get('precision')}; "
          f"chance: loss {math.log(CLASSES):.2f}, top-1 99.9%, top-5 99.5%")
    print("| step | minutes | training loss (mean since the row before) |")
    print("|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['step']} | {r['minutes']} | {r['train_loss']} |")
    print("\n| epoch | step | minutes | val top-1 err | val top-5 err |")
    print("|---|---|---|---|---|")
    for v in result["val"]:
        t1 = f"{100 * v['val_top1_err']:.2f}%" if v["val_top1_err"] is not None else "-"
        t5 = f"{100 * v['val_top5_err']:.2f}%" if v["val_top5_err"] is not None else "-"
        print(f"| {v['epoch']} | {v['step']} | {v['minutes']} | {t1} | {t5} |")
    print(f"\ncurve: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
