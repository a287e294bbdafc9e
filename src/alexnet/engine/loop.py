"""The two loops: ``train_one_epoch`` and ``evaluate``, apart from any wiring.

One mixed-precision path: ``autocast`` with ``enabled=False`` for fp32 and a
``GradScaler`` that is a no-op unless the precision is fp16. ``resolve_precision``
turns ``auto`` into bf16 where the hardware computes it and fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .distributed import all_reduce_sum
from .inference import average_views
from .metrics import summary, topk_hits
from .optim import PlateauSchedule

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX), where oneDNN's bf16 kernels are fast.

    Without them (an AVX2-only CPU such as a Zen 3 EPYC) bf16 is emulated: a 2048^2 bf16 matmul ran at
    0.34 GFLOP/s against 134 in fp32, and a training step of the Fashion-MNIST recipe 10x slower than fp32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on a CUDA GPU that supports it and on a CPU with bf16 units, else fp32; others as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return "fp32"


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A one-line warning when bf16 was asked for explicitly on a CPU that can only emulate it."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        return ("run.precision=bf16 on a CPU without bf16 units (no AVX-512 BF16 or AMX): emulated, about 10x "
                "slower than fp32 here; run.precision=auto picks fp32 on this CPU")
    return None


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")


@dataclass
class TrainState:
    """What the loop needs and what a checkpoint keeps, in one object."""

    model: torch.nn.Module  # possibly wrapped by DDP / torch.compile
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str = "fp32"
    accumulate: int = 1
    channels_last: bool = False
    schedule: PlateauSchedule | None = None  # sets the learning rate: warm-up before each step, drops per epoch
    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # optimizer steps done since the start of the run
    batch_in_epoch: int = 0  # batches done in the current epoch
    seen: int = 0  # samples this epoch so far (this process)
    label_smoothing: float = 0.0
    read_every: int = 1  # steps between reads of the device's running sums (the trainer: run.log_every)
    nonfinite_steps: int = 0  # at the last read: the longest run of steps in a row whose loss was not finite
    last_loss: float = math.nan  # at the last read: the loss of that step
    _loss_sum: float = field(default=0.0, repr=False)
    _correct: int = field(default=0, repr=False)
    _sums: torch.Tensor | None = field(default=None, repr=False)
    _run: int = field(default=0, repr=False)  # at the last read: the steps in a row, up to it, whose loss was not finite
    _unread: bool = field(default=False, repr=False)  # steps were recorded since the last read

    # The running sums of an epoch live on the device (no host sync per step); reading ``loss_sum`` or
    # ``correct`` reads them (one sync). Float64 on the device, added in the same order as the host once
    # added the per-step ``loss.item()`` values: the same numbers, bit for bit.
    @property
    def loss_sum(self) -> float:
        """The training loss summed over this epoch's samples so far (this process)."""
        self.read()
        return self._loss_sum

    @loss_sum.setter
    def loss_sum(self, value: float) -> None:
        self.read()
        self._loss_sum, self._sums = float(value), None

    @property
    def correct(self) -> int:
        """Of this epoch's samples so far, those the training forward predicted right (under dropout and augmentation)."""
        self.read()
        return self._correct

    @correct.setter
    def correct(self, value: int) -> None:
        self.read()
        self._correct, self._sums = int(value), None

    def record(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        """Add a step (its batch-mean loss as a float64 device scalar, its count of right predictions) to the
        device's sums: ``[loss_sum, correct, current run of non-finite losses, longest run since the last read,
        last loss]``. No host sync."""
        s = self._sums
        if s is None:  # (again) after the host set the sums: a new epoch, a resume
            s = self._sums = torch.tensor([self._loss_sum, self._correct, self._run, self._run, math.nan],
                                          dtype=torch.float64, device=loss.device)
        s[0] += loss * n
        s[1] += correct
        s[2] = torch.where(torch.isfinite(loss), 0.0, s[2] + 1)
        s[3] = torch.maximum(s[3], s[2])
        s[4] = loss
        self._unread = True

    def read(self) -> None:
        """Bring the device's sums to the host (one sync); nothing to do when no step was recorded since."""
        s = self._sums
        if s is None or not self._unread:
            return
        loss_sum, correct, run, longest, last = s.tolist()
        self._loss_sum, self._correct, self._run = loss_sum, int(correct), int(run)
        self.nonfinite_steps, self.last_loss = int(longest), last
        s[3] = s[2]  # the longest run from here on starts with the current one
        self._unread = False


def _images_to(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def train_one_epoch(
    state: TrainState,
    loader,
    on_step: Callable[[TrainState, float, float], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> dict:
    """One pass over ``loader`` (from ``state.batch_in_epoch`` on).

    Each batch is one optimizer step; with ``state.accumulate > 1`` it is cut
    into that many micro-batches whose gradients add up to the whole batch's
    (same loss scale, same meaning, less memory). Before each step
    ``state.schedule`` sets the warm-up rate. ``on_step(state, loss,
    images_per_s)`` runs after every step (logging, timed checkpoints).

    No step waits for the device: the loss and the count of right predictions
    are added up there (:meth:`TrainState.record`) and read once every
    ``state.read_every`` steps and at the epoch's last batch. At those steps
    ``on_step`` gets that step's loss and the images/s since the last read
    (and ``state.nonfinite_steps``, ``state.correct``, ``state.loss_sum`` are
    current); at the others it gets ``None, None``.
    """
    model = state.model
    model.train()
    bar = tqdm(total=len(loader), initial=state.batch_in_epoch, desc=desc, disable=not progress, leave=False,
               dynamic_ncols=True)
    tick, seen_at_tick = time.perf_counter(), state.seen
    batches = len(loader)
    for images, labels in loader:
        images = _images_to(images, state.device, state.channels_last)
        labels = labels.to(state.device, non_blocking=True)
        n = labels.shape[0]
        chunks = max(1, min(state.accumulate, n))
        state.optimizer.zero_grad(set_to_none=True)
        loss_total, correct = None, None
        for i, (x, y) in enumerate(zip(images.chunk(chunks), labels.chunk(chunks))):
            last = i == chunks - 1
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast(state.device, state.precision):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, reduction="sum",
                                       label_smoothing=state.label_smoothing) / n
                state.scaler.scale(loss).backward()
            part = loss.detach().double()  # summed in float64 from 0.0, as the host summed loss.item() values
            hits = (logits.detach().argmax(1) == y).sum()
            loss_total = part if loss_total is None else loss_total + part
            correct = hits if correct is None else correct + hits
        if state.schedule is not None:
            state.schedule.warm_up(state.step)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.step += 1
        state.batch_in_epoch += 1
        state.record(loss_total, correct, n)
        state.seen += n
        loss_value = ips = None
        if state.step % max(1, state.read_every) == 0 or state.batch_in_epoch >= batches:
            state.read()  # the one sync: every read_every steps and at the epoch's end
            loss_value = state.last_loss
            now = time.perf_counter()
            ips = (state.seen - seen_at_tick) / max(now - tick, 1e-9)
            tick, seen_at_tick = now, state.seen
            bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{ips:.0f}")
        bar.update(1)
        if on_step is not None:
            on_step(state, loss_value, ips)
    bar.close()
    return {"train_loss": state.loss_sum / max(state.seen, 1), "samples": state.seen,
            "train_top1_err": 1 - state.correct / max(state.seen, 1)}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "eval",
) -> dict:
    """Top-1/top-5 over the loader, summed over all processes.

    Batches of ``B x 10 x C x H x W`` (the 10-patch test) average the softmax
    of the ten patches of each image, as the paper does (:func:`average_views`).
    """
    model.eval()

    def probabilities(images: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            logits = model(_images_to(images, device, channels_last))
        return logits.float().softmax(dim=1)

    counts = torch.zeros(3, dtype=torch.float64, device=device)  # added up on the device: no sync per batch
    for images, labels in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        probs = average_views(probabilities, images)
        c1, c5 = topk_hits(probs, labels.to(device, non_blocking=True))
        counts[0] += labels.shape[0]
        counts[1] += c1
        counts[2] += c5
    counts = all_reduce_sum(counts).cpu()
    n, c1, c5 = (int(v) for v in counts.tolist())
    return summary(n, c1, c5)
