"""Max |logit difference|, exported program vs eager, for every model and program format: one table.

Each model (full width, its own input size, 1000 classes, initialised from a
fixed seed, eval mode, float32 on the CPU) is saved as a checkpoint, exported
with ``alexnet export``'s code, and run on the same random batch of 4 images as
the eager model (which uses the fused CPU LRN kernel where it builds): ONNX
through onnxruntime (LRN as ONNX's LRN per tower, alpha scaled), TorchScript
through ``torch.jit.load``, ``torch.export`` through ``torch.export.load``. The
batch is at the scale the model's initialisation was chosen for (pixel values
minus a mean, std 255/4, for ``alexnet`` and ``alexnet-caffe``, where LRN's
alpha matters; std 1 otherwise). ``max |logit|`` gives the scale of the
differences. Target: <= 1e-4.

    python scripts/export_parity.py            # all four models
    python scripts/export_parity.py alexnet    # one
"""

from __future__ import annotations

import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from alexnet import models
from alexnet.data import eval_resize
from alexnet.data.transforms import eval_spec
from alexnet.checkpoint import make_checkpoint, save_checkpoint
from alexnet.interop.export import SUFFIXES, export_checkpoint

PROGRAMS = ("onnx", "torchscript", "torch-export")
TARGET = 1e-4


def run_program(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")(x)
    return torch.export.load(str(path)).module()(x)


def parity(name: str, tmp: Path) -> tuple[dict[str, float], float]:
    """``({format: max |diff|}, max |logit|)`` for model ``name``."""
    torch.manual_seed(0)
    model = models.create(name).eval()
    size = model.cfg.input_size
    ckpt = tmp / f"{name}.ckpt"
    save_checkpoint(ckpt, make_checkpoint(name, {}, model.state_dict(), [str(i) for i in range(model.cfg.num_classes)],
                                          None, eval_spec(eval_resize(size), size, "rgb"), None))
    scale = 255.0 / 4 if model.cfg.input_scale == 255 else 1.0  # what the init was chosen for
    x = torch.randn(4, model.cfg.in_channels, size, size) * scale
    diffs = {}
    with torch.no_grad():
        want = model(x)
        for fmt in PROGRAMS:
            out = tmp / f"{name}{SUFFIXES[fmt]}"
            export_checkpoint(ckpt, fmt, out)
            diffs[fmt] = (run_program(out, fmt, x) - want).abs().max().item()
            print(f"  {name} {fmt}: {diffs[fmt]:.2e}", file=sys.stderr, flush=True)
    return diffs, want.abs().max().item()


def main(names: list[str]) -> int:
    import onnxruntime

    names = names or models.names()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows[name] = parity(name, Path(tmp))
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {platform.processor() or platform.machine()}, "
          f"float32, batch 4, seed 0; max |logit difference| exported vs eager (target <= {TARGET:g})\n")
    print("| model | " + " | ".join(PROGRAMS) + " | max \\|logit\\| |")
    print("|---|" + "---:|" * (len(PROGRAMS) + 1))
    for name, (diffs, top) in rows.items():
        print(f"| {name} | " + " | ".join(f"{diffs[f]:.2e}" for f in PROGRAMS) + f" | {top:.3g} |")
    worst = max(d for diffs, _ in rows.values() for d in diffs.values())
    print(f"\nworst: {worst:.2e} ({'within' if worst <= TARGET else 'OVER'} the target)")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
