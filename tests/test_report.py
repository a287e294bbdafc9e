"""The report is one self-contained HTML file with the figures embedded; missing parts are said."""

import base64
import html.parser
import json
import re

from alexnet.cli.main import main as cli
from alexnet.viz.report import write_report

from helpers import small_checkpoint, write_metrics


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.links = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag in ("link", "script") or (tag == "a" and not a.get("href", "#").startswith("#")):
            self.links.append((tag, a))


def embedded_pngs(page):
    p = _Images()
    p.feed(page)
    assert not p.links, f"external references: {p.links}"
    pngs = []
    for src in p.srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 2000
        pngs.append(raw)
    return pngs


def test_report_without_data_or_eval(tmp_path):
    run = tmp_path / "run"
    write_metrics(run)
    (run / "config.yaml").write_text("model:\n  name: alexnet-small\noptim:\n  lr: 0.01  # <per batch>\n")
    small_checkpoint(run / "best.ckpt")
    out = write_report(run, device="cpu")
    assert out == run / "report.html"
    page = out.read_text()
    assert len(embedded_pngs(page)) == 2  # curves and filters
    assert "eval.json not found" in page
    assert "no prepared data folder" in page
    assert "&lt;per batch&gt;" in page  # the config, escaped
    assert not list(run.glob(".report.html.*"))  # no temporary left behind


def test_report_of_an_empty_run_folder(tmp_path, capsys):
    run = tmp_path / "empty"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps({"center": {"count": 10, "top1_acc": 0.5, "top5_acc": 0.9,
                                                          "top1_err": 0.5, "top5_err": 0.1}}))
    assert cli(["report", str(run), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    page = (run / "report.html").read_text()
    assert embedded_pngs(page) == []
    assert "metrics.jsonl not found" in page and "config.yaml not found" in page
    assert "no checkpoint" in page
    assert re.search(r"<td>50\.00%</td>", page)  # centre-crop top-1 from eval.json
    assert "not evaluated" in page  # no 10-patch entry


def test_report_user_errors(tmp_path, capsys):
    assert cli(["report", str(tmp_path / "nope")]) == 2
    run = tmp_path / "r"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"not a checkpoint")
    assert cli(["report", str(run), "--data", str(tmp_path / "nodata")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("alexnet report: error:") for e in err)
    # a corrupt checkpoint is a note in the page, not a crash
    write_report(run)
    page = (run / "report.html").read_text()
    assert re.search(r"class=\"note\">[^<]*best\.ckpt", page) and "<img" not in page


def test_full_report_embeds_every_figure(trained, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    write_metrics(run)
    (run / "config.yaml").write_text("model:\n  name: alexnet-small\n")
    shutil.copy(trained["ckpt"], run / "best.ckpt")
    (run / "eval.json").write_text(json.dumps({
        "center": {"count": 20, "top1_acc": 0.4, "top5_acc": 1.0, "top1_err": 0.6, "top5_err": 0.0},
        "10crop": {"count": 20, "top1_acc": 0.45, "top5_acc": 1.0, "top1_err": 0.55, "top5_err": 0.0}}))
    out = write_report(run, data=trained["prep"], k=3, queries=2, workers=0, device="cpu", progress=False)
    page = out.read_text()
    pngs = embedded_pngs(page)
    assert len(pngs) == 4  # curves, filters, neighbours, confusion
    assert 'class="note"' not in page  # nothing missing
    assert "pixels" in page and "fc7" in page and "55.00%" in page  # kNN table, 10-patch error
    knn = json.loads((run / "knn.json").read_text())
    assert set(knn) >= {"fc7", "pixels", "count", "k"} and knn["k"] == 3
    # on ImageNet-sized data the raw-pixel baseline is left out of the report, and the page says so
    import alexnet.viz.report as report_mod

    monkeypatch.setattr(report_mod, "PIXEL_BUDGET", 0)
    big = write_report(run, data=trained["prep"], out=tmp_path / "big.html", k=3, queries=2, workers=0,
                       device="cpu", progress=False).read_text()
    assert "raw-pixel kNN skipped" in big and "<td class=\"l\">pixels</td>" not in big
    assert "<td class=\"l\">pixels</td>" in page
