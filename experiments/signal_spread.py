"""How much each layer's output depends on the image: the measurement behind a loss that sits at ln(C).

For a network (a checkpoint, or ``--init NAME`` for a fresh one with the
paper's initialisation) and a batch of validation images fed as its eval
transform says, per layer (after its ReLU):

* ``spread``: the RMS over units of the standard deviation across images,
  divided by the RMS of the mean activation: 0 when every image gives the same
  output (the layer carries nothing about the input), about 1 or more when the
  image matters as much as the bias does;
* ``dead``: the share of units that are 0 for every image in the batch.

A loss at ln(C) with fc7's spread near 0 means the head sees (almost) one
vector for every image and can only learn the class frequencies; learning
begins when the spread at fc7 grows.

    python experiments/signal_spread.py --data PREPARED --init alexnet --classes 1000
    python experiments/signal_spread.py --data PREPARED RUN/epoch-*.ckpt       # one row block per checkpoint
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def spread(model, images: torch.Tensor) -> dict[str, dict[str, float]]:
    with torch.no_grad():
        acts = model.eval().extract(images, LAYERS)
    out = {}
    for name, a in acts.items():
        a = a.double().flatten(1)  # N x units
        mean, std = a.mean(0), a.std(0)
        rms_mean = mean.square().mean().sqrt().item()
        out[name] = {"spread": std.square().mean().sqrt().item() / max(rms_mean, 1e-30),
                     "dead": (a.abs().amax(0) == 0).double().mean().item() if name != "fc8" else 0.0,
                     "rms_mean": rms_mean}
    return out


def _images(checkpoint, data: str, n: int) -> torch.Tensor:
    with contextlib.closing(checkpoint.eval_loader(data, "val", batch_size=n, workers=0)) as loader:
        images, _ = next(iter(loader))
    return images


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", help="checkpoints to measure")
    p.add_argument("--data", required=True, help="prepared folder (its val split feeds the network)")
    p.add_argument("--init", default=None, help="also a fresh model of this name, the paper's init, seed --seed")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--n", type=int, default=128, help="images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from alexnet import models
    from alexnet.checkpoint import make_checkpoint
    from alexnet.data import load_stats, read_meta
    from alexnet.data.transforms import eval_spec
    from alexnet.engine.inference import Checkpoint

    torch.manual_seed(args.seed)
    rows = {}
    loaded = [Checkpoint.load(c, "cpu") for c in args.checkpoints]
    if args.init:
        model = models.create(args.init, num_classes=args.classes)
        meta = read_meta(args.data)
        spec = eval_spec(int(meta["size"]), model.cfg.input_size, "image", scale=model.cfg.input_scale)
        ckpt = make_checkpoint(args.init, {"num_classes": args.classes}, model.state_dict(), meta["classes"], None,
                               spec, load_stats(args.data))
        rows["init"] = Checkpoint("init", model, ckpt)
    for path, c in zip(args.checkpoints, loaded):
        rows[path] = c
    results = {}
    for name, c in rows.items():
        results[name] = spread(c.model, _images(c, args.data, args.n))
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| network | " + " | ".join(LAYERS) + " |")
    print("|---|" + "---|" * len(LAYERS))
    for name, r in results.items():
        print(f"| {name} spread | " + " | ".join(f"{r[l]['spread']:.3g}" for l in LAYERS) + " |")
        print(f"| {name} dead | " + " | ".join(f"{100 * r[l]['dead']:.0f}%" for l in LAYERS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
