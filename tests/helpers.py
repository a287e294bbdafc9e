"""Shared by the test modules: the tiny recipe, the image writer behind conftest's ``prepared_data`` factory,
the trained run behind its ``trained`` fixture, and small builders and checks (a checkpoint, a metrics file,
a PNG).

Test modules import these names from here rather than from each other.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# The one tiny recipe: fast and deterministic, a half-width alexnet-small on 32 px images, on the CPU (its
# results, resume and DDP over gloo are CPU maths; a CUDA machine would otherwise train on its GPU). A test
# that needs other sizes adds its overrides after it (the fault suite's: tests/robustness/fault_kit.py).
TINY = ["model.name=alexnet-small", "model.width=0.5", "data.batch_size=32", "data.workers=0",
        "optim.lr=0.02", "run.epochs=2", "run.channels_last=false", "run.log_every=1", "run.device=cpu"]

# The trained run (conftest's ``trained``): the built-in data, 4 classes of 32 px images.
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 20, 16


def train_builtin(root: Path) -> dict:
    """Built-in data and an alexnet-small trained on it for one epoch by ``alexnet train``'s trainer.

    The checkpoints' class names are the class ids plus " shape", unlike the
    data folder's, so a test can tell that names come from the checkpoint.
    Returns ``{"root", "src", "prep", "run", "ckpt" (run/best.ckpt), "meta"}``.
    """
    from alexnet import data
    from alexnet.checkpoint import load_checkpoint, save_checkpoint
    from alexnet.engine.config import load_config
    from alexnet.engine.trainer import fit

    src, prep, run = root / "src", root / "prep", root / "run"
    data.generate_synth(src, classes=CLASSES, train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS,
                        size=32, seed=0, progress=False)
    data.prepare(src, prep, size=32, workers=1, progress=False)
    # biases 0: with alexnet-small's 1 its fc7 units die in the first steps (experiments/bias_stall.py)
    fit(load_config(None, TINY + ["run.epochs=1", "model.bias=0.0"]), prep, run, progress=False)
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = load_checkpoint(run / name)
        ckpt["class_names"] = [f"{c} shape" for c in ckpt["classes"]]
        save_checkpoint(run / name, ckpt)
    return {"root": root, "src": src, "prep": prep, "run": run, "ckpt": run / "best.ckpt", "meta": data.read_meta(prep)}


def small_checkpoint(path, classes=4):
    """An untrained alexnet-small checkpoint at ``path`` (class names "class i"); returns the model."""
    from alexnet import models
    from alexnet.checkpoint import make_checkpoint, save_checkpoint

    m = models.create("alexnet-small", num_classes=classes)
    names = [f"class {i}" for i in range(classes)]
    save_checkpoint(path, make_checkpoint(
        "alexnet-small", {"num_classes": classes}, m.state_dict(), [f"c{i}" for i in range(classes)], names,
        {"resize": 32, "crop": 32, "mean": "image", "normalize": None, "channels": 3},
        config={"model": {"name": "alexnet-small"}}, metrics={}))
    return m


def write_metrics(run, epochs=3, steps_per_epoch=4):
    """A run folder's metrics.jsonl with step and epoch records, and a last line cut short by a kill."""
    lines, step = [], 0
    for e in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            lines.append({"time": 1000.0 + step, "kind": "step", "epoch": e, "step": step,
                          "lr": 0.01 if e < 3 else 0.001, "train_loss": 2.3 / step ** 0.3})
        lines.append({"time": 1000.0 + step, "kind": "epoch", "epoch": e, "step": step, "lr": 0.01,
                      "train_loss": 2.3 / step ** 0.3, "val_top1_err": 0.9 / e, "val_top5_err": 0.5 / e,
                      "images_per_s": 500.0})
    run.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"kind": "step", "st'  # a line cut short by a kill
    (run / "metrics.jsonl").write_text(text)
    return lines


def png_ok(path, min_side=100):
    """Assert that ``path`` is a real, non-blank PNG of at least ``min_side`` px a side; its grey pixels."""
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 2000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= min_side
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 5  # not a blank canvas
    return arr


def write_images(root: Path, per_split: dict[str, int], classes: int = 3, seed: int = 0,
                 pattern: str = "band") -> None:
    """``root/<split>/<class>/<i>.png``: 32 px noise whose pattern says the class, easy to learn in seconds.

    ``band``: classes ``c<k>``, a bright band whose row says the class (at most 3 classes);
    ``quadrant``: classes ``q<k>``, a bright square in the quadrant of the class (at most 4).
    """
    from PIL import Image

    assert classes <= {"band": 3, "quadrant": 4}[pattern]
    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        for c in range(classes):
            folder = root / split / f"{pattern[0] if pattern == 'quadrant' else 'c'}{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                if pattern == "band":
                    img = rng.integers(0, 100, (32, 32, 3), dtype=np.uint8)
                    img[c * 10:c * 10 + 10] += 120
                else:
                    img = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
                    r, q = divmod(c, 2)
                    y0, x0 = r * 16 + rng.integers(1, 6), q * 16 + rng.integers(1, 6)
                    img[y0:y0 + 9, x0:x0 + 9] = rng.integers(180, 256, 3)
                Image.fromarray(img).save(folder / f"{i}.png")


def make_prepared(root: Path, per_split: dict[str, int], classes: int = 3, seed: int = 0, pattern: str = "band",
                  image_size: int = 32) -> Path:
    """``root/raw`` and its prepared folder ``root/prep`` (returned). ``pattern``: :func:`write_images`'s, or
    ``synth`` for the built-in dataset's shapes (``image_size`` px; train and val only)."""
    from alexnet import data

    if pattern == "synth":
        data.generate_synth(root / "raw", classes=classes, train_per_class=per_split["train"],
                            val_per_class=per_split.get("val", 0), size=image_size, seed=seed, progress=False)
    else:
        write_images(root / "raw", per_split, classes, seed, pattern)
    data.prepare(root / "raw", root / "prep", workers=1, progress=False)
    return root / "prep"
