"""Each figure is written and non-empty; the filters figure shows both towers."""

import numpy as np
import pytest

from alexnet import models
from alexnet.cli.main import main as cli
from alexnet.errors import UserError
from alexnet.viz import figures

from helpers import png_ok, small_checkpoint, write_metrics


def test_filters_two_towers_side_by_side(tmp_path):
    m = models.create("alexnet").eval()
    out = figures.save_figure(figures.filters_figure(m), tmp_path / "f.png")
    arr = png_ok(out)
    assert arr.shape[1] > arr.shape[0]  # two tall grids next to each other
    mos = figures.kernel_mosaic(m.conv1.weight[:48], 8, 6)
    assert mos.shape == (8 * 12 + 1, 6 * 12 + 1, 3) and 0 <= mos.min() and mos.max() <= 1
    one = figures.filters_figure(models.create("alexnet-owt"))  # single tower
    assert len(one.axes) == 1
    assert len(figures.filters_figure(m).axes) == 2
    with pytest.raises(UserError):
        figures.filters_figure(m, "fc7")


def test_curves_and_cli(tmp_path):
    run = tmp_path / "run"
    write_metrics(run)
    recs = figures.read_metrics(run)
    assert len(recs) == 15  # the cut line is skipped
    assert cli(["viz", "curves", str(run)]) == 0
    png_ok(run / "curves.png")
    with pytest.raises(UserError):
        figures.read_metrics(tmp_path / "nowhere")


def test_confusion(tmp_path):
    cm = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    out = figures.save_figure(figures.confusion_figure(cm, ["a", "b", "c"]), tmp_path / "c.png")
    png_ok(out)
    big = np.random.default_rng(0).integers(0, 5, (100, 100))
    png_ok(figures.save_figure(figures.confusion_figure(big), tmp_path / "big.png"))


def test_neighbors_figure(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: rng.random((32, 32, 3)).astype(np.float32)
    panels = [{"image": img(), "caption": f"q{r}", "label": r,
               "neighbors": [{"image": img(), "caption": f"n{j}", "label": j % 2} for j in range(4)]}
              for r in range(2)]
    fig = figures.neighbors_figure(panels)
    assert len(fig.axes) == 2 * 5
    png_ok(figures.save_figure(fig, tmp_path / "n.png"))


def test_viz_filters_cli_and_errors(tmp_path, capsys):
    small_checkpoint(tmp_path / "m.ckpt")
    assert cli(["viz", "filters", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "f.png")]) == 0
    png_ok(tmp_path / "f.png")
    assert cli(["viz", "filters", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "g.png")]) == 2
    assert cli(["viz", "filters", str(tmp_path / "m.ckpt"), "--layer", "fc9", "--out", str(tmp_path / "g.png")]) == 2
    assert cli(["viz", "filters", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "g.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("alexnet viz: error:") for line in err)
    assert not (tmp_path / "g.png").exists()
