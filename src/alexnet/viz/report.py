"""``write_report(run_dir)``: one self-contained HTML page about a training run.

The page (``RUN_DIR/report.html``) holds the resolved config, the training
curves, the final metrics (centre crop and 10-patch, from ``eval.json``), the
conv1 kernels (Figure 3), nearest neighbours in fc7 space (Figure 4), the kNN
comparison of fc7 and pixel distances, and the confusion matrix. Figures are
embedded as base64 PNG, so the page is one file that opens anywhere, offline.
Whatever the run folder lacks (no eval.json, no metrics, no checkpoint, no
prepared data) is said in the page instead of failing the report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .. import __version__
from ..engine.inference import TTA, Checkpoint
from ..errors import UserError
from ..fileio import atomic_write
from ..strict_json import dumps
from . import figures

__all__ = ["write_report", "find_checkpoint", "find_data"]

PIXEL_BUDGET = 4 * 2**30  # bytes of training pixels above which the report leaves out the raw-pixel kNN

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; margin-top: 1.8em; }
.sub { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; } th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; margin: 0.6em 0; }
.caption { color: #555; font-size: 0.88em; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _pct(x: Any) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return "–"
    return f"{100 * x:.2f}%" if abs(x) <= 1.0 else f"{x:.2f}%"


def find_checkpoint(run_dir: Path, checkpoint=None) -> Path | None:
    """The checkpoint to describe: the one given, else best.ckpt, else last.ckpt."""
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.is_file():
            raise UserError(f"checkpoint not found: {p}")
        return p
    for name in ("best.ckpt", "last.ckpt"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def find_data(run_dir: Path, data=None, config: dict | None = None) -> Path | None:
    """The prepared data folder: the one given, else one named in the run's config, if it exists."""
    if data is not None:
        p = Path(data)
        if not p.is_dir():
            raise UserError(f"prepared data folder not found: {p}")
        return p
    cands = []
    for section in (config or {}, (config or {}).get("data") or {}):
        if isinstance(section, dict):
            for key in ("data", "dir", "path", "root", "prepared", "data_dir"):
                if isinstance(section.get(key), str):
                    cands.append(section[key])
    for c in cands:
        p = Path(c)
        if not p.is_absolute():
            p = (run_dir / p) if (run_dir / p).is_dir() else p
        if (p / "meta.json").is_file():
            return p
    return None


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def add(self, s: str) -> None:
        self.parts.append(s)

    def section(self, title: str, anchor: str) -> None:
        self.add(f'<h2 id="{anchor}">{_e(title)}</h2>')

    def figure(self, make: Callable[[], Any], alt: str, caption: str = "") -> bool:
        """Draw a figure; a user-level problem becomes a note in the page."""
        try:
            fig = make()
        except (UserError, OSError, ValueError) as e:
            self.add(_note(f"{alt}: not drawn ({str(e).splitlines()[0] if str(e) else type(e).__name__})"))
            return False
        self.add(_img(figures.figure_png(fig), alt))
        if caption:
            self.add(f'<p class="caption">{_e(caption)}</p>')
        self.figures += 1
        return True


def _metrics_table(eval_json: dict[str, Any]) -> str:
    rows = []
    for tta in TTA:
        r = eval_json.get(tta)
        if not isinstance(r, dict):
            rows.append(f'<tr><td class="l">{tta}</td><td colspan="5" class="l">not evaluated</td></tr>')
            continue
        rows.append(
            f'<tr><td class="l">{tta}</td><td>{_e(r.get("count", "–"))}</td><td>{_pct(r.get("top1_acc"))}</td>'
            f'<td>{_pct(r.get("top5_acc"))}</td><td>{_pct(r.get("top1_err"))}</td><td>{_pct(r.get("top5_err"))}</td></tr>')
    return ('<table><tr><th class="l">test views</th><th>images</th><th>top-1 acc</th><th>top-5 acc</th>'
            '<th>top-1 err</th><th>top-5 err</th></tr>' + "".join(rows) + "</table>")


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(v)}</td></tr>' for k, v in d.items())
    return f"<table>{rows}</table>"


@dataclass
class _Run:
    """What the report is about, as far as the run folder has it: each part None with a reason when missing."""

    dir: Path
    config: dict | None = None
    config_text: str | None = None
    config_source: str = "config.yaml"
    eval_json: dict | None = None
    eval_problem: str | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_problem: str | None = None
    data: Path | None = None

    @classmethod
    def read(cls, run_dir: Path, data=None, checkpoint=None, device=None) -> _Run:
        run = cls(run_dir)
        cfg_path = run_dir / "config.yaml"
        if cfg_path.is_file():
            run.config_text = cfg_path.read_text(errors="replace")
            try:
                run.config = yaml.safe_load(run.config_text)
            except yaml.YAMLError:
                run.config = None
        if (run_dir / "eval.json").is_file():
            try:
                run.eval_json = json.loads((run_dir / "eval.json").read_text())
                if not isinstance(run.eval_json, dict):
                    run.eval_json, run.eval_problem = None, "eval.json does not hold an object"
            except json.JSONDecodeError as e:
                run.eval_problem = f"eval.json is not valid JSON ({e})"
        ckpt_path = find_checkpoint(run_dir, checkpoint)
        if ckpt_path is not None:
            try:
                run.checkpoint = Checkpoint.load(ckpt_path, device)
            except UserError as e:
                run.checkpoint_problem = str(e)
        saved = run.checkpoint.info.get("config") if run.checkpoint is not None else None
        if run.config is None and isinstance(saved, dict) and saved:
            why = "not valid YAML" if cfg_path.is_file() else "not found"
            run.config, run.config_source = saved, f"the checkpoint (config.yaml {why})"
            run.config_text = yaml.safe_dump(saved, sort_keys=False)
        run.data = find_data(run_dir, data, run.config)
        return run

    @property
    def why_not(self) -> str | None:
        """Why the sections that need the network and the data cannot be made (None: they can)."""
        if self.checkpoint is None:
            return self.checkpoint_problem or "no checkpoint in the run folder"
        if self.data is None:
            return "no prepared data folder (pass --data to alexnet report)"
        return None


def write_report(run_dir, data=None, checkpoint=None, *, out=None, k: int = 6, queries: int = 6,
                 split: str = "val", knn: bool = True, device=None, workers: int | None = None,
                 progress: bool = True) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``) and return its path.

    ``data``: prepared folder for the neighbours, kNN scores and confusion
    matrix (default: the one named in the run's config, if any);
    ``checkpoint``: default ``best.ckpt``, else ``last.ckpt``. ``queries``
    images of ``split`` (evenly spaced) are shown with their ``k`` nearest
    training images; ``knn=False`` skips the fc7-vs-pixels kNN scoring,
    whose result (:func:`alexnet.features.knn.evaluate_knn`) is also written
    to ``RUN_DIR/knn.json``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    out = Path(out) if out is not None else run_dir / "report.html"
    run = _Run.read(run_dir, data, checkpoint, device)
    page = _Page()
    _header(page, run)
    _metrics(page, run)
    _curves(page, run)
    _filters(page, run)
    loaders = dict(workers=workers, progress=progress)
    _neighbors(page, run, split, queries, k, **loaders)
    _knn(page, run, split, k, knn, **loaders)
    _confusion(page, run, split, **loaders)
    _config(page, run)
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>alexnet report: {_e(run_dir.resolve().name)}</title><style>{CSS}</style></head><body>\n"
           + "\n".join(page.parts) + "\n</body></html>\n")
    atomic_write(out, lambda f: f.write(doc.encode("utf-8")))
    return out


def _header(page: _Page, run: _Run) -> None:
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page.add(f"<h1>alexnet run report: {_e(run.dir.resolve().name)}</h1>")
    page.add(f'<p class="sub">{_e(run.dir.resolve())} · written {now} by alexnet {__version__}</p>')
    page.add('<p class="sub"><a href="#metrics">metrics</a> · <a href="#curves">curves</a> · '
             '<a href="#filters">filters</a> · <a href="#neighbors">neighbours</a> · <a href="#knn">kNN</a> · '
             '<a href="#confusion">confusion</a> · <a href="#config">config</a></p>')
    summary: dict[str, Any] = {}
    ck = run.checkpoint
    if ck is not None:
        spec = ck.info.get("model", {})
        summary["checkpoint"] = str(ck.path)
        summary["model"] = spec.get("name", "?")
        summary["options"] = ", ".join(f"{a}={b}" for a, b in (spec.get("options") or {}).items())
        summary["parameters"] = f"{sum(p.numel() for p in ck.model.parameters()):,}"
        summary["classes"] = len(ck.info.get("classes") or [])
        for key in ("epoch", "step"):
            if key in ck.info:
                summary[key] = ck.info[key]
    summary["data"] = str(run.data) if run.data else "none given"
    page.add(_kv_table(summary))


def _metrics(page: _Page, run: _Run) -> None:
    page.section("Final metrics", "metrics")
    if run.eval_json is not None:
        page.add(_metrics_table(run.eval_json))
        page.add('<p class="caption">From eval.json. The paper, one CNN on ILSVRC-2012 val with 10 views: '
                 "40.7% top-1 / 18.2% top-5 error.</p>")
    else:
        page.add(_note(run.eval_problem or "eval.json not found: the run has not been evaluated "
                                           "(alexnet eval writes the centre and 10-patch figures)."))
    stored = run.checkpoint.info.get("metrics") if run.checkpoint is not None else None
    if isinstance(stored, dict) and stored:
        m = {k2: (_pct(v) if "err" in k2 or "acc" in k2 else v) for k2, v in stored.items()
             if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        if m:
            page.add("<p>Validation metrics stored in the checkpoint:</p>" + _kv_table(m))


def _curves(page: _Page, run: _Run) -> None:
    page.section("Training curves", "curves")
    if (run.dir / "metrics.jsonl").is_file():
        records = figures.read_metrics(run.dir / "metrics.jsonl")
        page.figure(lambda: figures.curves_figure(records), "training curves",
                    f"{len(records)} records from metrics.jsonl: training loss, validation error, learning rate.")
    else:
        page.add(_note("metrics.jsonl not found: no training curves."))


def _filters(page: _Page, run: _Run) -> None:
    page.section("conv1 kernels (the paper's Figure 3)", "filters")
    if run.checkpoint is None:
        page.add(_note(run.checkpoint_problem or "no checkpoint (best.ckpt or last.ckpt) in the run folder."))
    else:
        page.figure(lambda: figures.filters_figure(run.checkpoint.model, "conv1"), "conv1 kernels",
                    "Each kernel contrast-stretched on its own. In the paper one tower's kernels come out largely "
                    "colour-agnostic, the other's colour-specific.")


def _neighbors(page: _Page, run: _Run, split: str, queries: int, k: int, **loaders) -> None:
    page.section("Nearest neighbours in fc7 space (the paper's Figure 4)", "neighbors")
    if run.why_not:
        page.add(_note(f"not drawn: {run.why_not}."))
        return
    from ..features.neighbors import split_neighbor_panels

    page.figure(lambda: figures.neighbors_figure(split_neighbor_panels(
                    run.checkpoint, run.data, split, count=queries, k=k, **loaders)),
                "nearest neighbours",
                f"Left: {queries} {split} images; right: the {k} training images with the closest fc7 "
                "vectors (Euclidean). Green frame: same class as the query; red: another class.")


def _knn(page: _Page, run: _Run, split: str, k: int, knn: bool, **loaders) -> None:
    page.section("kNN classification: fc7 against raw pixels", "knn")
    if run.why_not or not knn:
        page.add(_note("not scored: " + (run.why_not or "switched off") + "."))
        return
    from ..data import read_meta
    from ..features.knn import evaluate_knn

    ck = run.checkpoint
    try:
        meta = read_meta(run.data)
        crop = int(ck.transform.get("crop") or ck.model.cfg.input_size)
        pixel_bytes = int(meta["splits"].get("train", 0)) * crop * crop * int(meta.get("channels", 3)) * 4
        pixels = pixel_bytes <= PIXEL_BUDGET
        r = evaluate_knn(ck, run.data, split, k=k, pixels=pixels, **loaders)
        atomic_write(run.dir / "knn.json", lambda f: f.write((dumps(r, indent=1) + "\n").encode()))
        rows = "".join(
            f'<tr><td class="l">{_e(v["space"])}</td><td>{v["dim"]}</td><td>{_pct(v["nn1_acc"])}</td>'
            f'<td>{_pct(v["knn_acc"])}</td><td>{_pct(v["precision_at_k"])}</td></tr>'
            for v in r.values() if isinstance(v, dict) and "knn_acc" in v)
        page.add(f'<table><tr><th class="l">space</th><th>dim</th><th>1-NN acc</th><th>{k}-NN acc</th>'
                 f'<th>precision@{k}</th></tr>{rows}</table>')
        if not pixels:
            page.add(_note(f"raw-pixel kNN skipped: the training images as pixels would take "
                           f"{pixel_bytes / 2**30:.0f} GiB (alexnet neighbors --evaluate computes it anyway)."))
        page.add(f'<p class="caption">{r["count"]} {_e(split)} images against {r["train_count"]} training '
                 f'images; chance {_pct(r["chance"])}. The paper\'s claim: fc7 distance follows the class, '
                 "pixel distance does not.</p>")
    except (UserError, OSError, ValueError) as e:
        page.add(_note(f"kNN not scored: {e}"))


def _confusion(page: _Page, run: _Run, split: str, **loaders) -> None:
    page.section("Confusion matrix", "confusion")
    if run.why_not:
        page.add(_note(f"not drawn: {run.why_not}."))
        return
    from ..engine.evaluate import confusion_matrix

    ck = run.checkpoint
    page.figure(lambda: figures.confusion_figure(confusion_matrix(ck, run.data, split, **loaders), ck.class_names),
                "confusion matrix", f"{split} split, centre crop; rows are normalised to the true class.")


def _config(page: _Page, run: _Run) -> None:
    page.section("Resolved config", "config")
    if run.config_text is not None:
        page.add(f'<p class="caption">From {_e(run.config_source)}.</p><pre>{_e(run.config_text)}</pre>')
    else:
        page.add(_note("config.yaml not found and the checkpoint holds no config."))
