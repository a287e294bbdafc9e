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
    assert main(["data", "synth", str(tmp_path / "t"), "--classes", "1001"]) == 2


# ---------------------------------------------------------------- up to 1,000 classes, ImageNet sizes, ILSVRC layout
def test_class_factors_are_unique_and_the_first_ten_are_the_shapes():
    from alexnet.data.synth import MAX_CLASSES, class_factors, class_names

    triples = [class_factors(k) for k in range(MAX_CLASSES)]
    assert MAX_CLASSES == 1000 and len(set(triples)) == 1000
    names = class_names(1000)
    assert len(set(names)) == 1000 and names[0] == "circle-solid-waves" and "circle-striped-grid" in names
    assert class_names(10) == list(SYNTH_CLASSES) and triples[:10] == [(k, 0, 0) for k in range(10)]


def test_classes_differing_in_one_factor_differ_visibly():
    """The same random stream (so the same position, scale and colours), one factor changed: the pixels differ."""
    from alexnet.data.synth import BACKGROUNDS, TEXTURES, draw

    base = draw("square", image_rng(0, "train", 0, 0), 64).astype(np.float64)
    assert np.array_equal(base, draw("square", image_rng(0, "train", 0, 0), 64, texture=0, background=0))
    for t in range(1, len(TEXTURES)):
        other = draw("square", image_rng(0, "train", 0, 0), 64, texture=t)
        assert np.abs(other - base).mean() > 2, TEXTURES[t]  # in 0-255 units, over the whole image
    for b in range(1, len(BACKGROUNDS)):
        other = draw("square", image_rng(0, "train", 0, 0), 64, background=b)
        assert np.abs(other - base).mean() > 4, BACKGROUNDS[b]


def test_imagenet_sizes_spread_like_ilsvrc():
    from alexnet.data.synth import MAX_SIDE, MIN_SIDE, imagenet_size

    rng = np.random.default_rng(0)
    hw = np.array([imagenet_size(rng) for _ in range(20000)])
    assert hw.min() >= MIN_SIDE and hw.max() <= MAX_SIDE
    h, w = hw.mean(0)
    assert 370 <= w <= 430 and 325 <= h <= 375  # ILSVRC-2012: about 400 x 350 on average
    assert 0.2 < (hw[:, 0] > hw[:, 1]).mean() < 0.45  # portrait: a third or so
    assert hw.max() > 1000 and (hw < 150).any()  # a long tail both ways


def test_1000_classes_in_the_ilsvrc_layout_read_as_ilsvrc2012(tmp_path):
    from alexnet.data import open_source

    root = tmp_path / "ilsvrc"
    generate_synth(root, classes=1000, train_per_class=1, val_per_class=1, size=8, layout="ilsvrc", progress=False)
    assert (root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").is_file()
    assert (root / "train" / "n00000001" / "n00000001_1.JPEG").is_file()
    assert (root / "val" / "ILSVRC2012_val_00001000.JPEG").is_file()
    src = open_source(root)
    assert src.kind == "ilsvrc2012" and len(src.classes) == 1000 and len(set(src.classes)) == 1000
    assert src.classes[0] == "n00000001" and src.class_names[0] == "circle-solid-waves"
    assert src.class_names[999] == "bars-zigzag-plain"
    val = src.splits["val"]
    assert not val.skipped and len(val.files) == 1000
    assert sorted(label for _, label in val.files) == list(range(1000))
    # the val image labelled k is class k's: the same pixels as drawn for (val, k, 0)
    path, label = val.files[123]
    from alexnet.data.synth import synth_image

    assert np.abs(np.asarray(Image.open(path), np.float64) - synth_image(0, "val", label, 0, 8)).mean() < 20


def test_imagenet_sizes_deterministic_and_independent_of_workers(tmp_path):
    from alexnet.data.synth import MAX_SIDE, MIN_SIDE

    kw = dict(classes=12, train_per_class=1, val_per_class=1, sizes="imagenet", progress=False, seed=3)
    a, b = generate_synth(tmp_path / "a", workers=1, **kw), generate_synth(tmp_path / "b", workers=2, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 24 and files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train" / "circle-striped-waves").is_dir()  # class 10: the first textured one
    sizes = [Image.open(a / f).size for f in files]
    assert all(MIN_SIDE <= s <= MAX_SIDE for wh in sizes for s in wh) and len(set(sizes)) > 10
    c = generate_synth(tmp_path / "c", workers=1, **{**kw, "seed": 4})
    assert (c / files[0]).read_bytes() != (a / files[0]).read_bytes()


def test_cli_refuses_bad_classes_and_writes_nothing(tmp_path, capsys):
    for n in ("1", "1001", "x"):
        assert main(["data", "synth", str(tmp_path / "s"), "--classes", n]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["data", "synth", str(tmp_path / "s"), "--size", "32", "--sizes", "imagenet"]) == 2
    assert not (tmp_path / "s").exists()
    assert main(["data", "synth", str(tmp_path / "s"), "--classes", "11", "--size", "16", "--train-per-class", "1",
                 "--val-per-class", "0", "--layout", "ilsvrc", "--workers", "1", "--no-progress"]) == 0
    assert "11 images" in capsys.readouterr().out
    assert len(list((tmp_path / "s" / "train").iterdir())) == 11 and not (tmp_path / "s" / "val").exists()
