"""The built-in dataset: deterministic, named classes, colour says nothing, shapes visible.

Its speed is measured by benchmarks/synth.py, not asserted here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alexnet.cli.main import main
from alexnet.data import SYNTH_CLASSES, generate_synth
from alexnet.data.synth import draw, image_rng, signed_distance


def load(root, split):
    xs, ys = [], []
    for k, name in enumerate(SYNTH_CLASSES):
        for p in sorted((root / split / name).glob("*.jpg")):
            xs.append(np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255)
            ys.append(k)
    return np.stack(xs), np.array(ys)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "s"
    generate_synth(root, train_per_class=100, val_per_class=40, size=32, progress=False)
    return root


def test_layout_and_human_readable_classes(synth):
    root = synth
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(SYNTH_CLASSES)
    assert len(SYNTH_CLASSES) == 10 and "circle" in SYNTH_CLASSES and "triangle" in SYNTH_CLASSES
    assert len(list((root / "val" / "star").glob("*.jpg"))) == 40
    im = Image.open(root / "train" / "ring" / "ring_00000.jpg")
    assert im.size == (32, 32) and im.mode == "RGB" and im.format == "JPEG"


def test_deterministic_for_a_seed(tmp_path, synth):
    root = synth
    generate_synth(tmp_path / "again", classes=10, train_per_class=3, val_per_class=1, size=32, progress=False)
    for name in ("circle", "bars"):
        for i in range(3):  # more images per class only adds files: the first ones are the same
            f = f"train/{name}/{name}_{i:05d}.jpg"
            assert (tmp_path / "again" / f).read_bytes() == (root / f).read_bytes()
    other = draw("star", image_rng(1, "train", 5, 0), 32)
    assert not np.array_equal(other, draw("star", image_rng(0, "train", 5, 0), 32))
    assert np.array_equal(draw("star", image_rng(0, "train", 5, 0), 32), draw("star", image_rng(0, "train", 5, 0), 32))


def test_colour_alone_does_not_tell_the_class(synth):
    root = synth
    xtr, ytr = load(root, "train")
    xva, yva = load(root, "val")
    # nearest class mean on the mean colour of each image (and on its colour spread)
    for feat in (lambda x: x.mean(axis=(1, 2)), lambda x: x.std(axis=(1, 2))):
        ftr, fva = feat(xtr), feat(xva)
        means = np.stack([ftr[ytr == k].mean(0) for k in range(10)])
        pred = np.argmin(((fva[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        assert (pred == yva).mean() < 0.2  # chance is 0.1


def test_objects_are_anywhere(synth):
    root = synth
    x, _ = load(root, "train")
    # the per-position mean image is flat: no class (or all) sits in one place
    m = x.mean(axis=(0, 3))
    assert m.max() - m.min() < 0.08


def test_shapes_are_distinct_and_recognisable_at_32px():
    """Masks of the ten shapes (no texture, no colour) at 32 px: each nearer its own class's template."""
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float32)
    x, y = (xs - 15.5) / 10, (15.5 - ys) / 10
    masks = np.stack([(signed_distance(n, x, y) < 0).astype(np.float64) for n in SYNTH_CLASSES])
    assert (masks.sum(axis=(1, 2)) > 40).all()  # each covers a visible area
    diff = (masks[:, None] != masks[None]).sum(axis=(2, 3))
    np.fill_diagonal(diff, 999)
    assert diff.min() > 25  # every pair differs in more than 25 pixels at this size


def test_cli_synth(tmp_path, capsys):
    def args(seed):
        return ["data", "synth", str(tmp_path / "s"), "--size", "24", "--train-per-class", "2", "--val-per-class", "1",
                "--classes", "3", "--seed", str(seed), "--no-progress"]

    assert main(args(5)) == 0
    assert "9 images" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "s" / "train").iterdir()) == sorted(SYNTH_CLASSES[:3])
    assert main(args(5)) == 0  # the same dataset again: nothing to do
    assert main(args(6)) == 2
    assert "other parameters" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "t"), "--classes", "11"]) == 2
