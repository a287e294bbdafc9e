"""A study's rows -> a Markdown table (mean +- std over seeds), a summary and a figure."""

from __future__ import annotations

import math
import os
from pathlib import Path
from statistics import mean, stdev

from ..fileio import atomic_write
from ..strict_json import dumps
from .studies import TARGET_TRAIN_ERR, Study


def _ms(values, pct: bool = True, digits: int = 2) -> str:
    """``mean +- std`` of the finite values (``-`` when there are none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    m, s = mean(vals), (stdev(vals) if len(vals) > 1 else 0.0)
    if pct:
        return f"{100 * m:.{digits}f} ± {100 * s:.{digits}f}%"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _by_arm(study: Study, rows: list[dict]) -> dict[str, list[dict]]:
    return {arm.label: [r for r in rows if r["arm"] == arm.label] for arm in study.arms}


def best_lr(study: Study, rows: list[dict]) -> dict[str, str]:
    """relu-vs-tanh: per activation, the arm whose seeds reach the target in the fewest epochs (mean)."""
    best = {}
    for group in dict.fromkeys(a.group for a in study.arms):
        scored = []
        for arm in (a for a in study.arms if a.group == group):
            runs = [r for r in rows if r["arm"] == arm.label]
            if runs and all(r["to_target"]["reached"] for r in runs):
                scored.append((mean(r["to_target"]["epochs"] for r in runs), arm.label))
        if scored:
            best[group] = min(scored)[1]
    return best


def markdown(study: Study, rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    head = [f"### {study.name}", "", f"Claim: {study.claim}.", "",
            f"{len(seeds)} seed(s) per arm ({', '.join(map(str, seeds))}); mean ± std over seeds."]
    arms = _by_arm(study, rows)
    if study.kind == "time-to-target":
        best = best_lr(study, rows)
        lines = ["", f"| arm | epochs to {TARGET_TRAIN_ERR:.0%} training error | seconds to it | reached | "
                     "best lr of its activation |", "|---|---|---|---|---|"]
        for label, runs in arms.items():
            if not runs:
                continue
            reached = [r for r in runs if r["to_target"]["reached"]]
            lines.append(f"| {label} | {_ms([r['to_target']['epochs'] for r in reached], pct=False)} | "
                         f"{_ms([r['to_target']['seconds'] for r in reached], pct=False, digits=1)} | "
                         f"{len(reached)}/{len(runs)} | {'yes' if label in best.values() else ''} |")
        if {"relu", "tanh"} <= set(best):
            r = [x for x in rows if x["arm"] == best["relu"]]
            t = [x for x in rows if x["arm"] == best["tanh"]]
            ratio_e = mean(x["to_target"]["epochs"] for x in t) / mean(x["to_target"]["epochs"] for x in r)
            ratio_s = mean(x["to_target"]["seconds"] for x in t) / mean(x["to_target"]["seconds"] for x in r)
            lines += ["", f"Best lr each: tanh needs **{ratio_e:.2f}x** the epochs and {ratio_s:.2f}x the seconds "
                          f"of ReLU to reach {TARGET_TRAIN_ERR:.0%} training error (the paper: 6x)."]
        else:
            missing = sorted({"relu", "tanh"} - set(best))
            lines += ["", f"No ratio: {', '.join(missing)} reached {TARGET_TRAIN_ERR:.0%} training error with "
                          "every seed at no learning rate of the grid within the epochs run."]
        return "\n".join(head + lines) + "\n"
    first = study.arms[0].label
    base = {r["seed"]: r for r in arms[first]}
    lines = ["", "| arm | val top-1 err (last epoch) | vs first arm | best val err | train err | "
                 "val - train | epoch of best | loss after epoch 1 | the paper |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, runs in arms.items():
        if not runs:
            continue
        diffs = [r["val_top1_err"] - base[r["seed"]]["val_top1_err"] for r in runs
                 if r["seed"] in base and r["val_top1_err"] is not None
                 and base[r["seed"]]["val_top1_err"] is not None]
        gaps = [r["val_top1_err"] - r["train_top1_err"] for r in runs
                if r["val_top1_err"] is not None and r["train_top1_err"] is not None]
        lines.append(
            f"| {label} | {_ms([r['val_top1_err'] for r in runs])} | "
            f"{'' if label == first else _signed(diffs)} | {_ms([r['best_val_top1_err'] for r in runs])} | "
            f"{_ms([r['train_top1_err'] for r in runs])} | {_ms(gaps)} | "
            f"{_ms([r['best_epoch'] for r in runs], pct=False, digits=1)} | "
            f"{_ms([r['first_epoch_train_loss'] for r in runs], pct=False, digits=3)} | "
            f"{study.paper.get(label, '')} |")
    return "\n".join(head + lines) + "\n"


def _signed(diffs: list[float]) -> str:
    if not diffs:
        return "-"
    m, s = mean(diffs), (stdev(diffs) if len(diffs) > 1 else 0.0)
    return f"{100 * m:+.2f} ± {100 * s:.2f}"


def figure(study: Study, rows: list[dict]):
    """Figure 1 of the paper for relu-vs-tanh (training error against epochs); val error curves otherwise."""
    from ..viz.figures import _figure

    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    arms = _by_arm(study, rows)
    if study.kind == "time-to-target":
        show = best_lr(study, rows) or {}
        for group, label in show.items():
            for r in arms[label]:
                pts = [(s / r["steps_per_epoch"], e) for s, e in r["train_err_curve"] if e is not None]
                ax.plot(*zip(*pts), color="C0" if group == "relu" else "C1", lw=1,
                        label=label if r["seed"] == arms[label][0]["seed"] else None,
                        ls="-" if group == "relu" else "--")
        ax.axhline(TARGET_TRAIN_ERR, color="grey", lw=0.8)
        ax.set_xlabel("epochs")
        ax.set_ylabel("training error (running)")
    else:
        for i, (label, runs) in enumerate(arms.items()):
            for r in runs:
                xs = [c["epoch"] for c in r["curve"]]
                ax.plot(xs, [c["val_top1_err"] for c in r["curve"]], color=f"C{i}", lw=1,
                        label=label if r is runs[0] else None)
                if all(c["train_top1_err"] is not None for c in r["curve"]):
                    ax.plot(xs, [c["train_top1_err"] for c in r["curve"]], color=f"C{i}", lw=0.8, ls=":")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 error (solid: val, dotted: train)")
    ax.set_title(study.name)
    ax.legend(fontsize=8)
    return fig


def write_outputs(study: Study, rows: list[dict], out: str | os.PathLike) -> dict[str, Path]:
    from ..viz.figures import save_figure

    folder = Path(out) / study.name
    table = folder / "table.md"
    atomic_write(table, markdown(study, rows).encode())
    summary = folder / "summary.json"
    atomic_write(summary, (dumps({"study": study.name, "claim": study.claim, "runs": [
        {k: v for k, v in r.items() if k not in ("curve", "train_err_curve")} for r in rows]}, indent=1)
        + "\n").encode())
    png = save_figure(figure(study, rows), folder / "curves.png")
    return {"table": table, "summary": summary, "figure": png}
