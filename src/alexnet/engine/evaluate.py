"""Evaluate a checkpoint on a prepared split with the transform it carries."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .checkpoint import load_model
from .distributed import resolve_device
from .loop import evaluate


def evaluate_checkpoint(checkpoint, data, split: str = "val", tta: str = "center", batch_size: int = 100,
                        workers: int = 2, device: str = "auto", precision: str = "fp32", progress: bool = True) -> dict:
    """``{"count", "top1_acc", "top5_acc", "top1_err", "top5_err"}`` of a checkpoint."""
    from ..data import make_loader, read_meta

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}")
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, dev)
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"prepared data folder not found: {data}")
    meta = read_meta(data)
    if split not in meta.get("splits", {}):
        raise UserError(f"{data} has no split {split!r} (splits: {', '.join(meta.get('splits', {}))})")
    classes = ckpt.get("classes")
    if classes is not None and list(classes) != list(meta["classes"]):
        raise UserError(f"{checkpoint} was trained on {len(classes)} classes that differ from the {len(meta['classes'])} of {data}")
    spec = ckpt.get("eval_transform") or {}
    loader = make_loader(data, split, batch_size, train=False, tta=tta, input_size=spec.get("crop", model.cfg.input_size),
                         num_workers=workers, mean=spec.get("mean", "image"), normalize=spec.get("normalize"))
    return evaluate(model, loader, dev, precision, progress=progress, desc=f"eval {split} ({tta})")
