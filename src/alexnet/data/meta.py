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

Small images: a side of :data:`SMALL_IMAGE_SIDE` px or less (MNIST, CIFAR, a
small generated set). They are stored raw at their own size (never upscaled),
trained at their own size with a random crop of the image reflection-padded
by size // 8, and read without loader processes by default. Larger images are
the paper's case: stored at 256 px, a 224 px crop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError

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
    """The meta.json of a prepared folder (a one-line error when it is not one)."""
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
