"""A checkpoint on a prepared split, with the transform it carries: top-1/top-5, and the confusion matrix."""

from __future__ import annotations

from contextlib import closing

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from .inference import Checkpoint
from .loop import evaluate, resolve_precision


def evaluate_checkpoint(checkpoint, data, split: str = "val", tta: str = "center", batch_size: int = 100,
                        workers: int | None = None, device: str = "auto", precision: str = "fp32",
                        progress: bool = True) -> dict:
    """``{"count", "top1_acc", "top5_acc", "top1_err", "top5_err"}`` of a checkpoint (a path or a :class:`Checkpoint`)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}")
    ck = Checkpoint.load(checkpoint, device)
    with closing(ck.eval_loader(data, split, batch_size=batch_size, workers=workers, tta=tta)) as loader:
        return evaluate(ck.model, loader, ck.device, resolve_precision(precision, ck.device), progress=progress, desc=f"eval {split} ({tta})")


@torch.no_grad()
def confusion_matrix(checkpoint, data, split: str = "val", *, tta: str = "center", batch_size: int = 256,
                     workers: int | None = None, device=None, progress: bool = True) -> np.ndarray:
    """``K x K`` counts over ``split``: row = true class, column = predicted class."""
    ck = Checkpoint.load(checkpoint, device)
    k = ck.num_classes
    cm = np.zeros((k, k), np.int64)
    with closing(ck.eval_loader(data, split, batch_size=batch_size, workers=workers, tta=tta)) as loader:
        with tqdm(total=loader.num_samples, desc=f"confusion {split}", unit="img", disable=not progress,
                  leave=False) as bar:
            for images, labels in loader:
                pred = ck.probabilities(images).argmax(1).numpy()
                np.add.at(cm, (labels.numpy(), pred), 1)
                bar.update(len(labels))
    return cm
