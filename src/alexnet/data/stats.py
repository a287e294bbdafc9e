"""Training-set statistics: the mean image, the mean colour, and the PCA of the colours.

One streaming pass: :class:`PixelStats` adds batches of uint8 images (each
shard of a prepare adds its own, partial sums merge by addition) and keeps,
in float64,

* ``n``: images, and the per-position sum (``H x W x C``);
* the per-channel sum and the ``C x C`` sum of outer products over all pixels.

The sums are of integer pixel values, so in float64 they are exact until they
pass 2**53 (about 1.4 M images of 256 x 256 for the outer products); the
result does not depend on the order of the shards. :meth:`finish` returns,
in pixel units (0..255, the values the paper's network sees before the mean
is taken off),

* ``mean_image`` (H x W x C), ``mean_rgb`` (C,),
* ``eigval`` (C,, descending; variances, grey levels squared) and ``eigvec``
  (C x C, column i the eigenvector of ``eigval[i]``, sign fixed so its
  largest component is positive) of the population covariance of the pixel
  colours, and that covariance ``cov``,
* ``count`` (images), ``schema`` (:data:`STATS_SCHEMA`).

With one channel, ``eigval`` is the variance and ``eigvec`` is ``[[1]]``.
:func:`load_stats` reads this schema only (statistics of [0, 1] values,
schema 1, are refused in one line).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

STATS_FILE = "stats.npz"
STATS_SCHEMA = 2  # pixel units 0..255 (1, with no "schema" key: [0, 1] units, not read)


class PixelStats:
    def __init__(self, height: int, width: int, channels: int):
        self.n = 0
        self.image_sum = np.zeros((height, width, channels), np.float64)
        self.pixel_sum = np.zeros(channels, np.float64)
        self.outer_sum = np.zeros((channels, channels), np.float64)

    def add(self, images: np.ndarray) -> None:
        """Add a batch ``N x H x W x C`` (or one image ``H x W x C``) of uint8 images."""
        if images.ndim == 3:
            images = images[None]
        if len(images) >= 1 << 24:
            raise ValueError("add at most 16 M images at a time (uint32 sums)")
        batch_sum = images.sum(axis=0, dtype=np.uint32)  # exact
        self.n += len(images)
        self.image_sum += batch_sum
        self.pixel_sum += batch_sum.reshape(-1, batch_sum.shape[-1]).sum(axis=0, dtype=np.float64)
        c = images.shape[-1]
        for image in images:  # one image at a time: its float64 copy stays in cache
            x = image.reshape(-1, c).T.astype(np.float64, order="C")  # channel rows: each dot reads contiguously
            for i in range(c):  # exact: integer products <= 255^2, summed well below 2^53
                for j in range(i, c):  # (x @ x.T on these shapes is 3x slower than six dot products)
                    v = float(np.dot(x[i], x[j]))
                    self.outer_sum[i, j] += v
                    if i != j:
                        self.outer_sum[j, i] += v

    def merge(self, other: "PixelStats") -> None:
        self.n += other.n
        self.image_sum += other.image_sum
        self.pixel_sum += other.pixel_sum
        self.outer_sum += other.outer_sum

    def state(self) -> dict[str, np.ndarray]:
        return {"n": np.array(self.n), "image_sum": self.image_sum, "pixel_sum": self.pixel_sum, "outer_sum": self.outer_sum}

    @classmethod
    def from_state(cls, state) -> "PixelStats":
        s = cls(*state["image_sum"].shape)
        s.n = int(state["n"])
        s.image_sum[...] = state["image_sum"]
        s.pixel_sum[...] = state["pixel_sum"]
        s.outer_sum[...] = state["outer_sum"]
        return s

    def finish(self) -> dict[str, np.ndarray]:
        if self.n == 0:
            raise ValueError("no images")
        pixels = self.n * self.image_sum.shape[0] * self.image_sum.shape[1]
        mean = self.pixel_sum / pixels
        cov = self.outer_sum / pixels - np.outer(mean, mean)
        cov = (cov + cov.T) / 2
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
        signs = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(eigvec.shape[1])])
        eigvec = eigvec * np.where(signs == 0, 1.0, signs)
        return {
            "mean_image": self.image_sum / self.n,
            "mean_rgb": mean,
            "eigval": eigval,
            "eigvec": eigvec,
            "cov": cov,
            "count": np.array(self.n),
            "schema": np.array(STATS_SCHEMA),
        }


MAX_STATS_BYTES = 1 << 30  # the arrays of a stats.npz together, when meta.json does not say their shapes
STATS_KEYS = ("mean_image", "mean_rgb", "eigval", "eigvec", "cov", "count", "schema")


def _expected_shapes(prepared_dir: Path) -> dict[str, tuple] | None:
    """The shape each statistic must have, from the folder's meta.json (``size``, ``channels``); None without one."""
    import json

    path = prepared_dir / "meta.json"
    try:
        if path.stat().st_size > 64 << 20:
            return None
        meta = json.loads(path.read_text())
        size, c = meta["size"], meta["channels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (size, c)):
        return None
    return {"mean_image": (size, size, c), "mean_rgb": (c,), "eigval": (c,), "eigvec": (c, c), "cov": (c, c),
            "count": (), "schema": ()}


def npy_header(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """``(shape, dtype)`` of the .npy member ``info`` of an .npz, from its header alone (no data inflated)."""
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    return tuple(shape), dtype


def _read_stats(path: Path, want: dict[str, tuple] | None) -> dict[str, np.ndarray]:
    """The known arrays of ``path``, each refused from its npy header (shape, dtype) before it is inflated:
    the shape ``want`` gives, a number type, and :data:`MAX_STATS_BYTES` in all. Other members are not read."""
    stats, total = {}, 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key not in STATS_KEYS or key in stats:
                continue
            shape, dtype = npy_header(z, info)
            if dtype.hasobject or dtype.kind not in "biuf":
                raise UserError(f"{path}: {key} is of type {dtype}, not numbers")
            if want is not None and tuple(shape) != want[key]:
                raise UserError(f"{path}: {key} has shape {tuple(shape)}, but the size and channels in meta.json "
                                f"make it {want[key]}")
            total += int(np.prod(shape, dtype=object)) * dtype.itemsize
            if total > MAX_STATS_BYTES:
                raise UserError(f"{path}: statistics of more than {MAX_STATS_BYTES:,} bytes (the limit), "
                                f"{key} of shape {tuple(shape)}")
            with z.open(info) as f:  # reads exactly what the header says
                stats[key] = np.lib.format.read_array(f, allow_pickle=False)
    return stats


def load_stats(prepared_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``mean_image``, ``mean_rgb``, ``eigval``, ``eigvec`` (and ``cov``, ``count``) of a prepared folder, in pixel units.

    Each array is checked from its
    header before it is read (see :func:`_read_stats`): a crafted stats.npz
    (a zip bomb, an array of Python objects) is a one-line error.
    """
    path = Path(prepared_dir) / STATS_FILE
    if not path.is_file():
        raise UserError(f"{prepared_dir} has no {STATS_FILE}: is it a folder written by `alexnet prepare`?")
    try:
        stats = _read_stats(path, _expected_shapes(Path(prepared_dir)))
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError) as e:  # a broken zip, member or npy header
        raise UserError(f"{path}: not a readable statistics file ({e})") from None
    missing = [k for k in STATS_KEYS[:4] if k not in stats]
    if missing:
        raise UserError(f"{path}: no {', '.join(missing)}")
    schema = int(stats.get("schema", 1))
    if schema > STATS_SCHEMA:
        raise UserError(f"{path} has statistics schema {schema}; this alexnet reads up to {STATS_SCHEMA}: upgrade alexnet")
    if schema < STATS_SCHEMA:
        raise UserError(f"{path} has statistics schema {schema} ([0, 1] units), which is not supported; this "
                        f"alexnet reads schema {STATS_SCHEMA}: prepare the folder again")
    return stats
