"""Per-layer table of a network: output shape, parameters, multiply-adds.

Multiply-adds count the convolutions and fully-connected layers (the work of
the network); ReLU, LRN and pooling are listed with 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    name: str
    output_shape: list[int]
    params: int
    macs: int


def summarize(model: nn.Module, input_size: int | None = None) -> dict:
    """``{"model", "input_size", "params", "macs", "layers": [...]}`` for one image."""
    cfg = model.cfg
    size = input_size or cfg.input_size
    x = torch.zeros(1, cfg.in_channels, size, size)
    rows: list[LayerRow] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for name, out in model.extract(x, model.layer_names()).items():
            mod = getattr(model, name)
            params, macs = 0, 0
            if isinstance(mod, nn.Conv2d):
                params = sum(p.numel() for p in mod.parameters())
                k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                macs = out.numel() * k
            elif isinstance(mod, nn.Linear):
                params = sum(p.numel() for p in mod.parameters())
                macs = mod.in_features * mod.out_features
            rows.append(LayerRow(name, list(out.shape[1:]), params, macs))
    model.train(was_training)
    return {
        "model": cfg.name,
        "input_size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": sum(r.macs for r in rows),
        "layers": [asdict(r) for r in rows],
    }


def format_table(summary: dict) -> str:
    """The summary as a fixed-width text table, like the paper's Figure 2 in rows."""
    lines = [f"{summary['model']}  (input {summary['input_size']}x{summary['input_size']})"]
    lines.append(f"{'layer':<8}{'output shape':>18}{'params':>14}{'mult-adds':>16}")
    for r in summary["layers"]:
        shape = " x ".join(str(d) for d in r["output_shape"])
        lines.append(f"{r['name']:<8}{shape:>18}{r['params']:>14,}{r['macs']:>16,}")
    lines.append(f"{'total':<8}{'':>18}{summary['params']:>14,}{summary['macs']:>16,}")
    lines.append(f"{summary['params'] / 1e6:.3f} M parameters, {summary['macs'] / 1e9:.3f} G multiply-adds per image")
    return "\n".join(lines)
