"""Max |logit difference|, exported program vs eager, for every model and program format.

Each model (full width, its own input size, 1000 classes, freshly initialised)
is saved as a checkpoint, exported with ``alexnet export``'s code, and run on
the same random batch of 4 images as the eager model (which uses the fused CPU
LRN kernel where it builds): ONNX through onnxruntime, TorchScript through
``torch.jit.load``, ``torch.export`` through ``torch.export.load``.

    python scripts/export_parity.py            # all four models
    python scripts/export_parity.py alexnet    # one
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch

from alexnet import models
from alexnet.data.transforms import eval_spec
from alexnet.engine.checkpoint import save_checkpoint
from alexnet.engine.export import SUFFIXES, export_checkpoint


def run_program(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path))(x)
    return torch.export.load(str(path)).module()(x)


def main(names: list[str]) -> None:
    torch.manual_seed(0)
    print(f"{'model':<15}{'format':<14}{'max |diff|':>12}{'max |logit|':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or models.names():
            model = models.create(name).eval()
            size = model.cfg.input_size
            ckpt = Path(tmp) / f"{name}.ckpt"
            save_checkpoint(ckpt, {"model": {"name": name, "options": {}}, "state_dict": model.state_dict(),
                                   "classes": [str(i) for i in range(model.cfg.num_classes)],
                                   "eval_transform": eval_spec(256 if size > 64 else size, size, "rgb"),
                                   "data_stats": {"mean_rgb": torch.zeros(3)}})
            scale = 255.0 if model.cfg.input_scale == 255 else 1.0  # what the init was chosen for
            x = torch.randn(4, model.cfg.in_channels, size, size) * scale / 4
            with torch.no_grad():
                want = model(x)
                for fmt in ("onnx", "torchscript", "torch-export"):
                    out = Path(tmp) / f"{name}{SUFFIXES[fmt]}"
                    export_checkpoint(ckpt, fmt, out)
                    diff = (run_program(out, fmt, x) - want).abs().max().item()
                    print(f"{name:<15}{fmt:<14}{diff:>12.2e}{want.abs().max().item():>13.3g}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
