"""What a prepared folder is: its ``meta.json``, read in one place, and the small-image cut-off.

``meta.json`` (written last by :func:`alexnet.data.prepare`, see that module
for the whole folder)::

    classes        class ids (folder names, synset ids), index = label
    class_names    human-readable names, same order
    splits         {"train": count, "val": count, ...}: rows of <split>.index.npy
    shards         {"train": ["train-000000.tar", ...], ...}
    size           side of the stored square images, px
    channels       3 (RGB) or 1 (grey)
    format         "jpg" or "raw" (uint8 .npy members, for small images)
    source         the source kind (folder, ilsvrc2012, idx, cifar10, cifar100, webdataset)
    shuffle_seed   the seed of the fixed order the samples were written in (absent: source order)
    version        1
    skipped, jpeg_quality, written_by

A prepared folder may come from someone else, so :func:`read_meta`, the one
way in (the loader, evaluation, features, the report all open a folder
through it), checks it once per process and state of its files
(:func:`validate_prepared`), cheaply: the index arrays are memory-mapped
and checked with vectorised min/max, the statistics by their npy headers;
no pixel data is read. Any violation is a one-line :class:`UserError`
naming the folder, the file and what is wrong:

* every shard name is a plain file name in the folder (no separator, not
  ``.`` or ``..``, so not absolute either), a regular file, and not a link
  that resolves outside the folder;
* every ``<split>.index.npy`` is an integer ``count x 4`` array with
  ``count`` the split's count in meta.json; per row, the shard number is in
  ``[0, shards of the split)``, the offset is ``>= 0``, the byte size is
  ``size * size * channels`` (raw) or positive (jpg), offset + size is within
  that shard file, and the label is in ``[0, classes)``;
  ``size``, ``channels`` and ``format`` are well-formed; there are at least
  two classes;
* the statistics' shapes agree with ``size`` and ``channels``.

Small images: a side of :data:`SMALL_IMAGE_SIDE` px or less (MNIST, CIFAR, a
small generated set). They are stored raw at their own size (never upscaled),
trained at their own size with a random crop of the image reflection-padded
by size // 8, and read without loader processes by default. Larger images are
the paper's case: stored at 256 px, a 224 px crop.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError, short_repr
from .stats import npy_header

VERSION = 1
META_FILE = "meta.json"
SMALL_IMAGE_SIDE = 64  # px: images this small or smaller are "small images" (see the module docstring)


def is_small(size: int) -> bool:
    """Whether images of ``size`` px are small images (see the module docstring)."""
    return int(size) <= SMALL_IMAGE_SIDE


def eval_resize(crop: int) -> int:
    """The side an image is scaled to before its centre ``crop`` is taken: the crop itself for small
    images (used at their own size), the paper's 256 otherwise (see the module docstring)."""
    return int(crop) if is_small(crop) else 256


def read_meta(prepared_dir: str | os.PathLike) -> dict:
    """The meta.json of a prepared folder, after :func:`validate_prepared` (a one-line error when it is not
    a prepared folder, or a damaged or crafted one)."""
    meta = _read_meta_file(prepared_dir)
    validate_prepared(prepared_dir, meta)
    return meta


def _read_meta_file(prepared_dir: str | os.PathLike) -> dict:
    path = Path(prepared_dir) / META_FILE
    if not path.is_file():
        raise UserError(f"{prepared_dir} is not a prepared data folder (no {META_FILE}): run `alexnet prepare` first")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise UserError(f"{path}: prepared-data version {version} is not {VERSION}: prepare it again")
    return meta


# ---------------------------------------------------------------- validation
_VALIDATED: dict[str, tuple] = {}  # realpath of a folder -> the signature of its files when it was found valid


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def shard_path(root: Path, name, where: str) -> Path:
    """``root / name`` for a shard name of meta.json, refused unless it is a plain file name in ``root``
    (no separator, not ``.`` or ``..``, hence never absolute), and not a link that resolves outside it."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.basename(name) != name):
        raise UserError(f"{root / META_FILE}: {where} names {short_repr(name)}, not a plain file name in the folder")
    path = root / name
    if path.is_symlink():
        real, top = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, top]) != top:
            raise UserError(f"{path}: a link to {real}, outside the prepared folder")
    return path


def _stats_shapes(path: Path) -> dict[str, tuple]:
    """``name -> shape`` of the arrays of an .npz, from their npy headers only (no data read)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                shape, dtype = npy_header(z, info)
                if dtype.hasobject:
                    raise ValueError(f"{info.filename} holds Python objects")
                shapes[info.filename[:-4]] = shape
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable statistics file ({e})") from None
    return shapes


def _signature(root: Path, meta: dict) -> tuple:
    """What the validation of ``root`` depends on: meta.json, the indexes, stats.npz and the listed shards,
    by inode, size and modification time."""
    names = [META_FILE, "stats.npz"] + [f"{s}.index.npy" for s in meta.get("splits", {}) if isinstance(s, str)]
    shards = meta.get("shards")
    if isinstance(shards, dict):
        names += [n for v in shards.values() if isinstance(v, list) for n in v if isinstance(n, str)]
    sig = []
    for n in names:
        try:
            st = os.stat(root / n)
            sig.append((n, st.st_ino, st.st_size, st.st_mtime_ns))
        except (OSError, ValueError):
            sig.append((n, None))
    return tuple(sig)


def validate_prepared(prepared_dir: str | os.PathLike, meta: dict | None = None) -> None:
    """Check that ``prepared_dir`` (with its meta.json ``meta``) is a well-formed prepared folder whose
    index only points inside its own shard files; a one-line :class:`UserError` if not (see the module
    docstring). Cheap: no pixel data is read; a folder found valid is not checked again while its files
    are unchanged."""
    root = Path(prepared_dir)
    if meta is None:
        meta = _read_meta_file(root)
    key = os.path.realpath(root)
    sig = _signature(root, meta)
    if _VALIDATED.get(key) == sig:
        return
    _validate(root, meta)
    _VALIDATED[key] = sig


def _validate(root: Path, meta: dict) -> None:
    mpath = root / META_FILE

    def bad(what: str) -> UserError:
        return UserError(f"{mpath}: {what}")

    classes = meta.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
        raise bad("classes must be a list of class ids")
    if len(classes) < 2:
        raise bad(f"holds {len(classes)} class(es): a classifier needs at least two")
    names = meta.get("class_names", classes)
    if not isinstance(names, list) or len(names) != len(classes):
        raise bad(f"class_names must be a list of {len(classes)} names, one per class")
    size, channels, fmt = meta.get("size"), meta.get("channels", 3), meta.get("format")
    if not _is_int(size) or not 1 <= size <= 1 << 16:
        raise bad(f"size {short_repr(size)} is not a side in pixels (1..65536)")
    if channels not in (1, 3) or not _is_int(channels):
        raise bad(f"channels {short_repr(channels)} is not 1 or 3")
    if fmt not in ("jpg", "raw"):
        raise bad(f"format {short_repr(fmt)} is not jpg or raw")
    splits, shards = meta.get("splits"), meta.get("shards")
    if not isinstance(splits, dict) or not all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in splits.items()):
        raise bad("splits must map split names to sample counts")
    if not isinstance(shards, dict) or not all(isinstance(v, list) for v in shards.values()):
        raise bad("shards must map split names to lists of shard file names")
    for split, listed in shards.items():
        for name in listed:
            shard_path(root, name, f"shards[{short_repr(split)}]")
    n_classes, row_bytes = len(classes), size * size * channels
    for split, count in splits.items():
        if split not in shards:
            raise bad(f"split {short_repr(split)} has no shards listed")
        sizes = []
        for name in shards[split]:
            path = root / name
            try:
                st = os.stat(path)
            except OSError as e:
                raise UserError(f"{path}: shard listed in {META_FILE} cannot be read ({e.strerror})") from None
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"{path}: shard listed in {META_FILE} is not a regular file")
            sizes.append(st.st_size)
        _check_index(root, split, count, shards[split], np.array(sizes, np.int64), n_classes, fmt, row_bytes)
    _check_stats(root, size, channels)


def _check_index(root: Path, split: str, count: int, shard_names: list[str], shard_sizes: np.ndarray,
                 n_classes: int, fmt: str, row_bytes: int) -> None:
    path = root / f"{split}.index.npy"
    if not path.is_file():
        raise UserError(f"{path} is missing: prepare {root} again")
    try:
        index = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable index ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if index.dtype.kind not in "iu" or index.ndim != 2 or index.shape[1] != 4:
        raise UserError(f"{path}: expected integer rows (shard, offset, size, label), got {index.dtype} {index.shape}")
    if len(index) != count:
        raise UserError(f"{path}: {len(index)} rows, but {META_FILE} counts {count} samples in {split}")
    if not len(index):
        return
    if index.dtype.kind == "u" and index.dtype.itemsize >= 8 and int(index.max()) >= 1 << 63:
        raise UserError(f"{path}: values beyond int64")
    index = np.asarray(index, dtype=np.int64)
    shard, offset, nbytes, label = index[:, 0], index[:, 1], index[:, 2], index[:, 3]

    def row(mask: np.ndarray) -> str:
        i = int(np.flatnonzero(mask)[0])
        return f"row {i} {tuple(int(v) for v in index[i])}"

    n_shards = len(shard_sizes)
    if shard.min() < 0 or shard.max() >= n_shards:
        raise UserError(f"{path}: {row((shard < 0) | (shard >= n_shards))} names a shard outside 0..{n_shards - 1}")
    if offset.min() < 0:
        raise UserError(f"{path}: {row(offset < 0)} has a negative offset")
    if fmt == "raw":
        if nbytes.min() != row_bytes or nbytes.max() != row_bytes:
            raise UserError(f"{path}: {row(nbytes != row_bytes)}: a raw image of the folder's size and channels "
                            f"is {row_bytes} bytes")
    elif nbytes.min() < 1:
        raise UserError(f"{path}: {row(nbytes < 1)} has an empty or negative size")
    room = shard_sizes[shard] - nbytes  # no overflow: nbytes >= 1, sizes >= 0
    past = offset > room
    if past.any():
        name = shard_names[int(shard[np.flatnonzero(past)[0]])]
        raise UserError(f"{path}: {row(past)} reaches past the end of its shard {root / name}")
    if label.min() < 0 or label.max() >= n_classes:
        raise UserError(f"{path}: {row((label < 0) | (label >= n_classes))} has a label outside 0..{n_classes - 1}")


def _check_stats(root: Path, size: int, channels: int) -> None:
    path = root / "stats.npz"
    if not path.is_file():
        raise UserError(f"{root} has no stats.npz: is it a folder written by `alexnet prepare`?")
    shapes = _stats_shapes(path)
    want = {"mean_image": (size, size, channels), "mean_rgb": (channels,), "eigval": (channels,),
            "eigvec": (channels, channels)}
    for name, shape in want.items():
        if name not in shapes:
            raise UserError(f"{path}: no {name}")
        if shapes[name] != shape:
            raise UserError(f"{path}: {name} has shape {shapes[name]}, but size {size} and channels {channels} "
                            f"in {META_FILE} make it {shape}")
