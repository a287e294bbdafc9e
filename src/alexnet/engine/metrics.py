"""Top-k counts and the run folder's metrics log (JSON lines, TensorBoard)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..fileio import open_nofollow
from ..strict_json import dumps


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """How many rows have their label among the top-k scores, for each k: 0-dim tensors on the scores'
    device (no host sync)."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices
    hit = top.eq(labels.view(-1, 1))
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[int]:
    """How many rows have their label among the top-k scores, for each k."""
    return [int(c) for c in topk_hits(scores, labels, ks)]


def summary(count: int, correct1: int, correct5: int) -> dict:
    """``{"count", "top1_acc", "top5_acc", "top1_err", "top5_err"}`` as fractions."""
    if count == 0:
        return {"count": 0, "top1_acc": float("nan"), "top5_acc": float("nan"), "top1_err": float("nan"), "top5_err": float("nan")}
    a1, a5 = correct1 / count, correct5 / count
    return {"count": count, "top1_acc": a1, "top5_acc": a5, "top1_err": 1 - a1, "top5_err": 1 - a5}


class MetricsLog:
    """Appends one JSON object per line to ``RUN_DIR/metrics.jsonl``; :func:`read_metrics` reads them back.

    The file is opened once, with ``O_NOFOLLOW``: a symbolic link there is
    refused (a one-line UserError), never written through. Also writes
    TensorBoard events when the ``tensorboard`` package is installed. Only
    the main process logs (``enabled=False`` elsewhere).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        self._fd: int | None = None
        if enabled:
            self._fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            self._drop_cut_line()
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def _drop_cut_line(self) -> None:
        """A run killed in the middle of a line left it unfinished: remove it, so that only whole lines remain
        (a complete record that lacks only its newline gets one)."""
        fd = self._fd
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        start, chunk = size, 1 << 16
        while start > 0:  # find the last newline
            lo = max(0, start - chunk)
            at = os.pread(fd, start - lo, lo).rfind(b"\n")
            if at >= 0:
                start = lo + at + 1
                break
            start = lo
        tail = os.pread(fd, size - start, start)
        if _parse(tail) is not None:
            os.write(fd, b"\n")
        else:
            os.ftruncate(fd, start)

    def write(self, kind: str, **values) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), "kind": kind, **values}
        line = (dumps(record) + "\n").encode()  # a NaN loss is null: every line stays JSON
        while line:  # O_APPEND: each write lands at the end
            line = line[os.write(self._fd, line):]
        if self.tb is not None:
            step = values.get("step", 0)
            for k, v in values.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (the file, or the run folder that holds it): the one reader.

    A last line without its newline that is no JSON object is the line a kill
    cut short: it is skipped. Any other such line is damage: a one-line
    :class:`UserError` naming it. Records a resumed run logged again are
    given once: each ``setup`` record (a start or a resume, at epoch E and
    step S) replaces the earlier step records past S and the epoch records
    of E on.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"metrics file not found: {path}")
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = _parse(line)
        if record is None:
            if i == len(lines):  # no newline after it: cut short by a kill
                continue
            shown = line[:40].decode("utf-8", "replace")
            raise UserError(f"{path} is damaged: line {i} is not a JSON object ({shown!r})")
        if record.get("kind") == "setup":
            epoch, step = record.get("epoch"), record.get("step")
            if isinstance(epoch, int) and isinstance(step, int):
                records = [r for r in records if not _replaced(r, epoch, step)]
        records.append(record)
    return records


def _replaced(record: dict, epoch: int, step: int) -> bool:
    """Whether a resume at ``epoch``/``step`` logs ``record`` again."""
    kind = record.get("kind")
    if kind == "step":
        return isinstance(record.get("step"), (int, float)) and record["step"] > step
    if kind == "epoch":
        return isinstance(record.get("epoch"), (int, float)) and record["epoch"] >= epoch
    return False
