"""``alexnet demo``: the whole system end to end on the built-in dataset.

Generate the synthetic dataset (32 px), prepare it, train ``alexnet-small``
with the ``demo`` recipe, evaluate with the centre crop and the 10-patch test,
write the HTML report, and print a summary naming the run folder. Each stage
is skipped when its output is already complete, so a rerun (or a run killed
half way) picks up where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .engine.config import load_config
from .engine.inference import TTA
from .fileio import atomic_write

DEMO_DATA = dict(classes=10, train_per_class=500, val_per_class=100, size=32, seed=0)


def _stage(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def run_demo(out: str | Path = "alexnet-demo", overrides: list[str] = (), progress: bool = True,
             epoch_lines: bool | None = None) -> dict:
    from .data import generate_synth, prepare, read_meta
    from .engine.evaluate import evaluate_checkpoint
    from .engine.trainer import fit

    out = Path(out)
    t0 = time.time()
    raw, prepared, run = out / "synth", out / "prepared", out / "run"

    _stage(f"built-in dataset in {raw}")
    generate_synth(raw, progress=progress, **DEMO_DATA)  # returns at once when already complete

    _stage(f"preparing {prepared}")
    prepare(raw, prepared, progress=progress)
    meta = read_meta(prepared)

    cfg = load_config("demo", overrides)
    resume = (run / "last.ckpt").is_file()
    _stage(f"training {cfg.model.name} for {cfg.run.epochs} epochs in {run}" + (" (resuming)" if resume else ""))
    t_train = time.time()
    # no last.ckpt: a run killed before its first checkpoint left at most its first files; start it afresh
    fit(cfg, prepared, run, resume=resume, progress=progress, epoch_lines=epoch_lines, force=not resume)
    train_s = time.time() - t_train

    ckpt = run / "last.ckpt"
    results = {}
    for tta in TTA:
        _stage(f"evaluating {ckpt.name} on val ({tta})")
        results[tta] = evaluate_checkpoint(ckpt, prepared, split="val", tta=tta, workers=0, device=cfg.run.device,
                                           progress=progress)
    atomic_write(run / "eval.json", lambda f: f.write(json.dumps(results, indent=1).encode()))

    report = None
    try:
        from .viz.report import write_report
    except ImportError:  # the report module is optional in a trimmed install
        write_report = None
    if write_report is not None:
        _stage("writing the report")
        report = write_report(run, data=prepared, checkpoint=ckpt, device=cfg.run.device, progress=progress)

    total = time.time() - t0
    summary = {
        "run_dir": str(run),
        "classes": len(meta["classes"]),
        "train_images": meta["splits"]["train"],
        "val_images": meta["splits"]["val"],
        "train_time_s": round(train_s, 1),
        "total_time_s": round(total, 1),
        "center": results["center"],
        "10crop": results["10crop"],
        "report": str(report) if report else None,
    }
    c, t = results["center"], results["10crop"]
    print()
    print(f"alexnet demo: {summary['classes']} classes, {summary['train_images']} training / {summary['val_images']} validation images")
    print(f"  model {cfg.model.name}, {cfg.run.epochs} epochs, trained in {train_s:.0f} s; whole demo {total:.0f} s")
    print(f"  val top-1 accuracy: {c['top1_acc']:.2%} centre crop, {t['top1_acc']:.2%} 10-patch "
          f"(top-5: {c['top5_acc']:.2%}, {t['top5_acc']:.2%})")
    print(f"  run folder: {run}")
    if report:
        print(f"  report: {report}")
    return summary
