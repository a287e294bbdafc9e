"""Fashion-MNIST time-to-accuracy: our recipe against the classic PyTorch ImageNet example, same CPU, same budget.

Ours: ``alexnet train --config fashion-mnist`` (through ``engine.trainer.fit``)
on the prepared Fashion-MNIST folder, one run per seed. The baseline, in the
same process: the classic PyTorch ImageNet example's recipe
(github.com/pytorch/examples, imagenet/main.py) -- torchvision ``alexnet()``,
SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 256, fp32, train
transform RandomResizedCrop + horizontal flip, test resize + centre crop,
ImageNet mean/std -- on the same images resized to 64 px (grey replicated to
three channels), trained for as many epochs as fit in the budget.

Both are timed on training steps only (each epoch's measured time; the
per-epoch test pass is not counted). Printed: per seed, test accuracy at the
budget (the last epoch that ended within it) and the minutes to reach 93.5%
(VGG16's entry in the Fashion-MNIST benchmark); then mean +- std over seeds.

    python experiments/fashion_mnist.py --data fm/ --out /tmp/fm-bench     # 3 seeds each: about an hour
    python experiments/fashion_mnist.py --data fm/ --seeds 1 --skip-baseline

A run that was stopped resumes from its last checkpoint when started again
with the same ``--out`` (ours; the baseline restarts its seed).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexnet.data import read_meta
from alexnet.engine.config import load_config
from alexnet.engine.evaluate import evaluate_checkpoint
from alexnet.engine.trainer import fit

PUBLISHED = [("AlexNet (Fashion-MNIST benchmark table)", 0.899), ("VGG16", 0.935), ("ResNet18", 0.949),
             ("WRN-28-10", 0.959)]


def ours(data: Path, out: Path, seed: int, sets: list[str]) -> tuple[list[tuple[float, float]], float]:
    """Train one seed of our recipe: (minutes of training so far, centre-crop test accuracy) after each
    epoch, and the last checkpoint's 10-crop test accuracy."""
    cfg = load_config("fashion-mnist", [f"run.seed={seed}", *sets])
    run = out / f"ours-seed-{seed}"
    fit(cfg, data, run, resume=(run / "last.ckpt").is_file(), progress=False)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve, minutes = [], 0.0
    for e in (x for x in lines if x["kind"] == "epoch"):
        minutes += e["epoch_time_s"] / 60
        curve.append((minutes, 1 - e["val_top1_err"]))
    ten = evaluate_checkpoint(run / "last.ckpt", data, tta="10crop", progress=False)
    return curve, 1 - ten["top1_err"]


# ---- the baseline: the classic ImageNet example's recipe, scaled to 64 px ----------------------------------

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_idx(raw: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The IDX files ``alexnet prepare`` read: uint8 N x 1 x 28 x 28 images and their labels."""
    import gzip

    def read(name):
        path = raw / name
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
        return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)

    prefix = "train" if split == "train" else "t10k"
    images = read(next(raw.glob(f"{prefix}-images-idx3-ubyte*")).name)
    labels = read(next(raw.glob(f"{prefix}-labels-idx1-ubyte*")).name)
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def random_resized_boxes(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes (scale 0.08-1, ratio 3/4-4/3, 10 tries then centre) for n images."""
    area = size * size
    boxes = torch.empty(n, 4)
    for i in range(n):
        for _ in range(10):
            target = area * (0.08 + 0.92 * torch.rand(1, generator=gen).item())
            log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(1, generator=gen).item()
            r = math.exp(log_r)
            w, h = round(math.sqrt(target * r)), round(math.sqrt(target / r))
            if 0 < w <= size and 0 < h <= size:
                top = torch.randint(0, size - h + 1, (1,), generator=gen).item()
                left = torch.randint(0, size - w + 1, (1,), generator=gen).item()
                boxes[i] = torch.tensor([left, top, left + w, top + h], dtype=torch.float)
                break
        else:
            boxes[i] = torch.tensor([0, 0, size, size], dtype=torch.float)
    return boxes


def baseline(raw: Path, seed: int, budget_min: float, size: int = 64) -> list[tuple[float, float]]:
    """The classic example's recipe on ``size`` px Fashion-MNIST until ``budget_min`` minutes of training."""
    from torchvision.models import alexnet
    from torchvision.ops import roi_align

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = load_idx(raw, "train")
    xte, yte = load_idx(raw, "val")
    # "the same images resized to 64 px": bilinear, once, kept as float in [0, 1]
    big = F.interpolate(xtr.float() / 255, size=(size, size), mode="bilinear", align_corners=False)
    test_resize = round(size * 256 / 224)  # Resize(256) + CenterCrop(224), scaled to 64
    t = F.interpolate(xte.float() / 255, size=(test_resize, test_resize), mode="bilinear", align_corners=False)
    o = (test_resize - size) // 2
    test = ((t[..., o:o + size, o:o + size].expand(-1, 3, -1, -1) - IMAGENET_MEAN) / IMAGENET_STD).contiguous()
    model = alexnet(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    batch, minutes, curve = 256, 0.0, []
    while minutes < budget_min:
        model.train()
        perm = torch.randperm(len(big), generator=gen)
        tick = time.perf_counter()
        for i in range(0, len(perm) - batch + 1, batch):
            idx = perm[i:i + batch]
            boxes = random_resized_boxes(len(idx), size, gen)
            rois = torch.cat([torch.arange(len(idx), dtype=torch.float)[:, None], boxes], 1)
            x = roi_align(big[idx], rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = (x.expand(-1, 3, -1, -1) - IMAGENET_MEAN) / IMAGENET_STD
            loss = F.cross_entropy(model(x), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if minutes + (time.perf_counter() - tick) / 60 >= budget_min:
                break
        minutes += (time.perf_counter() - tick) / 60
        model.eval()
        with torch.no_grad():
            correct = sum((model(test[i:i + 500]).argmax(1) == yte[i:i + 500]).sum().item()
                          for i in range(0, len(test), 500))
        curve.append((minutes, correct / len(test)))
        print(f"  baseline seed {seed}: {minutes:5.2f} min, test {correct / len(test):.2%}", flush=True)
    return curve


def at_budget(curve, budget_min: float) -> float | None:
    within = [acc for m, acc in curve if m <= budget_min + 1e-9]
    return within[-1] if within else None


def minutes_to(curve, target: float) -> float | None:
    return next((m for m, acc in curve if acc >= target), None)


def _ms(values, fmt="{:.2%}") -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "not reached"
    s = statistics.stdev(vals) if len(vals) > 1 else 0.0
    text = f"{fmt.format(statistics.mean(vals))} ± {fmt.format(s)}"
    return text + (f" ({len(vals)}/{len(values)} seeds)" if len(vals) < len(values) else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="prepared Fashion-MNIST (alexnet prepare "
                                                  "/usr/share/datasets/fashion-mnist DIR)")
    ap.add_argument("--out", default="fm-bench", help="folder for our runs and the results")
    ap.add_argument("--raw", default="/usr/share/datasets/fashion-mnist",
                    help="the IDX files --data was prepared from; the baseline reads them (default: Debian's)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=10.0, help="minutes of training (default 10)")
    ap.add_argument("--target", type=float, default=0.935, help="accuracy to time (default 0.935, VGG16's)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override our recipe")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    read_meta(data)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}", flush=True)
    results = {"ours": [], "ours_10crop": [], "baseline": []}
    for seed in range(args.seeds):
        curve, ten = ours(data, out, seed, args.set)
        results["ours"].append(curve)
        results["ours_10crop"].append(ten)
        print(f"ours seed {seed}: " + ", ".join(f"{m:.2f} min {a:.2%}" for m, a in curve), flush=True)
        print(f"ours seed {seed}: final {curve[-1][1]:.2%} centre, {ten:.2%} 10-crop after {curve[-1][0]:.2f} "
              f"min of training; {args.target:.1%} at {minutes_to(curve, args.target)} min", flush=True)
    if not args.skip_baseline:
        for seed in range(args.seeds):
            results["baseline"].append(baseline(Path(args.raw), seed, args.budget))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n| recipe | seeds | training minutes | test top-1 at the end (centre) | 10-crop | "
          f"at {args.budget:g} min | minutes to {args.target:.1%} |")
    print("|---|---|---|---|---|---|---|")
    for name, key in (("ours: `alexnet train --config fashion-mnist`", "ours"),
                      ("classic PyTorch example: torchvision `alexnet()`, 64 px", "baseline")):
        curves = results[key]
        if curves:
            ten = _ms(results["ours_10crop"]) if key == "ours" else "-"
            print(f"| {name} | {len(curves)} | {_ms([c[-1][0] for c in curves], fmt='{:.1f}')} | "
                  f"{_ms([c[-1][1] for c in curves])} | {ten} | {_ms([at_budget(c, args.budget) for c in curves])} | "
                  f"{_ms([minutes_to(c, args.target) for c in curves], fmt='{:.1f}')} |")
    for name, acc in PUBLISHED:
        print(f"| {name} (published) | | | {acc:.1%} | | | |")


if __name__ == "__main__":
    main()
