"""The paper's full-size network on the built-in data at 256 px: `alexnet train --config small-data`, timed.

Generates the built-in dataset at 256 px (10 classes, 500 train / 100 val
images per class; skipped when OUT/synth is complete), prepares it, trains
``alexnet`` (224 px crops, two towers, per-tower LRN) with
``configs/small-data.yaml``, and prints per epoch the wall time and the
validation top-1 accuracy, the first epoch at which it reaches --target,
then the best checkpoint's centre-crop and 10-patch accuracy. ``--set``
overrides go to the recipe (``--set model.init=paper --set model.bias=1.0
--set data.scale=255`` reruns the paper's choices on the same data).

    python experiments/small_data.py --out /tmp/small-data          # about 20 min on a 2-core CPU

A run that was stopped resumes from its last checkpoint when started again
with the same ``--out``; the table is read from the run's metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from alexnet.data import generate_synth, prepare
from alexnet.engine.config import load_config
from alexnet.engine.evaluate import evaluate_checkpoint
from alexnet.engine.trainer import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="small-data-bench", help="folder for the data and the run")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--target", type=float, default=0.90, help="val top-1 accuracy to time (default 0.90)")
    ap.add_argument("--run", default="run", help="run folder name under --out")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    generate_synth(out / "synth", classes=10, train_per_class=500, val_per_class=100, size=256, seed=0)
    prepare(out / "synth", out / "prepared")
    print(f"data ready in {time.time() - t0:.0f} s", flush=True)

    cfg = load_config("small-data", args.set)
    run = out / args.run
    fit(cfg, out / "prepared", run, resume=(run / "last.ckpt").is_file())

    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    elapsed, reached = 0.0, None
    print(f"\n{'epoch':>5} {'train s':>8} {'img/s':>6} {'train loss':>10} {'val top-1':>9}")
    for e in epochs:
        elapsed += e["epoch_time_s"]
        acc = 1 - e["val_top1_err"]
        print(f"{e['epoch'] + 1:>5} {elapsed:>8.0f} {e['images_per_s']:>6.0f} {e['train_loss']:>10.4f} {acc:>9.2%}")
        if reached is None and acc >= args.target:
            reached = (e["epoch"] + 1, elapsed)
    res = {tta: evaluate_checkpoint(run / "best.ckpt", out / "prepared", tta=tta, progress=False)
           for tta in ("center", "10crop")}
    print(f"\nalexnet, small-data recipe{' ' + ' '.join(args.set) if args.set else ''}, "
          f"{platform.processor() or platform.machine()}")
    print(f"training: {len(epochs)} epochs, {elapsed:.0f} s ({elapsed / 60:.1f} min) in training epochs "
          f"(the per-epoch validation not counted)")
    if reached:
        print(f"val top-1 >= {args.target:.0%} first at epoch {reached[0]}, after {reached[1]:.0f} s "
              f"({reached[1] / 60:.1f} min) of training epochs")
    else:
        print(f"val top-1 never reached {args.target:.0%}")
    print(f"best.ckpt val top-1: {res['center']['top1_acc']:.2%} centre crop, {res['10crop']['top1_acc']:.2%} 10-patch")


if __name__ == "__main__":
    main()
