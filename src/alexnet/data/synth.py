"""The built-in dataset: ten drawn objects on textured, noisy backgrounds.

``generate_synth(out, classes=10, ...)`` writes an ImageNet-style folder,
``out/{train,val}/<class>/<class>_NNNNN.jpg``, of the classes in
:data:`CLASSES` (the first ``classes`` of them). Each image is one object,
drawn from its exact signed distance (antialiased edges), at a random
position (anywhere, a fifth of it may leave the frame), scale (radius 25-40 %
of the side, aspect 0.85-1.15), rotation (within +-30 degrees) and colour,
with a shading gradient, over a background of a random colour, two random
sinusoid gratings (1-4 cycles per side, colour-tinted texture) and pixel
noise; the object's colour is at least 0.55 (RGB distance, [0, 1] units)
from the background's but drawn independently of the class. So:

* the object can be anywhere: features must be translation-invariant;
* colour says nothing about the class (a nearest-class-mean classifier on
  the mean colour of the images is at chance, tested);
* a network at chance is obvious (10 balanced classes: 10 %), and the
  shapes stay recognisable at 32 x 32.

The rotation is limited, as objects in photographs mostly stand upright:
with any angle the asymmetric classes (arrow, crescent, triangle, bars,
bowtie) need several times the data or epochs, and the demo would not reach
90 % in a few CPU minutes (a small CNN: 91-93 % after 4 epochs of 3,000
images with +-30 degrees, 70-74 % with any angle).

Every image is a function of ``(seed, split, class, index)`` only, so the
same seed gives the same files, and more images per class only add files.
About 1,500 images/s at 32 px and 100/s at 256 px on one idle core.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .meta import is_small

CLASSES = ("circle", "ring", "square", "triangle", "cross", "star", "crescent", "arrow", "bowtie", "bars")
SPLIT_CODES = {"train": 0, "val": 1}
MAX_ROTATION = 30  # degrees either way; see the module docstring
MARKER = "synth.json"


# ---------------------------------------------------------------- shapes
def _polygon(vertices) -> np.ndarray:
    return np.asarray(vertices, dtype=np.float32)


def _regular(n: int, radius: float, phase: float = np.pi / 2) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    a = np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


POLYGONS = {
    "square": _polygon([(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)]),
    "triangle": _regular(3, 1.0),
    "star": _star(5, 1.0, 0.42),
    "arrow": _polygon([(-1, -0.22), (0.1, -0.22), (0.1, -0.62), (1, 0), (0.1, 0.62), (0.1, 0.22), (-1, 0.22)]),
    "bowtie": _polygon([(-0.95, -0.85), (0, -0.18), (0.95, -0.85), (0.95, 0.85), (0, 0.18), (-0.95, 0.85)]),
}


def sd_polygon(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Exact signed distance to a closed polygon (negative inside), vectorised over points."""
    d = np.full(x.shape, np.inf, dtype=np.float32)
    inside = np.zeros(x.shape, dtype=bool)
    n = len(v)
    for i in range(n):
        (ax, ay), (bx, by) = v[i], v[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d = np.minimum(d, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        # even-odd rule: does a ray to +x from the point cross this edge?
        crosses = ((ay > y) != (by > y)) & (x < ax + (y - ay) * ex / (ey if ey != 0 else 1e-12))
        inside ^= crosses
    return np.where(inside, -1.0, 1.0).astype(np.float32) * np.sqrt(d)


def _box(x, y, hx, hy):
    qx, qy = np.abs(x) - hx, np.abs(y) - hy
    return np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0)


def signed_distance(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to shape ``name`` of radius about 1, centred at the origin (y up)."""
    if name in POLYGONS:
        return sd_polygon(x, y, POLYGONS[name])
    r = np.sqrt(x * x + y * y)
    if name == "circle":
        return r - 0.9
    if name == "ring":
        return np.abs(r - 0.72) - 0.24
    if name == "cross":
        return np.minimum(_box(x, y, 1.0, 0.3), _box(x, y, 0.3, 1.0))
    if name == "crescent":
        return np.maximum(r - 1.0, -(np.sqrt((x - 0.5) ** 2 + y * y) - 0.82))
    if name == "bars":
        return np.minimum(np.minimum(_box(x, y - 0.6, 0.92, 0.17), _box(x, y, 0.92, 0.17)), _box(x, y + 0.6, 0.92, 0.17))
    raise ValueError(f"unknown shape {name!r}")


# ---------------------------------------------------------------- drawing
def _colours(rng: np.random.Generator, n: int, min_distance: float = 0.55) -> tuple[np.ndarray, np.ndarray]:
    """Background and object colours, independent of the class, at least ``min_distance`` apart."""
    bg = rng.uniform(0.0, 1.0, (n, 3))
    fg = rng.uniform(0.0, 1.0, (n, 3))
    bad = np.linalg.norm(fg - bg, axis=1) < min_distance
    while bad.any():
        fg[bad] = rng.uniform(0.0, 1.0, (int(bad.sum()), 3))
        bad = np.linalg.norm(fg - bg, axis=1) < min_distance
    return bg.astype(np.float32), fg.astype(np.float32)


def draw(name: str, rng: np.random.Generator, height: int, width: int | None = None) -> np.ndarray:
    """One image of shape ``name`` as ``H x W x 3`` uint8 (see the module docstring)."""
    width = width or height
    side = min(height, width)
    bg, fg = _colours(rng, 1)
    bg, fg = bg[0], fg[0]
    # Python floats, so that arithmetic with the float32 pixel grids stays float32
    radius = float(rng.uniform(0.25, 0.4)) * side
    cx = float(rng.uniform(-1, 1)) * (width / 2 - 0.8 * radius)
    cy = float(rng.uniform(-1, 1)) * (height / 2 - 0.8 * radius)
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)) * math.pi / 180
    aspect = float(rng.uniform(0.85, 1.15))
    # background texture: two gratings with random period, orientation, phase and colour tint
    freq = (rng.uniform(1.0, 4.0, 2) * 2 * np.pi / side).tolist()  # cycles per image side
    theta = rng.uniform(0, np.pi, 2).tolist()
    phase = rng.uniform(0, 2 * np.pi, 2).tolist()
    tint = rng.normal(0.0, 0.05, (2, 3)).astype(np.float32)
    shade = rng.normal(0.0, 0.08, 2).tolist()  # object shading gradient
    noise = float(rng.uniform(0.02, 0.06))

    ys = ((height - 1) / 2 - np.arange(height, dtype=np.float32))[:, None]  # pixel centres, y up
    xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2)[None, :]
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    lx = (c * dx + s * dy) * (1 / (radius * aspect))
    ly = (-s * dx + c * dy) * (aspect / radius)
    d = signed_distance(name, lx, ly) * radius  # about pixels
    alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
    waves = np.empty((height, width, 2), np.float32)
    for k in range(2):
        # sin(a x + b y + p) = sin(a x) cos(b y + p) + cos(a x) sin(b y + p): separable, cheap
        ax, by = freq[k] * math.cos(theta[k]) * xs, freq[k] * math.sin(theta[k]) * ys + phase[k]
        waves[..., k] = np.sin(ax) * np.cos(by) + np.cos(ax) * np.sin(by)
    img = (waves.reshape(-1, 2) @ tint).reshape(height, width, 3)
    img += bg
    obj = (shade[0] * lx + shade[1] * ly)[..., None] + fg
    img += (obj - img) * alpha
    img += (rng.random((height, width, 3), dtype=np.float32) - 0.5) * (noise * math.sqrt(12))  # uniform, std = noise
    img *= 255
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def image_rng(seed: int, split: str, class_index: int, index: int) -> np.random.Generator:
    """The random stream of one image: images depend on nothing else."""
    return np.random.default_rng([seed, SPLIT_CODES[split], class_index, index])


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    small = is_small(max(image.shape[:2]))  # keep colour edges of small images: no chroma subsampling
    Image.fromarray(image).save(buf, "JPEG", quality=95, subsampling=0 if small else -1)
    path.write_bytes(buf.getvalue())


def generate_synth(out: str | os.PathLike, classes: int = 10, train_per_class: int = 500, val_per_class: int = 100,
                   size: int = 256, seed: int = 0, progress: bool = True) -> Path:
    """Write the generated dataset to ``out`` (see the module docstring); returns ``out``.

    A folder that already holds this exact dataset (same parameters, per its
    ``synth.json``) is returned as it is; any other non-empty folder is refused.
    """
    from tqdm.auto import tqdm

    if not 2 <= classes <= len(CLASSES):
        raise UserError(f"--classes must be between 2 and {len(CLASSES)}, not {classes}")
    if train_per_class < 1 or val_per_class < 0:
        raise UserError("--train-per-class must be at least 1 and --val-per-class at least 0")
    if not 8 <= size <= 4096:
        raise UserError(f"--size must be between 8 and 4096 pixels, not {size}")
    out = Path(out)
    params = {"classes": list(CLASSES[:classes]), "train_per_class": train_per_class, "val_per_class": val_per_class,
              "size": size, "seed": seed, "version": 1}
    marker = out / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == params:
                return out
        except json.JSONDecodeError:
            pass
        raise UserError(f"{out} holds a generated dataset with other parameters: remove it or choose another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder: choose another folder")
    counts = {"train": train_per_class, "val": val_per_class}
    total = classes * (train_per_class + val_per_class)
    with tqdm(total=total, unit="img", desc="synth", disable=not progress, dynamic_ncols=True) as bar:
        for split, count in counts.items():
            for k, name in enumerate(CLASSES[:classes]):
                folder = out / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    _write_jpeg(folder / f"{name}_{i:05d}.jpg", draw(name, image_rng(seed, split, k, i), size))
                    if i % 64 == 63 or i == count - 1:
                        bar.update(i % 64 + 1)
    marker.write_text(json.dumps(params, indent=1) + "\n")  # last: a complete dataset
    return out
