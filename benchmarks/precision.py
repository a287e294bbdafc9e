"""Training speed in fp32 against bf16 autocast on this CPU, in one process, and what ``auto`` picks.

Two arms, a training step (forward, backward, SGD) of the same network with the
same weights, timed in interleaved rounds so that drift in the machine's speed
falls on both alike:

* ``fp32``: no autocast;
* ``bf16``: ``torch.autocast("cpu", torch.bfloat16)``, as ``run.precision: bf16`` trains.

On a CPU with bf16 units (AVX-512 BF16, AMX) bf16 is the faster one; on an
AVX2-only CPU it is emulated and far slower, which is why the recipes say
``run.precision: auto`` (engine/loop.py, ``resolve_precision``). Also printed: the
rate of a 2048^2 matrix product in each dtype.

The defaults are the Fashion-MNIST recipe's network (``alexnet-small`` at width
1.375, pool-lrn, 28 px grey, 10 classes, batch 256, channels_last).

    python benchmarks/precision.py [--model alexnet-small] [--width 1.375] [--input-size 28] [--channels 1]
        [--batch 256] [--rounds 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from alexnet import models
from alexnet.engine.loop import cpu_has_bf16, resolve_precision
from alexnet.kernels import lrn_cpu


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * n**3 / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="alexnet-small")
    ap.add_argument("--width", type=float, default=1.375)
    ap.add_argument("--order", default="pool-lrn")
    ap.add_argument("--input-size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arm and round")
    a = ap.parse_args()
    torch.manual_seed(0)
    lrn_cpu.get()  # build or load the fused CPU kernel before any timing
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, bf16 units: {'yes' if cpu_has_bf16() else 'no'}; "
          f"run.precision=auto trains in {resolve_precision('auto', cpu)} here")
    f32, b16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"2048^2 matmul: fp32 {f32:.1f} GFLOP/s, bf16 {b16:.2f} GFLOP/s (x{b16 / f32:.3f})")

    opts = dict(width=a.width, input_size=a.input_size, in_channels=a.channels, num_classes=a.classes, order=a.order)
    net = models.create(a.model, **opts).to(memory_format=torch.channels_last)
    x = torch.randn(a.batch, a.channels, a.input_size, a.input_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,))
    opt = torch.optim.SGD(net.parameters(), lr=1e-6, momentum=0.9)

    def step(precision: str) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    arms = ("fp32", "bf16")
    for name in arms:  # warm-up
        step(name)
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(a.rounds):
        for name in arms:
            t = time.perf_counter()
            for _ in range(a.steps):
                step(name)
            rates[name].append(a.steps * a.batch / (time.perf_counter() - t))
    base = statistics.median(rates["fp32"])
    print(f"{a.model} width {a.width:g}, {a.order}, {a.input_size} px, batch {a.batch}, channels_last, "
          f"{a.rounds} rounds x {a.steps} steps")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:5s} {med:8.0f} img/s   x{med / base:.2f}")


if __name__ == "__main__":
    main()
