"""Run a study: every arm x seed trained by the project's trainer, resumable.

Layout of ``OUT`` (one folder per run, so an interrupted study resumes where
it stopped: a finished run has ``result.json`` and is skipped, an unfinished
one continues from its ``last.ckpt``)::

    OUT/STUDY/ARM/seed-N/{config.yaml, metrics.jsonl, last.ckpt, best.ckpt, result.json}
    OUT/STUDY/table.md, OUT/STUDY/curves.png, OUT/STUDY/summary.json

A run that would repeat a finished run of another study in the same ``OUT``
(the base recipe is the first arm of most studies) is not trained again: its
folder gets that run's files and its ``result.json`` names the run in
``same_run_as``. Two runs are the same when their resolved configs (data
folder, seed and epochs included) build the same network and the precision
and device this machine would use are the ones the finished run used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

from ..fileio import LOCK_NAME, atomic_write
from ..strict_json import dumps
from .studies import TARGET_TRAIN_ERR, Arm, Study

RESULT = "result.json"


def slug(label: str) -> str:
    """A folder name for an arm label: ``1 tower, half width`` -> ``1-tower-half-width``."""
    return re.sub(r"[^a-z0-9.=]+", "-", label.lower()).strip("-").replace("=", "")


def run_dir(out: Path, study: Study, arm: Arm, seed: int) -> Path:
    return out / study.name / slug(arm.label) / f"seed-{seed}"


def run_identity(cfg, data: str | os.PathLike, precision: str | None = None, device: str | None = None) -> str:
    """What makes two runs the same: the resolved config with the model section replaced by the network it builds.

    ``precision``/``device``: what the run used (its ``setup`` record); None: what this machine would use.
    """
    import dataclasses

    from .. import models
    from ..data import read_meta
    from ..engine.config import to_dict
    from ..engine.distributed import resolve_device
    from ..engine.loop import resolve_precision
    from ..engine.trainer import model_options
    from ..models.alexnet import config_with
    from ..models.variants import CONFIGS

    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=os.path.abspath(data)))
    opts = model_options(cfg, read_meta(data))
    base = CONFIGS.get(cfg.model.name)
    net = config_with(base, **opts) if base is not None else models.create(cfg.model.name, **opts).cfg
    if precision is None or device is None:
        dev = resolve_device(cfg.run.device)
        precision, device = resolve_precision(cfg.run.precision, dev), dev.type
    whole = to_dict(cfg)
    whole["model"] = repr(net)
    whole["run"] = {**whole["run"], "precision": precision, "device": device.split(":")[0]}
    return dumps(whole, sort_keys=True)


def finished_runs(out: Path, data: str | os.PathLike) -> dict[str, Path]:
    """Identity -> folder of every finished run under ``out`` (any study) that recorded how it ran."""
    from ..engine.config import load_config

    found = {}
    for done in sorted(out.glob(f"*/*/seed-*/{RESULT}")):
        folder = done.parent
        setup = next((r for r in read_records(folder / "metrics.jsonl") if r.get("kind") == "setup"), None)
        if setup is None or json.loads(done.read_text()).get("same_run_as"):
            continue
        try:
            cfg = load_config(folder / "config.yaml")
            if os.path.abspath(cfg.data.path or "") != os.path.abspath(data):
                continue
            found.setdefault(run_identity(cfg, data, setup["precision"], setup["device"]), folder)
        except Exception:  # noqa: BLE001 - a folder we cannot read is simply not reused
            continue
    return found


def share_run(source: Path, folder: Path) -> None:
    """Give ``folder`` the files of the finished run ``source`` (hard links where the file system allows)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.name in (RESULT, LOCK_NAME) or f.is_symlink() or not f.is_file():
            continue
        target = folder / f.name
        target.unlink(missing_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


def read_records(path: Path) -> list[dict]:
    """A run's metrics records (:func:`alexnet.engine.metrics.read_metrics`); none when it has no log yet."""
    from ..engine.metrics import read_metrics

    if not path.is_file():
        return []
    return read_metrics(path)


def time_to_target(steps: list[dict], epochs: list[dict], target: float = TARGET_TRAIN_ERR) -> dict:
    """First logged step whose running training error is at most ``target``: its epoch (fractional) and seconds.

    Seconds count training steps only (each epoch's measured step time), not validation.
    """
    per_epoch = {}  # epoch -> (first step, steps in the epoch, seconds)
    first = 0
    for e in epochs:
        n = e["step"] - first
        per_epoch[e["epoch"]] = (first, n, e["epoch_time_s"])
        first = e["step"]
    for s in steps:
        err = s.get("train_top1_err")
        if err is None or err > target or s["epoch"] not in per_epoch:
            continue
        start, n, secs = per_epoch[s["epoch"]]
        into = (s["step"] - start) / max(n, 1)
        before = sum(v[2] for k, v in per_epoch.items() if k < s["epoch"])
        return {"reached": True, "epochs": s["epoch"] + into, "seconds": before + into * secs, "step": s["step"]}
    return {"reached": False, "epochs": len(epochs), "seconds": sum(e["epoch_time_s"] for e in epochs),
            "step": epochs[-1]["step"] if epochs else 0}


def summarize_run(folder: Path, fit_result: dict | None = None) -> dict:
    """The figures a study's table needs, read back from a finished run's ``metrics.jsonl``."""
    records = read_records(folder / "metrics.jsonl")
    epochs = [r for r in records if r.get("kind") == "epoch"]
    steps = [r for r in records if r.get("kind") == "step"]
    if not epochs:
        raise RuntimeError(f"{folder}: no epoch finished")
    last = epochs[-1]
    errs = [e["val_top1_err"] for e in epochs if e.get("val_top1_err") is not None]
    best_epoch = min(range(len(errs)), key=errs.__getitem__) + 1 if errs else None
    return {
        "epochs": len(epochs),
        "steps_per_epoch": epochs[0]["step"],
        "val_top1_err": last.get("val_top1_err"),
        "best_val_top1_err": min(errs) if errs else None,
        "best_epoch": best_epoch,
        "train_top1_err": last.get("train_top1_err"),
        "train_loss": last["train_loss"],
        "first_epoch_train_loss": epochs[0]["train_loss"],
        "train_seconds": sum(e["epoch_time_s"] for e in epochs),
        "curve": [{"epoch": e["epoch"] + 1, "train_loss": e["train_loss"], "train_top1_err": e.get("train_top1_err"),
                   "val_top1_err": e.get("val_top1_err")} for e in epochs],
        "to_target": time_to_target(steps, epochs),
        "train_err_curve": [(s["step"], s.get("train_top1_err")) for s in steps],
    }


def run_study(study: Study, data: str | os.PathLike, out: str | os.PathLike, *, config: str | None,
              seeds: int, epochs: int | None, overrides: list[str], bars: bool = False, announce: bool = True,
              fit: Callable | None = None) -> list[dict]:
    """Train every arm of ``study`` with ``seeds`` seeds (0..seeds-1); return one row per run.

    ``bars``: the trainer's progress bars; ``announce``: one line per run on stderr.
    """
    from ..engine.config import load_config

    if fit is None:
        from ..engine.trainer import fit
    out = Path(out)
    rows = []
    reusable = None  # identity -> finished run of another study, read when first needed
    runs = [(arm, seed) for arm in study.arms for seed in range(seeds)]
    for i, (arm, seed) in enumerate(runs, 1):
        folder = run_dir(out, study, arm, seed)
        done = folder / RESULT
        tag = f"[{study.name} {i}/{len(runs)}] {arm.label}, seed {seed}"
        if done.is_file():
            row = json.loads(done.read_text())
            if announce:
                print(f"{tag}: done before, kept", file=sys.stderr, flush=True)
            rows.append(row)
            continue
        sets = [*study.common, *overrides, *arm.overrides, f"run.seed={seed}", "run.log_every=10"]
        if epochs is not None:
            sets.append(f"run.epochs={epochs}")
        cfg = load_config(config, sets)
        resume = (folder / "last.ckpt").is_file()
        if not resume:
            if reusable is None:
                reusable = {k: v for k, v in finished_runs(out, data).items() if v.parent.parent.name != study.name}
            source = reusable.get(run_identity(cfg, data))
            if source is not None:
                share_run(source, folder)
                row = {"study": study.name, "arm": arm.label, "group": arm.group, "seed": seed,
                       "overrides": [*study.common, *overrides, *arm.overrides],
                       "same_run_as": source.relative_to(out).as_posix(), **summarize_run(folder)}
                atomic_write(done, (dumps(row, indent=1) + "\n").encode())
                if announce:
                    print(f"{tag}: the same run as {row['same_run_as']}, reused", file=sys.stderr, flush=True)
                rows.append(row)
                continue
        if not resume and folder.exists():
            shutil.rmtree(folder)  # a run killed before its first checkpoint: start it again
        if announce:
            print(f"{tag}: {'resuming' if resume else 'training'} ({' '.join(arm.overrides)})",
                  file=sys.stderr, flush=True)
        result = fit(cfg, data, folder, resume=resume, progress=bars)
        row = {"study": study.name, "arm": arm.label, "group": arm.group, "seed": seed,
               "overrides": [*study.common, *overrides, *arm.overrides], **summarize_run(folder, result)}
        atomic_write(done, (dumps(row, indent=1) + "\n").encode())
        if announce:
            err = row["val_top1_err"]
            print(f"{tag}: val top-1 err {err:.2%}" if err is not None else f"{tag}: finished",
                  file=sys.stderr, flush=True)
        rows.append(row)
    return rows
