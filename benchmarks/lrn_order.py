"""Training speed of the two LRN orders, in one process.

Two arms, each a training step (forward, backward, SGD) of the same network
with the same weights, timed in interleaved rounds so that drift in the
machine's speed falls on both alike:

* ``lrn-pool``: the paper's order after conv1 and conv2 (ReLU, LRN, max-pool);
* ``pool-lrn``: CaffeNet's (``model.order: pool-lrn``): ReLU, max-pool, then
  LRN on the pooled map, about four times smaller. Another network, not the
  same function.

Printed: images/s of each arm (median over rounds) and the ratio to the first.
The defaults are the Fashion-MNIST recipe's network (``alexnet-small`` at width
1.375, 28 px grey, 10 classes, batch 256, bf16 autocast, channels_last).

    python benchmarks/lrn_order.py [--model alexnet-small] [--width 1.375] [--input-size 28] [--channels 1]
        [--batch 256] [--rounds 5] [--steps 8] [--precision bf16|fp32]

Tried and not kept: running a ReLU that a max-pool follows after the pool
(they commute, so the results are the same) measured x0.99 here on
``alexnet-small`` and x1.02 on ``alexnet``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from alexnet import models
from alexnet.kernels import lrn_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="alexnet-small")
    ap.add_argument("--width", type=float, default=1.375)
    ap.add_argument("--input-size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per arm and round")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    a = ap.parse_args()
    torch.manual_seed(0)
    lrn_cpu.get()  # build or load the fused CPU kernel before any timing
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    opts = dict(width=a.width, input_size=a.input_size, in_channels=a.channels, num_classes=a.classes)
    nets = {order: models.create(a.model, order=order, **opts).to(memory_format=torch.channels_last)
            for order in ("lrn-pool", "pool-lrn")}
    nets["pool-lrn"].load_state_dict(nets["lrn-pool"].state_dict())
    arms = {"lrn-pool": (nets["lrn-pool"], lambda m, x: m(x)), "pool-lrn": (nets["pool-lrn"], lambda m, x: m(x))}
    x = torch.randn(a.batch, a.channels, a.input_size, a.input_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,))
    opt = {name: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for name, (m, _) in arms.items()}

    def step(name):
        m, run = arms[name]
        with torch.autocast("cpu", torch.bfloat16, enabled=a.precision == "bf16"):
            out = run(m, x)
        loss = F.cross_entropy(out.float(), y)
        opt[name].zero_grad(set_to_none=True)
        loss.backward()
        opt[name].step()

    rates = {name: [] for name in arms}
    for name in arms:  # warm-up
        for _ in range(3):
            step(name)
    for _ in range(a.rounds):
        for name in arms:
            t = time.perf_counter()
            for _ in range(a.steps):
                step(name)
            rates[name].append(a.steps * a.batch / (time.perf_counter() - t))
    base = statistics.median(rates[next(iter(arms))])
    print(f"{a.model} width {a.width:g}, {a.input_size} px, batch {a.batch}, {a.precision}, channels_last, "
          f"{a.rounds} rounds x {a.steps} steps")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:10s} {med:8.0f} img/s   x{med / base:.2f}")


if __name__ == "__main__":
    main()
