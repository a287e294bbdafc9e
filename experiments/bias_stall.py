"""Why alexnet-small with the paper's biases of 1 stalls at chance on the built-in data.

Trains alexnet-small on a prepared folder for two epochs (the demo's optimizer)
and prints, at a few steps, for conv2/conv5/fc6/fc7: the fraction of ReLU units
that are zero for every image of the batch ("dead"), and how much the
activations vary across images relative to their mean ("rel-var"); and for the
logits, their spread across images against their spread across classes.

    alexnet data synth synth/ && alexnet prepare synth/ prepared/
    python experiments/bias_stall.py prepared/ --bias 1.0     # the paper's biases
    python experiments/bias_stall.py prepared/ --bias 0.0     # the demo recipe's
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from alexnet import models
from alexnet.data import make_loader, read_meta
from alexnet.engine.optim import make_optimizer

LAYERS = ("conv2", "conv5", "fc6", "fc7")


def describe(model, x) -> str:
    model.eval()
    with torch.no_grad():
        acts = model.extract(x, LAYERS + ("fc8",))
    model.train()
    parts = []
    for name in LAYERS:
        v = acts[name].flatten(1)
        dead = (v.max(0).values <= 0).float().mean().item()
        rel = (v.std(0).mean() / v.mean(0).abs().mean().clamp_min(1e-12)).item()
        parts.append(f"{name} dead {dead:.2f} rel-var {rel:.3f}")
    logits = acts["fc8"]
    parts.append(f"logits: spread over images {logits.std(0).mean().item():.3f}, "
                 f"over classes {logits.mean(0).std().item():.3f}")
    return " | ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="a prepared folder (alexnet prepare) of small images")
    ap.add_argument("--bias", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    meta = read_meta(args.data)
    torch.manual_seed(0)
    model = models.create("alexnet-small", num_classes=len(meta["classes"]), in_channels=int(meta.get("channels", 3)),
                          input_size=int(meta["size"]), bias=args.bias)
    opt = make_optimizer(model.parameters(), "paper", args.lr, 0.9, 5e-4)
    step, report_at = 0, {0, 1, 2, 5, 10, 30, 100}
    for epoch in range(args.epochs):
        for x, y in make_loader(args.data, "train", args.batch, train=True, epoch=epoch, num_workers=0,
                                scale=model.cfg.input_scale):
            if step in report_at:
                print(f"step {step:4d}: {describe(model, x)}", flush=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step < 3:
                print(f"           loss {loss.item():.3f}")
            step += 1
    print(f"step {step:4d}: {describe(model, x)}; last loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
