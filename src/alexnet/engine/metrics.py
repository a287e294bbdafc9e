"""Top-k counts and the run folder's metrics log (JSON lines, TensorBoard)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..strict_json import dumps


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[int]:
    """How many rows have their label among the top-k scores, for each k."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices
    hit = top.eq(labels.view(-1, 1))
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def summary(count: int, correct1: int, correct5: int) -> dict:
    """``{"count", "top1_acc", "top5_acc", "top1_err", "top5_err"}`` as fractions."""
    if count == 0:
        return {"count": 0, "top1_acc": float("nan"), "top5_acc": float("nan"), "top1_err": float("nan"), "top5_err": float("nan")}
    a1, a5 = correct1 / count, correct5 / count
    return {"count": count, "top1_acc": a1, "top5_acc": a5, "top1_err": 1 - a1, "top5_err": 1 - a5}


class MetricsLog:
    """Appends one JSON object per line to ``RUN_DIR/metrics.jsonl``.

    Also writes TensorBoard events when the ``tensorboard`` package is
    installed. Only the main process logs (``enabled=False`` elsewhere).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if enabled:
            self._end_cut_line()
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def _end_cut_line(self) -> None:
        """A run killed in the middle of a line left it unfinished: end it, so the next record is a line of its own."""
        try:
            with open(self.path, "rb+") as f:
                if f.seek(0, os.SEEK_END) == 0:
                    return
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        except (FileNotFoundError, NotADirectoryError):
            pass

    def write(self, kind: str, **values) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), "kind": kind, **values}
        with open(self.path, "a") as f:
            f.write(dumps(record) + "\n")  # a NaN loss is null: every line stays JSON
            f.flush()
        if self.tb is not None:
            step = values.get("step", 0)
            for k, v in values.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
