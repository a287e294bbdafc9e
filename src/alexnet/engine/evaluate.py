"""Evaluate a checkpoint on a prepared split with the transform it carries."""

from __future__ import annotations

from ..errors import UserError
from .checkpoint import load_model
from .distributed import resolve_device
from .loop import evaluate


def evaluate_checkpoint(checkpoint, data, split: str = "val", tta: str = "center", batch_size: int = 100,
                        workers: int | None = None, device: str = "auto", precision: str = "fp32",
                        progress: bool = True) -> dict:
    """``{"count", "top1_acc", "top5_acc", "top1_err", "top5_err"}`` of a checkpoint."""
    from ..features.extract import eval_loader  # split, class and transform checks live there

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}")
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, dev)
    loader = eval_loader(ckpt, data, split, batch_size=batch_size, workers=workers, tta=tta, model=model)
    return evaluate(model, loader, dev, precision, progress=progress, desc=f"eval {split} ({tta})")
