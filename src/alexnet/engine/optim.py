"""The paper's SGD update rule and its learning-rate schedule.

Paper (section 5), learning rate e, momentum 0.9, weight decay 0.0005:

    v <- 0.9 v - 0.0005 e w - e dL/dw
    w <- w + v

``torch.optim.SGD`` keeps v in units of gradient (v <- m v + g + wd w;
w <- w - e v). The two agree while e is constant; right after e drops the
paper's v still carries steps taken at the old rate, torch's is rescaled by the
new one. ``optim.rule: paper`` uses :class:`PaperSGD`, ``torch`` the built-in.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class PaperSGD(Optimizer):
    """SGD with momentum and weight decay exactly as Krizhevsky et al. write it."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0005):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            vs = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                vs.append(state["velocity"])
            # v = m v - (wd lr) w - lr g ; w = w + v
            torch._foreach_mul_(vs, m)
            if wd:
                torch._foreach_add_(vs, params, alpha=-wd * lr)
            torch._foreach_add_(vs, grads, alpha=-lr)
            torch._foreach_add_(params, vs)
        return loss


def make_optimizer(params, rule: str, lr: float, momentum: float, weight_decay: float, fused: bool = False) -> Optimizer:
    """The update rule by name. ``fused`` (rule torch): ``torch.optim.SGD(fused=True)``, one kernel for the
    whole step; the paper's rule is written with multi-tensor (``torch._foreach``) ops either way."""
    if rule == "paper":
        if fused:
            raise ValueError("a fused step is torch.optim.SGD's (optim.rule torch); the paper rule has none")
        return PaperSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if rule == "torch":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused or None)
    raise ValueError(f"unknown update rule {rule!r} (paper or torch)")


class PlateauSchedule:
    """The learning rate over a run: a linear warm-up, then divide by 10 when validation error stops improving.

    The paper: "divide the learning rate by 10 when the validation error rate
    stopped improving with the current learning rate", three times in all.
    After ``patience`` epochs without an improvement larger than
    ``min_delta`` the rate is multiplied by ``factor``, at most ``max_drops``
    times (:meth:`step`, once an epoch). Before that, over the first
    ``warmup_steps`` optimizer steps of the run, the rate rises linearly from
    ``base_lr / warmup_steps`` to ``base_lr`` (:meth:`warm_up`, before each
    step; the paper has none). ``base_lr`` is the optimizer's rate when the
    schedule is made; only the plateau counters are state (a resumed run's
    warm-up follows from its step count).
    """

    def __init__(self, optimizer: Optimizer, patience: int = 3, factor: float = 0.1, max_drops: int = 3,
                 min_delta: float = 0.0, warmup_steps: int = 0):
        self.optimizer = optimizer
        self.patience, self.factor, self.max_drops, self.min_delta = patience, factor, max_drops, min_delta
        self.warmup_steps = warmup_steps
        self.base_lr = optimizer.param_groups[0]["lr"]
        self.best = float("inf")
        self.bad_epochs = 0
        self.drops = 0

    def warm_up(self, step: int) -> None:
        """Set the rate for optimizer step ``step`` (0-based, counted over the run) while it is in the warm-up."""
        if step < self.warmup_steps:
            for g in self.optimizer.param_groups:
                g["lr"] = self.base_lr * (step + 1) / self.warmup_steps

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, val_error: float) -> bool:
        """Record one epoch's validation error; True when the rate was dropped."""
        if val_error < self.best - self.min_delta:
            self.best, self.bad_epochs = val_error, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            for g in self.optimizer.param_groups:
                g["lr"] *= self.factor
            self.drops += 1
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs, self.drops = float(state["best"]), int(state["bad_epochs"]), int(state["drops"])


class OneCycleSchedule:
    """One cycle over the run: linear warm-up to ``base_lr``, then linear decay to 0 at the last step.

    Not the paper's schedule (it drops the rate by 10 on plateaus, :class:`PlateauSchedule`): a short
    run on small data has no time to wait for plateaus (``configs/fashion-mnist.yaml``). The rate of
    every step follows from the step count alone, so there is no state to save and a resumed run
    continues on the same curve. Same interface as :class:`PlateauSchedule`.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0, total_steps: int = 0):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps  # steps of the whole run; the trainer sets it from its loader
        self.base_lr = optimizer.param_groups[0]["lr"]

    def rate(self, step: int) -> float:
        """The rate of optimizer step ``step`` (0-based, counted over the run)."""
        if self.total_steps < 1:
            raise RuntimeError("OneCycleSchedule.total_steps is not set")
        warmup = min(self.warmup_steps, self.total_steps)
        if step < warmup:
            return self.base_lr * (step + 1) / warmup
        left = self.total_steps - warmup
        return self.base_lr * max(0.0, (self.total_steps - step) / max(left, 1))

    def warm_up(self, step: int) -> None:
        """Set the rate for optimizer step ``step`` (called before every step)."""
        for g in self.optimizer.param_groups:
            g["lr"] = self.rate(step)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, val_error: float) -> bool:
        """Once an epoch; the cycle does not look at validation error."""
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
