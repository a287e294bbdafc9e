"""The built-in dataset: drawn objects on textured, noisy backgrounds, 2 to 1,000 classes.

``generate_synth(out, classes=10, ...)`` writes an ImageNet-style folder,
``out/{train,val}/<class>/<class>_NNNNN.jpg`` (or, with ``layout="ilsvrc"``,
the ILSVRC-2012 layout: see below). Each image is one object, drawn from its
exact signed distance (antialiased edges), at a random position (anywhere, a
fifth of it may leave the frame), scale (radius 25-40 % of the short side,
aspect 0.85-1.15), rotation (within +-30 degrees) and colour, with a shading
gradient, over a background of a random colour, two random sinusoid gratings
(1-4 cycles per side, colour-tinted texture) and pixel noise; the object's
colour is at least 0.55 (RGB distance, [0, 1] units) from the background's
but drawn independently of the class. So:

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

**More than 10 classes.** A class is a triple of factors, (shape, object
texture, background pattern), 10 x 10 x 10 = :data:`MAX_CLASSES`; class
``k`` is ``(SHAPES[k % 10], TEXTURES[k // 10 % 10], BACKGROUNDS[k // 100])``.
Texture 0 (``solid``: one colour and its shading) and background 0
(``waves``: the two faint gratings) are the ten-class dataset's, so classes
0-9 are the ten shapes, drawn byte for byte as before; 11-100 classes add
object textures (striped, checked, dotted, ...: a second colour, at least
0.4 from the first, in a pattern that turns with the object), 101-1,000
background patterns (blobs, grid, checker, ...: a second background colour
0.3 away). Colours stay independent of the class. Up to 10 classes a class
is named by its shape (``circle``), beyond by its triple
(``circle-striped-grid``).

**Sizes.** ``sizes="fixed"`` draws ``size`` x ``size`` images (JPEG quality
95); ``sizes="imagenet"`` draws ILSVRC-2012's spread: the area from a
log-normal and the aspect (width / height) from a clipped log-normal, fitted
to about 400 x 350 px on average, a third of them portrait, sides clipped to
100-2,000 px, JPEG quality 90; the object scales with the short side.

**Layouts.** ``layout="folder"`` is the folder above; ``layout="ilsvrc"`` is
ILSVRC-2012 as distributed: ``train/<wnid>/<wnid>_<n>.JPEG`` with synset-like
ids ``n00000001``..., a flat ``val/ILSVRC2012_val_%08d.JPEG`` (classes
interleaved) and the devkit, ``ILSVRC2012_devkit_t12/data/meta.mat`` (the
readable class names as the synsets' ``words``) and
``ILSVRC2012_validation_ground_truth.txt``: ``alexnet prepare`` reads it as
it reads the real one.

Every image is a function of ``(seed, split, class, index)`` and the sizes
option only, so the same seed gives the same files whatever the number of
worker processes, and more images per class only add files. The signed
distance is computed in the object's bounding box only. About 1,500 images/s
at 32 px, 200/s at 256 px and 100/s with ImageNet sizes on one core (AMD
EPYC, shared); ``workers`` processes share the work (benchmarks/synth.py
measures it).
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import UserError
from .meta import is_small

CLASSES = ("circle", "ring", "square", "triangle", "cross", "star", "crescent", "arrow", "bowtie", "bars")
SHAPES = CLASSES
TEXTURES = ("solid", "striped", "checked", "dotted", "ringed", "gridded", "outlined", "graded", "speckled", "zigzag")
BACKGROUNDS = ("waves", "blobs", "grid", "checker", "stripes", "dots", "rings", "mottled", "grainy", "plain")
MAX_CLASSES = len(SHAPES) * len(TEXTURES) * len(BACKGROUNDS)
SIZES = ("fixed", "imagenet")
LAYOUTS = ("folder", "ilsvrc")
# ImageNet-like sizes: log(area) ~ N(AREA_LOG_MEAN, AREA_LOG_STD), log(w / h) ~ N(ASPECT_LOG_MEAN, ASPECT_LOG_STD)
# clipped to +-ASPECT_LOG_CLIP; means about 400 x 350 px (measured by the tests and benchmarks/synth.py)
AREA_LOG_MEAN, AREA_LOG_STD = 11.67, 0.8
ASPECT_LOG_MEAN, ASPECT_LOG_STD, ASPECT_LOG_CLIP = 0.13, 0.3, 0.9
MIN_SIDE, MAX_SIDE = 100, 2000
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


# ---------------------------------------------------------------- classes
def class_factors(k: int) -> tuple[int, int, int]:
    """``(shape, texture, background)`` indices of class ``k`` (see the module docstring)."""
    if not 0 <= k < MAX_CLASSES:
        raise ValueError(f"class index {k} out of range 0-{MAX_CLASSES - 1}")
    return k % len(SHAPES), k // len(SHAPES) % len(TEXTURES), k // (len(SHAPES) * len(TEXTURES))


def class_names(classes: int) -> list[str]:
    """Readable names of the first ``classes`` classes: shapes up to 10, ``shape-texture-background`` beyond."""
    if classes <= len(SHAPES):
        return list(SHAPES[:classes])
    return ["-".join((SHAPES[s], TEXTURES[t], BACKGROUNDS[b])) for s, t, b in map(class_factors, range(classes))]


def wnid(k: int) -> str:
    """The synset-like id of class ``k`` in the ILSVRC layout: ``n00000001`` for class 0."""
    return f"n{k + 1:08d}"


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


def _second_colour(rng: np.random.Generator, fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """The texture's colour: at least 0.4 from the object's and 0.3 from the background's."""
    while True:
        c = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        if np.linalg.norm(c - fg) >= 0.4 and np.linalg.norm(c - bg) >= 0.3:
            return c


def _shifted_colour(rng: np.random.Generator, bg: np.ndarray, distance: float = 0.3) -> np.ndarray:
    """The background pattern's colour: ``distance`` from ``bg`` in a random direction (kept in [0, 1])."""
    v = rng.normal(0.0, 1.0, 3)
    v = v / (np.linalg.norm(v) + 1e-9) * distance
    c = bg + v
    c = np.where((c < 0) | (c > 1), bg - v, c)  # reflect a component that leaves the cube
    return np.clip(c, 0.0, 1.0).astype(np.float32)


def _square_wave(phase, gain: float):
    """An antialiased square wave in [0, 1]: ``gain`` is about the pixels per radian at the edges."""
    return np.clip(0.5 + max(gain, 0.5) * np.sin(phase), 0.0, 1.0)


def _texture_params(rng: np.random.Generator, texture: int) -> dict:
    angle = float(rng.uniform(0, np.pi))
    return {"period": float(rng.uniform(0.28, 0.42)), "c": math.cos(angle), "s": math.sin(angle),
            "phase": float(rng.uniform(0, 2 * np.pi)), "cells": rng.random((16, 16)) < 0.5}


def _texture(texture: int, q: dict, lx, ly, d, radius: float):
    """The texture weight in [0, 1] (0: object colour, 1: texture colour) at object coordinates ``lx, ly``
    (units of the radius), ``d`` the signed distance in pixels."""
    name = TEXTURES[texture]
    p, ph = q["period"], q["phase"]
    u, v = q["c"] * lx + q["s"] * ly, -q["s"] * lx + q["c"] * ly
    gain = p * radius / (2 * np.pi)  # pixels per radian of 2 pi u / p
    if name == "striped":
        return _square_wave(u * (2 * np.pi / p) + ph, gain)
    if name == "checked":
        a, b = _square_wave(u * (2 * np.pi / p) + ph, gain), _square_wave(v * (2 * np.pi / p) + ph, gain)
        return a * b + (1 - a) * (1 - b)
    if name == "dotted" or name == "gridded":
        fu = np.abs((u / p + ph) % 1.0 - 0.5)  # 0 at the middle of a cell, 0.5 on its edges
        fv = np.abs((v / p + ph) % 1.0 - 0.5)
        if name == "dotted":
            dist = np.sqrt(fu * fu + fv * fv) * (p * radius)
            return np.clip(0.3 * p * radius - dist + 0.5, 0.0, 1.0)
        dist = (0.5 - np.maximum(fu, fv)) * (p * radius)
        return np.clip(0.1 * p * radius - dist + 0.5, 0.0, 1.0)
    if name == "ringed":
        return _square_wave(np.sqrt(lx * lx + ly * ly) * (2 * np.pi / p) + ph, gain)
    if name == "outlined":  # a rim of the object's colour around a core of the texture's
        return np.clip(-d - 0.22 * radius + 0.5, 0.0, 1.0)
    if name == "graded":
        return np.clip((u + 1) * 0.5, 0.0, 1.0)
    if name == "speckled":
        iu = np.floor(u * (2 / p)).astype(np.int64) % 16
        iv = np.floor(v * (2 / p)).astype(np.int64) % 16
        return q["cells"][iu, iv].astype(np.float32)
    if name == "zigzag":
        tri = np.abs((v / p) % 1.0 - 0.5) * 2
        return _square_wave((u / p + 0.5 * tri) * (2 * np.pi) + ph, gain * 0.7)
    raise ValueError(f"unknown texture {name!r}")


def _background_params(rng: np.random.Generator, background: int, height: int, width: int) -> dict:
    side = min(height, width)
    q = {"angle": float(rng.uniform(0, np.pi)), "phase": rng.uniform(0, 1, 2).tolist(),
         "centres": (rng.uniform(-0.5, 0.5, (5, 2)) * [width / side, height / side]).tolist(),
         "sigmas": rng.uniform(0.08, 0.2, 5).tolist(), "count": int(rng.integers(3, 6)),
         "scale": float(rng.uniform(0, 1))}
    name = BACKGROUNDS[background]
    if name == "mottled":
        cells = int(rng.integers(5, 10))
        q["grid"] = rng.random((cells * height // side + 2, cells * width // side + 2), dtype=np.float32)
        q["cells"] = cells
    elif name == "grainy":
        grain = max(1, side // 100)
        q["grain"] = grain
        q["grid"] = rng.random((height // grain + 1, width // grain + 1), dtype=np.float32)
    return q


def _smooth_weights(n: int, cells: float, size: int) -> np.ndarray:
    """``n x size`` weights interpolating ``n`` knots (one every ``size / cells`` px) smoothly onto ``size`` px."""
    t = np.arange(size, dtype=np.float32) * (cells / size)
    i = np.minimum(np.floor(t).astype(np.int64), n - 2)
    f = t - i
    f = f * f * (3 - 2 * f)
    w = np.zeros((n, size), np.float32)
    w[i, np.arange(size)] = 1 - f
    w[i + 1, np.arange(size)] = f
    return w


def _background(background: int, q: dict, xs, ys, side: int):
    """The background pattern's weight in [0, 1] (0: background colour, 1: pattern colour), ``H x W``
    (or broadcastable to it); ``xs`` (``1 x W``) and ``ys`` (``H x 1``) are pixel centres, y up."""
    name = BACKGROUNDS[background]
    height, width = ys.shape[0], xs.shape[1]
    X, Y = xs * (1 / side), ys * (1 / side)
    sc, ph = q["scale"], q["phase"]
    if name == "blobs":
        out = np.zeros((height, width), np.float32)
        for (cx, cy), sig in list(zip(q["centres"], q["sigmas"]))[: q["count"]]:
            k = -0.5 / (sig * sig)
            out += np.exp(k * (X - cx) ** 2) * np.exp(k * (Y - cy) ** 2)
        return np.minimum(out, 1.0)
    if name == "grid" or name == "dots":
        period = (0.1 + 0.1 * sc) * side  # pixels: 5-10 cells per side
        fx = np.abs((xs / period + ph[0]) % 1.0 - 0.5)
        fy = np.abs((ys / period + ph[1]) % 1.0 - 0.5)
        if name == "grid":
            w = max(1.0, 0.06 * period)
            return np.maximum(np.clip(w - (0.5 - fx) * period + 0.5, 0, 1), np.clip(w - (0.5 - fy) * period + 0.5, 0, 1))
        return np.clip(0.25 * period - np.sqrt((fx * fx + fy * fy)) * period + 0.5, 0.0, 1.0)
    if name == "checker":
        period = (1 / 8 + (1 / 3 - 1 / 8) * sc) * side
        gain = period / (2 * np.pi)
        sx = _square_wave(xs * (2 * np.pi / period) + 2 * np.pi * ph[0], gain)
        sy = _square_wave(ys * (2 * np.pi / period) + 2 * np.pi * ph[1], gain)
        return sx * sy + (1 - sx) * (1 - sy)
    if name == "stripes":
        period = (1 / 14 + (1 / 6 - 1 / 14) * sc) * side
        c, s = math.cos(q["angle"]), math.sin(q["angle"])
        return _square_wave((c * xs + s * ys) * (2 * np.pi / period) + 2 * np.pi * ph[0], period / (2 * np.pi))
    if name == "rings":
        period = (1 / 12 + (1 / 5 - 1 / 12) * sc) * side
        (cx, cy) = q["centres"][0]
        r = np.sqrt((xs - cx * side) ** 2 + (ys - cy * side) ** 2)
        return _square_wave(r * (2 * np.pi / period) + 2 * np.pi * ph[0], period / (2 * np.pi))
    if name == "mottled":
        g, cells = q["grid"], q["cells"]
        wy = _smooth_weights(g.shape[0], cells * height / side, height)
        wx = _smooth_weights(g.shape[1], cells * width / side, width)
        return (wy.T @ g) @ wx
    if name == "grainy":
        grain = q["grain"]
        g = np.repeat(np.repeat(q["grid"], grain, 0), grain, 1)
        return g[:height, :width]
    if name == "plain":
        return np.zeros((1, 1), np.float32)
    raise ValueError(f"unknown background {name!r}")


def _object_box(height: int, width: int, cx: float, cy: float, radius: float) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` that hold every pixel the object touches: each shape lies
    within sqrt(2) of its centre (radius units), times at most 1.15 for the aspect, plus the antialiased edge."""
    reach = 1.63 * radius + 2
    col, row = cx + (width - 1) / 2, (height - 1) / 2 - cy
    return (max(0, int(math.floor(row - reach))), min(height, int(math.ceil(row + reach)) + 1),
            max(0, int(math.floor(col - reach))), min(width, int(math.ceil(col + reach)) + 1))


def draw(name: str, rng: np.random.Generator, height: int, width: int | None = None,
         texture: int = 0, background: int = 0) -> np.ndarray:
    """One image of shape ``name`` as ``H x W x 3`` uint8 (see the module docstring);
    ``texture`` and ``background`` index :data:`TEXTURES` and :data:`BACKGROUNDS`."""
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
    # the factors beyond the ten shapes draw after the ten-class images' draws: those stay the same
    if texture:
        tex, fg2 = _texture_params(rng, texture), _second_colour(rng, fg, bg)
    if background:
        back, bg2 = _background_params(rng, background, height, width), _shifted_colour(rng, bg)

    ys = ((height - 1) / 2 - np.arange(height, dtype=np.float32))[:, None]  # pixel centres, y up
    xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2)[None, :]
    if background == 0:
        waves = np.empty((height, width, 2), np.float32)
        for k in range(2):
            # sin(a x + b y + p) = sin(a x) cos(b y + p) + cos(a x) sin(b y + p): separable, cheap
            ax, by = freq[k] * math.cos(theta[k]) * xs, freq[k] * math.sin(theta[k]) * ys + phase[k]
            waves[..., k] = np.sin(ax) * np.cos(by) + np.cos(ax) * np.sin(by)
        img = (waves.reshape(-1, 2) @ tint).reshape(height, width, 3)
        img += bg
    else:
        img = np.empty((height, width, 3), np.float32)
        img[:] = bg
        img += _background(background, back, xs, ys, side).astype(np.float32)[..., None] * (bg2 - bg)
    # the object: its signed distance only in the box around it (outside, alpha is 0)
    r0, r1, c0, c1 = _object_box(height, width, cx, cy, radius)
    if r1 > r0 and c1 > c0:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = xs[:, c0:c1] - cx, ys[r0:r1] - cy
        lx = (c * dx + s * dy) * (1 / (radius * aspect))
        ly = (-s * dx + c * dy) * (aspect / radius)
        d = signed_distance(name, lx, ly) * radius  # about pixels
        alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
        obj = (shade[0] * lx + shade[1] * ly)[..., None] + fg
        if texture:
            obj += _texture(texture, tex, lx, ly, d, radius).astype(np.float32)[..., None] * (fg2 - fg)
        sub = img[r0:r1, c0:c1]
        sub += (obj - sub) * alpha
    img += (rng.random((height, width, 3), dtype=np.float32) - 0.5) * (noise * math.sqrt(12))  # uniform, std = noise
    img *= 255
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def draw_class(k: int, rng: np.random.Generator, height: int, width: int | None = None) -> np.ndarray:
    """One image of class ``k`` (its factor triple, see :func:`class_factors`)."""
    shape, texture, background = class_factors(k)
    return draw(SHAPES[shape], rng, height, width, texture, background)


def image_rng(seed: int, split: str, class_index: int, index: int) -> np.random.Generator:
    """The random stream of one image: images depend on nothing else."""
    return np.random.default_rng([seed, SPLIT_CODES[split], class_index, index])


def imagenet_size(rng: np.random.Generator) -> tuple[int, int]:
    """``(height, width)`` drawn from ILSVRC-2012's spread of image sizes (see the module docstring)."""
    area = math.exp(float(rng.normal(AREA_LOG_MEAN, AREA_LOG_STD)))
    aspect = math.exp(float(np.clip(rng.normal(ASPECT_LOG_MEAN, ASPECT_LOG_STD), -ASPECT_LOG_CLIP, ASPECT_LOG_CLIP)))
    width = min(MAX_SIDE, max(MIN_SIDE, round(math.sqrt(area * aspect))))
    height = min(MAX_SIDE, max(MIN_SIDE, round(math.sqrt(area / aspect))))
    return height, width


def synth_image(seed: int, split: str, k: int, index: int, size: int = 256, sizes: str = "fixed") -> np.ndarray:
    """Image ``index`` of class ``k`` in ``split``, as written by :func:`generate_synth`."""
    rng = image_rng(seed, split, k, index)
    if sizes == "imagenet":
        # its own stream, so that the drawing's stream is the fixed-size one
        height, width = imagenet_size(np.random.default_rng([seed, SPLIT_CODES[split], k, index, 1]))
    else:
        height = width = size
    return draw_class(k, rng, height, width)


def _jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    small = is_small(max(image.shape[:2]))  # keep colour edges of small images: no chroma subsampling
    Image.fromarray(image).save(buf, "JPEG", quality=quality, subsampling=0 if small else -1)
    return buf.getvalue()


def _write_jpeg(path: Path, image: np.ndarray, quality: int = 95) -> None:
    path.write_bytes(_jpeg_bytes(image, quality))


# ---------------------------------------------------------------- ILSVRC devkit
def _mat_element(kind: int, payload: bytes, small_ok: bool = True) -> bytes:
    if small_ok and len(payload) <= 4:
        return struct.pack("<I", len(payload) << 16 | kind) + payload.ljust(4, b"\0")
    return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _mat_matrix(name: str, value) -> bytes:
    """A MATLAB v5 matrix element: a char row, a double scalar or an ``n x 1`` struct array (list of dicts)."""
    def head(cls, dims):
        return (_mat_element(6, struct.pack("<II", cls, 0), False)
                + _mat_element(5, struct.pack(f"<{len(dims)}i", *dims), False) + _mat_element(1, name.encode()))

    if isinstance(value, str):
        data = value.encode("utf-8")
        body = head(4, (1, len(data))) + _mat_element(16, data)  # utf-8 chars
    elif isinstance(value, list):
        fields = list(value[0])
        body = head(2, (len(value), 1)) + _mat_element(5, struct.pack("<i", 32))
        body += _mat_element(1, b"".join(f.encode().ljust(32, b"\0") for f in fields))
        body += b"".join(_mat_matrix("", item[f]) for item in value for f in fields)
    else:
        body = head(6, (1, 1)) + _mat_element(9, struct.pack("<d", float(value)))
    return _mat_element(14, body, False)


def write_mat(path: Path, variables: dict) -> None:
    """A compressed MATLAB v5 file (what ``scipy.io.savemat(..., do_compression=True)`` writes) of ``variables``."""
    header = b"MATLAB 5.0 MAT-file, written by alexnet data synth".ljust(116, b" ") + b"\0" * 8
    out = header + struct.pack("<H", 0x0100) + b"IM"
    for name, value in variables.items():
        z = zlib.compress(_mat_matrix(name, value))
        out += struct.pack("<II", 15, len(z)) + z
    path.write_bytes(out)


def _write_devkit(out: Path, names: list[str], val_per_class: int) -> None:
    classes = len(names)
    data = out / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True, exist_ok=True)
    synsets = [{"ILSVRC2012_ID": k + 1, "WNID": wnid(k), "words": name, "gloss": f"generated class {name}",
                "num_children": 0, "wordnet_height": 0, "num_train_images": 0} for k, name in enumerate(names)]
    write_mat(data / "meta.mat", {"synsets": synsets})
    # line j labels ILSVRC2012_val_{j:08d}: image i of class k is number i * classes + k + 1
    truth = "".join(f"{k + 1}\n" for _ in range(val_per_class) for k in range(classes))
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)


# ---------------------------------------------------------------- writing
def _image_path(out: Path, layout: str, names: list[str], split: str, k: int, i: int) -> Path:
    if layout == "ilsvrc":
        if split == "train":
            return out / "train" / wnid(k) / f"{wnid(k)}_{i + 1}.JPEG"
        return out / "val" / f"ILSVRC2012_val_{i * len(names) + k + 1:08d}.JPEG"
    return out / split / names[k] / f"{names[k]}_{i:05d}.jpg"


def _write_chunk(job: tuple) -> int:
    """Draw and write the images of one chunk of ``(split, class, index)`` work items; returns their number."""
    out, layout, names, seed, size, sizes, items = job
    quality = 90 if sizes == "imagenet" else 95
    for split, k, i in items:
        image = synth_image(seed, split, k, i, size, sizes)
        _image_path(out, layout, names, split, k, i).write_bytes(_jpeg_bytes(image, quality))
    return len(items)


def _pool_context():
    # fork starts workers at once (nothing to import again); elsewhere spawn
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def generate_synth(out: str | os.PathLike, classes: int = 10, train_per_class: int = 500, val_per_class: int = 100,
                   size: int = 256, seed: int = 0, progress: bool = True, sizes: str = "fixed",
                   layout: str = "folder", workers: int | None = 1) -> Path:
    """Write the generated dataset to ``out`` (see the module docstring); returns ``out``.

    ``classes``: 2 to :data:`MAX_CLASSES`; ``sizes``: ``fixed`` (``size`` x ``size``) or ``imagenet``;
    ``layout``: ``folder`` or ``ilsvrc``; ``workers``: processes drawing (``None``: every core), which
    change nothing in the files. A folder that already holds this exact dataset (same parameters, per its
    ``synth.json``) is returned as it is; any other non-empty folder is refused.
    """
    from tqdm.auto import tqdm

    if not 2 <= classes <= MAX_CLASSES:
        raise UserError(f"--classes must be between 2 and {MAX_CLASSES}, not {classes}")
    if train_per_class < 1 or val_per_class < 0:
        raise UserError("--train-per-class must be at least 1 and --val-per-class at least 0")
    if not 8 <= size <= 4096:
        raise UserError(f"--size must be between 8 and 4096 pixels, not {size}")
    if sizes not in SIZES:
        raise UserError(f"--sizes must be one of {', '.join(SIZES)}, not {sizes!r}")
    if layout not in LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    out = Path(out)
    names = class_names(classes)
    params = {"classes": names, "train_per_class": train_per_class, "val_per_class": val_per_class,
              "size": size, "seed": seed, "version": 1}
    if sizes != "fixed":  # only then: the ten-class datasets written before keep their marker
        params.update(size=None, sizes=sizes)
    if layout != "folder":
        params["layout"] = layout
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
    for split, count in counts.items():
        if layout == "ilsvrc":
            if count:
                (out / split).mkdir(parents=True, exist_ok=True)
            if split == "train":
                for k in range(classes):
                    (out / "train" / wnid(k)).mkdir()
        else:
            for name in names:
                (out / split / name).mkdir(parents=True, exist_ok=True)
    if layout == "ilsvrc":
        _write_devkit(out, names, val_per_class)
    items = [(split, k, i) for split, count in counts.items() for k in range(classes) for i in range(count)]
    total = len(items)
    workers = max(1, min(workers, total))
    chunk = max(1, min(64, total // (workers * 8) or 1))
    jobs = [(out, layout, names, seed, size, sizes, items[j:j + chunk]) for j in range(0, total, chunk)]
    with tqdm(total=total, unit="img", desc="synth", disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(_write_chunk(job))
        else:
            with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
                for n in pool.map(_write_chunk, jobs):
                    bar.update(n)
    marker.write_text(json.dumps(params, indent=1) + "\n")  # last: a complete dataset
    return out
