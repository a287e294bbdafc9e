"""The first steps of the full-size ``alexnet``: paper recipe vs small-data recipe, 10 vs 1000 classes.

Trains ``alexnet`` (224 px, batch 128, bf16 autocast on a CPU) for a few
steps from the same seed and prints the training loss at each step, for
each combination of

* recipe: ``paper`` (``configs/paper.yaml``: N(0, 0.01) weights, biases 1,
  SGD lr 0.01, momentum 0.9, weight decay 5e-4) and ``small-data``
  (``configs/small-data.yaml``);
* classes: 10 and 1000;
* input scale: 255 (the paper's raw pixels minus the mean) and 1 ([0, 1]).

The images are uniform random pixels minus their mean (127.5) with random
labels, as the first table of docs/recipes.md measures it, or, with
``--data PREPARED``, the training batches of a prepared folder (its own
classes, the loader's augmentation, each run from the same seed), each
recipe at its own ``data.scale`` unless ``--scales`` is given. A recipe may
carry overrides, ``paper:model.bias=0.0,optim.lr=1e-3``, to measure one
change at a time. ``lr|h|^2/C`` is the size of the head's
first steps: lr times the squared length of fc7's output at initialisation
(mean over the first images) over the number of classes; above about 2 the
head overshoots. A loss far above ln(classes) (2.30 for 10, 6.91 for 1000)
is the blow-up that leaves the ReLUs dead; one that stays at ln(classes) has
learnt nothing; see docs/recipes.md, "The paper's recipe on few classes".

    python experiments/early_steps.py                  # 12 steps, every row (about 5 min on 2 cores)
    python experiments/early_steps.py --data PREPARED --steps 150 --batch 64 --every 10 \
        --recipes paper paper:model.bias=0.0 small-data
    python experiments/early_steps.py --data PREPARED --steps 300 --every 25 --dead --recipes paper paper:model.init=caffe
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch
import torch.nn.functional as F

from alexnet import models
from alexnet.engine.config import load_config
from alexnet.engine.optim import make_optimizer
from alexnet.engine.trainer import model_options


def model_for(recipe: str, classes: int):
    """The recipe's config and its model (224 px, as the trainer builds it for 256 px data of ``classes``)."""
    name, _, overrides = recipe.partition(":")
    cfg = load_config(name, [o for o in overrides.split(",") if o])
    return cfg, models.create("alexnet", **model_options(cfg, {"classes": list(range(classes)), "size": 256}))


def data_batches(args, scale: float, lighting: float):
    """The prepared folder's training batches, epoch after epoch, ``steps`` of them."""
    from alexnet.data import make_loader

    loader = make_loader(args.data, "train", args.batch, train=True, num_workers=1, scale=scale, lighting=lighting)
    done, epoch = 0, 0
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch
            done += 1
            if done == args.steps:
                return
        epoch += 1


def batches(args, classes: int, scale: float):
    """``steps`` random batches (images in input units, labels), the same for every recipe."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(args.steps):
        x = (torch.rand(args.batch, 3, 224, 224, generator=g) * 255 - 127.5) * (scale / 255)
        out.append((x, torch.randint(0, classes, (args.batch,), generator=g)))
    return out


def run(recipe: str, classes: int, args, scale: float | None = None) -> tuple[list[float], float]:
    """The losses of ``recipe``'s first steps, and the input scale they were taken at."""
    torch.manual_seed(0)
    cfg, model = model_for(recipe, classes)
    if scale is None:
        scale = cfg.data.scale if cfg.data.scale is not None else model.cfg.input_scale
    data = data_batches(args, scale, cfg.data.lighting) if args.data else batches(args, classes, scale)
    model = model.to(memory_format=torch.channels_last).train()
    o = cfg.optim
    lr = o.lr * args.batch / cfg.data.batch_size  # the recipe's rate is per its own batch
    opt = make_optimizer(model.parameters(), o.rule, lr, o.momentum, o.weight_decay)
    warmup = cfg.schedule.warmup_steps
    losses, head, dead = [], None, []
    for step, (x, y) in enumerate(data):
        if args.dead and step % max(args.every, 1) == 0:  # fc6/fc7 units that are 0 for every image of the batch
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                acts = model.eval().extract(x.contiguous(memory_format=torch.channels_last), ("fc6", "fc7"))
            model.train()
            dead.append(tuple((a.float().amax(0) <= 0).float().mean().item() for a in acts.values()))
        if head is None:  # the head's step at initialisation: lr * |fc7|^2 / classes (see docs/recipes.md)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                h = model.eval().extract(x[:16].contiguous(memory_format=torch.channels_last), ("fc7",))["fc7"]
            model.train()
            head = lr * h.float().pow(2).sum(1).mean().item() / classes
        if step < warmup:
            for g in opt.param_groups:
                g["lr"] = lr * (step + 1) / warmup
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, scale, head, dead


def row(recipe: str, classes: int, scale: float, head: float, losses: list[float], every: int, seconds: float) -> str:
    shown = losses if every <= 1 else [sum(losses[i:i + every]) / len(losses[i:i + every])
                                       for i in range(0, len(losses), every)]
    return (f"{recipe:<34} {classes:>7} {scale:>5g} {head:>9.3g} {math.log(classes):6.2f}  "
            + " ".join(f"{v:5.2f}" if v < 100 else f"{v:5.0f}" for v in shown) + f"   ({seconds:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 1000])
    ap.add_argument("--recipes", nargs="+", default=["paper", "small-data"])
    ap.add_argument("--scales", type=float, nargs="+", help="input scales (default: 255 and 1 on random images, "
                    "each recipe's own with --data)")
    ap.add_argument("--data", help="a prepared folder: its training batches instead of random images")
    ap.add_argument("--every", type=int, default=1, help="print the mean loss of every N steps")
    ap.add_argument("--dead", action="store_true", help="also the % of fc6 / fc7 units that are 0 for every image "
                    "of the batch, before every N-th step")
    args = ap.parse_args()
    if args.data:
        from alexnet.data import read_meta

        args.classes = [len(read_meta(args.data)["classes"])]
    scales = args.scales or ([None] if args.data else [255.0, 1.0])
    what = f"mean loss of steps {args.every} at a time" if args.every > 1 else "loss at each step"
    print(f"alexnet, batch {args.batch}, bf16 autocast, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, {args.data or 'random images'}; {what}, {args.steps} steps")
    n = -(-args.steps // max(args.every, 1))
    print(f"{'recipe':<34} {'classes':>7} {'scale':>5} {'lr|h|^2/C':>9}  ln(C)  " + " ".join(f"{(i + 1) * max(args.every, 1):>5}" for i in range(n)))
    for scale in scales:
        for classes in args.classes:
            for recipe in args.recipes:
                t = time.perf_counter()
                losses, used, head, dead = run(recipe, classes, args, scale)
                print(row(recipe, classes, used, head, losses, args.every, time.perf_counter() - t), flush=True)
                if dead:
                    print(f"{'  dead fc6 / fc7 units':<34} {'':>7} {'':>5} {'':>9} {'':6}  "
                          + " ".join(f"{round(100 * a):>2}/{round(100 * b):<2}" for a, b in dead), flush=True)


if __name__ == "__main__":
    main()
