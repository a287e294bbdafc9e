"""The paper's claims that small data can test, each one a study of a few arms.

An arm is a set of ``--set`` overrides applied to one base recipe; everything
else stays fixed. SPEC.md, "Claims of the paper that small data can test":

=============  =============================================================  ==========================
study          the paper's claim (Krizhevsky et al. 2012)                     measured here
=============  =============================================================  ==========================
relu-vs-tanh   ReLU nets reach 25% training error six times faster than       epochs and seconds to 25%
               tanh nets (CIFAR-10, four-layer CNN, no regularization,        training error, best lr of
               learning rate tuned for each)                                  a grid per activation
lrn            LRN: -1.4% top-1 error (ImageNet); 13% -> 11% (CIFAR-10)       val top-1 error
pooling        overlapping 3/2 pooling: -0.4% top-1 vs 2/2; slightly harder  val top-1 error, train-val
               to overfit                                                     gap
dropout        without dropout the net overfits substantially; with it,       val top-1 error, train-val
               convergence takes about twice the iterations                   gap, epochs to best
pca            PCA lighting: -1% top-1 error                                  val top-1 error
bias-init      biases of 1 speed up the early stage of learning               training loss after epoch 1
towers         two towers vs a single tower: -1.7% top-1 error (paper: of     val top-1 error
               half the width); here also one tower of the same total width
=============  =============================================================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass, field

TARGET_TRAIN_ERR = 0.25  # relu-vs-tanh: the paper's Figure 1 threshold
LR_GRID = (0.005, 0.01, 0.02, 0.05)  # relu-vs-tanh: learning rates tried for each activation


@dataclass(frozen=True)
class Arm:
    label: str
    overrides: tuple[str, ...]
    group: str = ""  # relu-vs-tanh: the activation; an lr grid is several arms of one group


@dataclass(frozen=True)
class Study:
    name: str
    claim: str
    arms: tuple[Arm, ...]
    common: tuple[str, ...] = ()  # overrides every arm of the study shares
    # what the table reports: "val" (val error and train-val gap) or "time-to-target" (relu-vs-tanh)
    kind: str = "val"
    paper: dict = field(default_factory=dict)  # arm label -> the paper's figure, for the table


# The activation study as the paper's Figure 1: no regularization, and a constant learning rate (no warm-up,
# no cycle: the time to 25% training error then measures the activation, not the schedule).
_NO_REGULARIZATION = ("model.dropout=0.0", "data.lighting=0.0", "optim.weight_decay=0.0",
                      "schedule.kind=plateau", "schedule.warmup_steps=0", "schedule.max_drops=0")

STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("relu-vs-tanh",
          "a ReLU net reaches 25% training error six times faster than a tanh net (Figure 1)",
          tuple(Arm(f"{act} lr={lr:g}", (f"model.activation={act}", f"optim.lr={lr:g}"), group=act)
                for act in ("relu", "tanh") for lr in LR_GRID),
          common=_NO_REGULARIZATION, kind="time-to-target",
          paper={"relu": "6x faster than tanh"}),
    Study("lrn", "local response normalization lowers the error (CIFAR-10: 13% -> 11%)",
          (Arm("LRN", ("model.lrn=true",)), Arm("no LRN", ("model.lrn=false",)),
           # The base recipe feeds [0, 1] values, on which alpha=1e-4 leaves LRN a constant divisor; alpha x 255^2
           # is the strength it has on the paper's raw pixel values (alexnet.models.options, lrn_alpha).
           Arm("LRN, alpha 1e-4 x 255^2", ("model.lrn=true", f"model.lrn_alpha={1e-4 * 255 ** 2:g}"))),
          paper={"LRN": "11%", "no LRN": "13%"}),
    Study("pooling", "overlapping pooling (3/2) lowers the error by 0.4% against 2/2 and overfits less",
          (Arm("3/2 (overlapping)", ("model.pool=overlap",)), Arm("2/2", ("model.pool=2/2",))),
          paper={"3/2 (overlapping)": "-0.4% top-1"}),
    Study("dropout", "without dropout the net overfits substantially; dropout doubles the iterations",
          (Arm("dropout 0.5", ("model.dropout=0.5",)), Arm("no dropout", ("model.dropout=0.0",))),
          paper={"no dropout": "overfits substantially"}),
    Study("pca", "PCA lighting lowers top-1 error by over 1%",
          (Arm("PCA lighting 0.1", ("data.lighting=0.1",)), Arm("no lighting", ("data.lighting=0.0",))),
          paper={"PCA lighting 0.1": "-1% top-1"}),
    Study("bias-init", "biases of 1 speed up the early stage of learning",
          (Arm("biases 1", ("model.bias=1.0",)), Arm("biases 0", ("model.bias=0.0",))),
          paper={"biases 1": "faster early learning"}),
    Study("towers", "two towers beat one tower (the paper: of half the width) by 1.7% top-1",
          (Arm("2 towers", ("model.towers=2",)),
           Arm("1 tower, same width", ("model.towers=1",)),
           Arm("1 tower, half width", ("model.towers=1", "model.width=0.5"))),
          paper={"1 tower, half width": "+1.7% top-1"}),
)}

NAMES = tuple(STUDIES)


def resolve(names: str) -> list[Study]:
    """``all`` or one study name -> the studies to run."""
    from ..errors import UserError

    if names == "all":
        return list(STUDIES.values())
    if names not in STUDIES:
        raise UserError(f"unknown study {names!r}; known: {', '.join(NAMES)}, all")
    return [STUDIES[names]]
