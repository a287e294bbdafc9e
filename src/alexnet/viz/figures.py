"""The paper's figures for any checkpoint, and training curves, as PNG.

- :func:`filters_figure`: conv1's kernels, one grid per tower side by side
  (the paper's Figure 3: one tower learns mostly colour-agnostic kernels,
  the other colour-specific ones);
- :func:`neighbors_figure`: each query image followed by its nearest
  training images in fc7 space (Figure 4);
- :func:`curves_figure`: training loss, validation top-1/top-5 error and
  learning rate from a run's ``metrics.jsonl``;
- :func:`confusion_figure`: a confusion matrix, rows normalised.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas,
never through pyplot's global state, so they work headless and in threads.
:func:`save_figure` writes one atomically; :func:`figure_png` gives the
bytes (for the HTML report).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..engine.metrics import read_metrics  # the one metrics.jsonl reader; figures.read_metrics stays
from ..errors import UserError
from ..fileio import atomic_write

__all__ = [
    "filters_figure",
    "neighbors_figure",
    "curves_figure",
    "confusion_figure",
    "read_metrics",
    "save_figure",
    "figure_png",
    "kernel_mosaic",
]

DPI = 110


def _figure(width: float, height: float, layout: str | None = None) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, out: str | os.PathLike) -> Path:
    """Write ``fig`` to ``out`` (PNG) atomically; returns the path."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"figures are PNG files: --out should end in .png, not {out.name!r}")
    data = figure_png(fig)
    atomic_write(out, lambda f: f.write(data))
    return out


# ---------------------------------------------------------------- filters
def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) for ``n`` tiles: the most square exact factorisation, else a near-square grid."""
    best = None
    for cols in range(1, int(math.isqrt(n)) + 1):
        if n % cols == 0:
            best = (n // cols, cols)
    if best is None or best[1] < math.sqrt(n) / 2:
        rows = math.ceil(math.sqrt(n))
        best = (rows, math.ceil(n / rows))
    return best


def kernel_mosaic(weight: torch.Tensor | np.ndarray, rows: int | None = None, cols: int | None = None,
                  gap: int = 1) -> np.ndarray:
    """``N x C x h x w`` kernels as one ``H x W x 3`` image in [0, 1], each kernel contrast-stretched.

    Three input channels show as RGB; any other number as the mean over
    channels, in grey.
    """
    w = weight.detach().cpu().float().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float32)
    if w.ndim != 4:
        raise ValueError(f"expected N x C x h x w kernels, got shape {w.shape}")
    n, c, kh, kw = w.shape
    if c != 3:
        w = np.repeat(w.mean(1, keepdims=True), 3, axis=1)
    lo = w.reshape(n, -1).min(1)[:, None, None, None]
    hi = w.reshape(n, -1).max(1)[:, None, None, None]
    w = (w - lo) / np.maximum(hi - lo, 1e-12)
    if rows is None or cols is None:
        rows, cols = _grid(n)
    img = np.ones((rows * (kh + gap) + gap, cols * (kw + gap) + gap, 3), np.float32)
    for j in range(n):
        r, cc = divmod(j, cols)
        y, x = gap + r * (kh + gap), gap + cc * (kw + gap)
        img[y : y + kh, x : x + kw] = w[j].transpose(1, 2, 0)
    return img


def filters_figure(model: torch.nn.Module, layer: str = "conv1", title: str | None = None) -> Figure:
    """The kernels of conv ``layer`` as image grids, one per tower, side by side (Figure 3)."""
    conv = getattr(model, layer, None)
    if not isinstance(conv, torch.nn.Conv2d):
        known = [n for n, m in model.named_children() if isinstance(m, torch.nn.Conv2d)]
        raise UserError(f"{layer!r} is not a convolution of this model; choose one of: {', '.join(known)}")
    w = conv.weight.detach().cpu()
    cfg = getattr(model, "cfg", None)
    towers = max(1, int(getattr(cfg, "towers", 1) or 1))
    if conv.groups > 1:
        towers = conv.groups
    if w.shape[0] % towers:
        towers = 1
    per = w.shape[0] // towers
    rows, cols = _grid(per)
    if rows < cols:
        rows, cols = cols, rows  # towers side by side: tall grids
    mosaics = [kernel_mosaic(w[t * per : (t + 1) * per], rows, cols) for t in range(towers)]
    h, wd = mosaics[0].shape[:2]
    scale = 4.5 / max(h, wd)  # inches per mosaic pixel: each tower's grid about 4.5 inches on its long side
    fig = _figure(towers * wd * scale + 0.4 * towers, h * scale + 0.7, layout="constrained")
    axes = fig.subplots(1, towers, squeeze=False)[0]
    for t, (ax, m) in enumerate(zip(axes, mosaics)):
        ax.imshow(m, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if towers > 1:
            ax.set_title(f"tower {t + 1}: kernels {t * per + 1}-{(t + 1) * per}", fontsize=9)
    c = w.shape[1]
    fig.suptitle(title or f"{layer}: {w.shape[0]} kernels of {w.shape[-2]}x{w.shape[-1]}x{c}", fontsize=10)
    return fig


def drawable(text: Any) -> str:
    """``text`` as matplotlib can draw it: a class name from a folder whose name is not UTF-8 holds lone
    surrogates (``os.fsdecode``), which the font code refuses: each becomes U+FFFD."""
    text = str(text)
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


# -------------------------------------------------------------- neighbours
def _show(ax, img: np.ndarray, caption: str, color: str | None) -> None:
    img = np.asarray(img, np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if color:
        for s in ax.spines.values():
            s.set_edgecolor(color)
            s.set_linewidth(3)
    ax.set_title(drawable(caption), fontsize=7)


def neighbors_figure(queries: Sequence[dict[str, Any]], title: str | None = None) -> Figure:
    """One row per query: the query image, then its neighbours, nearest first (Figure 4).

    Each query is ``{"image": HxWxC array in [0,1], "caption": str,
    "label": int | None, "neighbors": [{"image", "caption", "label"}, ...]}``;
    neighbours of the query's class are framed green, others red.
    """
    if not queries:
        raise UserError("no query images to show")
    k = max(len(q["neighbors"]) for q in queries)
    n = len(queries)
    fig = _figure(1.25 * (k + 1) + 0.3, 1.4 * n + 0.5)
    axes = fig.subplots(n, k + 1, squeeze=False)
    for r, q in enumerate(queries):
        _show(axes[r, 0], q["image"], q.get("caption", "query"), "black")
        for j in range(k):
            ax = axes[r, j + 1]
            if j >= len(q["neighbors"]):
                ax.axis("off")
                continue
            nb = q["neighbors"][j]
            same = None
            if q.get("label") is not None and nb.get("label") is not None:
                same = "tab:green" if int(nb["label"]) == int(q["label"]) else "tab:red"
            _show(ax, nb["image"], nb.get("caption", ""), same)
    fig.suptitle(drawable(title or "query (left) and its nearest training images in fc7 space"), fontsize=10)
    fig.subplots_adjust(wspace=0.08, hspace=0.45, top=1 - 0.75 / fig.get_figheight(), bottom=0.1 / fig.get_figheight())
    return fig


# ------------------------------------------------------------------ curves
def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def curves_figure(records: Sequence[dict[str, Any]], title: str | None = None) -> Figure:
    """Training loss, validation top-1/top-5 error (%) and learning rate against the step."""
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not steps and not epochs:
        raise UserError("no step or epoch records in the metrics")
    fig = _figure(12, 3.4)
    ax_loss, ax_err, ax_lr = fig.subplots(1, 3)

    def series(recs, key, x="step"):
        pts = [(_num(r.get(x)), _num(r.get(key))) for r in recs]
        pts = [(a, b) for a, b in pts if a is not None and b is not None]
        return ([a for a, _ in pts], [b for _, b in pts])

    xs, ys = series(steps, "train_loss")
    if xs:
        ax_loss.plot(xs, ys, lw=1, alpha=0.6, label="train (per log step)")
    xs, ys = series(epochs, "train_loss")
    if xs:
        ax_loss.plot(xs, ys, "o-", lw=1.5, ms=3, label="train (epoch mean)")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_title("training loss", fontsize=10)
    if ax_loss.lines:
        ax_loss.legend(fontsize=7)

    for key, label in (("val_top1_err", "top-1"), ("val_top5_err", "top-5")):
        xs, ys = series(epochs, key, "epoch")
        if xs:
            scale = 100.0 if max(ys) <= 1.0 else 1.0  # fractions or percent
            ax_err.plot(xs, [y * scale for y in ys], "o-", ms=3, label=label)
    ax_err.xaxis.get_major_locator().set_params(integer=True)
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("validation error (%)")
    ax_err.set_title("validation error", fontsize=10)
    if ax_err.lines:
        ax_err.legend(fontsize=7)
    else:
        ax_err.text(0.5, 0.5, "no validation records", ha="center", va="center", transform=ax_err.transAxes)

    xs, ys = series(steps or epochs, "lr")
    if xs:
        ax_lr.plot(xs, ys, lw=1.5, drawstyle="steps-post")
        if min(ys) > 0:
            ax_lr.set_yscale("log")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("learning rate", fontsize=10)
    for ax in (ax_loss, ax_err, ax_lr):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(drawable(title), fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------- confusion
def confusion_figure(cm: np.ndarray, class_names: Sequence[str] = (), title: str | None = None) -> Figure:
    """Row-normalised confusion matrix (true class down, prediction across); counts written when small."""
    cm = np.asarray(cm, np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"a confusion matrix is square, got shape {cm.shape}")
    k = cm.shape[0]
    rows = cm.sum(1, keepdims=True)
    frac = cm / np.maximum(rows, 1)
    size = min(14.0, max(4.0, 0.45 * k + 2))
    fig = _figure(size + 1.2, size)
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    names = [drawable(n) for n in class_names][:k]
    if k <= 40 and len(names) == k:
        short = [n if len(n) <= 18 else n[:17] + "…" for n in names]
        ax.set_xticks(range(k), short, rotation=90, fontsize=7)
        ax.set_yticks(range(k), short, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    acc = np.trace(cm) / max(1, cm.sum())
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(drawable(title or f"confusion matrix: {cm.sum()} images, accuracy {100 * acc:.1f}%"), fontsize=10)
    fig.tight_layout()
    return fig
