"""Readers: every supported source as one :class:`Source`.

``open_source(path)`` detects the kind and returns the class list and, per
split, either a list of image files with labels (``folder``, ``ilsvrc2012``)
or whole uint8 arrays (``idx``, ``cifar10``, ``cifar100``):

=============  ==============================================================
kind           layout
=============  ==============================================================
``folder``     ``ROOT/train/<class>/**`` and ``ROOT/val/<class>/**``
               (optionally ``ROOT/test/<class>/**``); any file Pillow reads.
               Classes: the sorted folder names of ``train``. A class
               folder may itself be a link (to anywhere); links to folders
               *inside* a class folder are not followed (a link to ``.`` or
               ``..`` would count images twice or under another class) and
               are listed as skipped, as are links to nothing and anything
               that is not a regular file (a FIFO would block the reader).
``ilsvrc2012`` ILSVRC-2012 as distributed: ``train/<wnid>/*.JPEG`` and a flat
               ``val/`` of ``ILSVRC2012_val_%08d.JPEG`` labelled by either the
               devkit (``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat``)
               or Kaggle's ``LOC_val_solution.csv`` (+ ``LOC_synset_mapping.txt``
               for names), found anywhere under ROOT (3 levels deep). Kaggle's
               ``ILSVRC/Data/CLS-LOC/{train,val}`` is found too. The unlabelled
               test images are not read.
``idx``        MNIST-format files ``train-images-idx3-ubyte[.gz]``,
               ``train-labels-idx1-ubyte[.gz]``, ``t10k-...`` (MNIST,
               Fashion-MNIST); one channel. t10k becomes the ``val`` split.
``cifar10``    ``data_batch_1..5``, ``test_batch``, ``batches.meta`` (the
               python pickles), in ROOT or ``ROOT/cifar-10-batches-py``.
``cifar100``   ``train``, ``test``, ``meta`` (fine labels), in ROOT or
               ``ROOT/cifar-100-python``.
``webdataset`` tar shards made elsewhere in WebDataset layout: each sample an
               image member (``<key>.jpg``, ``.jpeg``, ``.png``, ``.webp``...)
               and ``<key>.cls`` (the label, ASCII digits), found as
               ``ROOT/<name with train|val|test>*.tar`` or ``ROOT/<split>/*.tar``;
               indexed with ``shards.scan_shard``, images read in place by
               offset. Classes ``0 .. max label``; ids and names from
               ``ROOT/classes.txt`` (``<id> [name]`` per line, label order) if
               present. Samples without an image or a label are listed as
               skipped.

               A sample is all the members of one key in a shard, wherever
               they lie (``v0.jpg v1.jpg v0.cls v1.cls`` is two samples). A
               key that is ambiguous is listed as skipped, with every member
               of it, and none of it is used (never one silently replacing
               another): one whose extension appears twice in the shard
               (``a.jpg a.cls ... a.jpg a.cls``, adjacent or not: the
               reference ``webdataset`` reader would make two samples of
               non-adjacent repeats, the last one read here would replace
               the first), or one with two images (``a.png a.jpg``: which
               is the sample's?). An image member over ``max_image_bytes``
               (:data:`~alexnet.data.images.MAX_IMAGE_BYTES`, 64 MB by
               default) is skipped from its tar header's size, without
               reading it; so is a ``.cls`` member over 64 bytes.
=============  ==============================================================

Classes are sorted synset / folder ids for file sources and the label order
of the files for array sources; ``class_names`` are human-readable names in
the same order where the source has them (devkit ``words``, Kaggle's synset
mapping, CIFAR's label names, Fashion-MNIST's names), else the ids.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import pickle
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .images import MAX_IMAGE_BYTES
from .shards import Member, scan_shard

SPLITS = ("train", "val", "test")
WNID = re.compile(r"^n\d{8}$")
MAX_CLASSES = 100_000  # the most classes a source may have: the model's bound (alexnet.models.options.MAX_CLASSES)
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class FileList:
    """The (path, label) pairs of a split's image files, compact: the paths' bytes in one buffer with
    their offsets, and the labels in an array.

    Not a Python tuple and string per file: 1.28M of those took ~200 bytes each in the main process
    and again in every worker that touched them (a reference count or a full garbage collection
    copies the page), so ``prepare``'s memory grew with the file count. Reads as a sequence of
    ``(str, int)``; :meth:`append` and :meth:`extend` while listing (each ``extend`` packs its pairs).
    """

    _PACK = 65536

    def __init__(self, pairs=()):
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (bytes, lengths, labels)
        self._pending: list[tuple[bytes, int]] = []
        self._data = np.zeros(0, np.uint8)
        self._ends = np.zeros(0, np.int64)  # end offset of path i in _data
        self._labels = np.zeros(0, np.int64)
        self.extend(pairs)

    def append(self, pair: tuple[str, int]) -> None:
        self._pending.append((os.fsencode(pair[0]), int(pair[1])))
        if len(self._pending) >= self._PACK:
            self.pack()

    def extend(self, pairs) -> None:
        for pair in pairs:
            self.append(pair)
        self.pack()

    def pack(self) -> None:
        """Pack the pairs appended since the last pack into arrays (extend does this itself)."""
        if self._pending:
            names, labels = zip(*self._pending)
            self._pending = []
            self._chunks.append((np.frombuffer(b"".join(names), np.uint8),
                                 np.fromiter((len(b) for b in names), np.int64, len(names)),
                                 np.asarray(labels, np.int64)))

    def _join(self) -> None:
        """One buffer of everything packed so far (once: later reads find no chunks)."""
        self.pack()
        if self._chunks:
            base = int(self._ends[-1]) if len(self._ends) else 0
            lengths = np.concatenate([c[1] for c in self._chunks])
            self._data = np.concatenate([self._data] + [c[0] for c in self._chunks])
            self._ends = np.concatenate([self._ends, base + np.cumsum(lengths)])
            self._labels = np.concatenate([self._labels] + [c[2] for c in self._chunks])
            self._chunks = []

    def __len__(self) -> int:
        return len(self._ends) + sum(len(c[1]) for c in self._chunks) + len(self._pending)

    def __getitem__(self, i: int) -> tuple[str, int]:
        self._join()
        i = range(len(self._ends))[i]  # negative indices, and IndexError past the end
        start = int(self._ends[i - 1]) if i else 0
        return os.fsdecode(self._data[start:int(self._ends[i])].tobytes()), int(self._labels[i])

    def __iter__(self):
        self._join()
        for i in range(len(self._ends)):
            yield self[i]

    def labels(self) -> np.ndarray:
        """All the labels, as an int64 array."""
        self._join()
        return self._labels.copy()


@dataclass
class Split:
    """One split: ``files`` (path or tar :class:`Member`, label) for encoded images, or ``images`` N x H x W x C uint8."""

    files: FileList | list[tuple[Member, int]] | None = None
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) known before decoding

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.images)


@dataclass
class Source:
    kind: str
    root: Path
    classes: list[str]
    class_names: list[str]
    splits: dict[str, Split]
    channels: int = 3

    @property
    def is_array(self) -> bool:
        return self.kind in ("idx", "cifar10", "cifar100")


# ------------------------------------------------------------------ bounds
MAX_TEXT_BYTES = 64 << 20  # a class list, synset mapping or ground-truth text file


def _check_classes(n: int, where: str) -> None:
    """Refuse more than :data:`MAX_CLASSES` classes, before a list of them is built."""
    if n > MAX_CLASSES:
        raise UserError(f"{where}: {n:,} classes, over the limit of {MAX_CLASSES:,}")


def _read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """A small text file, refused (one line) when it is over ``limit`` bytes, before it is read."""
    size = path.stat().st_size
    if size > limit:
        raise UserError(f"{path}: a file of {size:,} bytes, over the limit of {limit:,} for a list of classes or labels")
    with open(path, encoding="utf-8") as f:
        text = f.read(limit + 1)
    if len(text) > limit:
        raise UserError(f"{path}: over the limit of {limit:,} bytes for a list of classes or labels")
    return text


# ------------------------------------------------------------------ detect
def open_source(path: str | os.PathLike, max_image_bytes: int = MAX_IMAGE_BYTES) -> Source:
    """Detect the kind of ``path`` and read its listing (arrays for IDX / CIFAR).

    ``max_image_bytes``: tar members of WebDataset shards larger than this are listed as skipped."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"source not found: {root}")
    if not root.is_dir():
        raise UserError(f"source must be a folder, not a file: {root}")
    names = {p.name for p in root.iterdir() if not p.name.startswith(".")}
    if not names:
        raise UserError(f"source folder is empty: {root}")
    for sub in ("", "cifar-10-batches-py", "cifar-100-python"):
        d = root / sub if sub else root
        if (d / "data_batch_1").is_file() and (d / "test_batch").is_file():
            return read_cifar10(d)
        if (d / "train").is_file() and (d / "meta").is_file():
            return read_cifar100(d)
    if any(_IDX_NAME.match(n) for n in names):
        return read_idx_folder(root)
    shards = webdataset_shards(root)
    for base in (root, root / "ILSVRC" / "Data" / "CLS-LOC"):
        if (base / "train").is_dir() and (not shards or _class_dirs(base / "train")):
            return read_folder(root, base)
    if shards:
        return read_webdataset(root, shards, max_image_bytes)
    raise UserError(
        f"{root} is not a known source: expected train/<class>/ folders, ILSVRC-2012, "
        "MNIST-format IDX files, CIFAR python batches or WebDataset .tar shards")


# ------------------------------------------------------------------ folders
def _class_dirs(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_under(d: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """``(files, skipped)``: every non-hidden regular file under ``d``, recursively, in sorted order,
    and ``(path, reason)`` for the entries that are not read (links to folders, links to nothing, FIFOs...).

    ``d`` itself may be a link; links to folders below it are not followed, so no loop and no
    folder counted twice or under another class is possible.
    """
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(d, onerror=lambda e: skipped.append((e.filename, f"cannot list: {e.strerror}"))):
        links = [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n not in links)
        skipped.extend((os.path.join(dirpath, n), "link to a folder inside a class folder: not followed")
                       for n in sorted(links) if not n.startswith("."))
        for n in sorted(filenames):
            if n.startswith("."):
                continue
            path = os.path.join(dirpath, n)
            try:
                mode = os.stat(path).st_mode
            except OSError as e:  # a dangling link, a link loop
                skipped.append((path, f"cannot read: {e.strerror}"))
                continue
            if stat.S_ISREG(mode):
                files.append(path)
            else:
                skipped.append((path, "not a regular file (a FIFO, socket or device)"))
    return files, skipped


def _labelled_files(d: Path, index: dict[str, int], split: str) -> Split:
    found = Split(files=FileList())
    seen: dict[str, str] = {}
    for name in _class_dirs(d):
        if name not in index:
            raise UserError(f"{d}/{name}: class folder not in train/ (a {split} class must also be a training class)")
        real = os.path.realpath(d / name)
        if real in seen:
            raise UserError(f"{d}/{name} and {d}/{seen[real]} are the same folder ({real}): "
                            "its images would be counted under two classes")
        seen[real] = name
        files, skipped = _files_under(d / name)
        found.files.extend((f, index[name]) for f in files)
        found.skipped.extend(skipped)
    return found


def read_folder(root: Path, base: Path) -> Source:
    """``base/train/<class>/``, ``base/val/...``; a flat ``val/`` means ILSVRC-2012 as distributed."""
    classes = _class_dirs(base / "train")
    if not classes:
        raise UserError(f"{base / 'train'} has no class folders (expected train/<class>/<images>)")
    _check_classes(len(classes), f"{base / 'train'}")
    index = {c: i for i, c in enumerate(classes)}
    names = _synset_names(root, classes)
    splits = {"train": _labelled_files(base / "train", index, "train")}
    if not splits["train"].files:
        raise UserError(f"{base / 'train'} holds no files")
    kind = "folder"
    for split in ("val", "test"):
        d = base / split
        if not d.is_dir():
            continue
        if _class_dirs(d):
            splits[split] = _labelled_files(d, index, split)
        elif split == "val" and any(f.is_file() for f in d.iterdir()):
            splits["val"], ilsvrc_names = _ilsvrc_val(root, d, index)
            names = ilsvrc_names or names
            kind = "ilsvrc2012"
        # a flat test/ (ILSVRC's unlabelled test images) has no labels: not read
    if names is None:
        names = list(classes)
    return Source(kind, root, classes, names, splits)


def _find(root: Path, filename: str, depth: int = 3) -> Path | None:
    """The first ``filename`` under ``root`` (breadth first, ``depth`` levels)."""
    level = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if (d / filename).is_file():
                return d / filename
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and p.name not in ("train", "val", "test")))
            except OSError:
                pass
        level = nxt
    return None


def _synset_names(root: Path, classes: list[str]) -> list[str] | None:
    """Names from ``LOC_synset_mapping.txt`` / ``synset_words.txt`` (``wnid name, name``), when present."""
    if not all(WNID.match(c) for c in classes):
        return None
    for fname in ("LOC_synset_mapping.txt", "synset_words.txt"):
        path = _find(root, fname)
        if path is not None:
            mapping = {}
            for line in _read_text(path).splitlines():
                wnid, _, words = line.strip().partition(" ")
                if wnid:
                    mapping[wnid] = words.strip() or wnid
            return [mapping.get(c, c) for c in classes]
    return None


def read_devkit_meta(path: Path) -> tuple[dict[int, str], dict[str, str]]:
    """``(ILSVRC2012_ID -> wnid, wnid -> words)`` for the leaf synsets of a devkit ``meta.mat``."""
    from .matlab import loadmat

    try:
        synsets = loadmat(path)["synsets"]
        ids, words = {}, {}
        for s in synsets:
            if int(np.asarray(s["num_children"]).reshape(-1)[0]) != 0:
                continue
            wnid = str(s["WNID"])
            ids[int(np.asarray(s["ILSVRC2012_ID"]).reshape(-1)[0])] = wnid
            words[wnid] = str(s["words"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise UserError(f"{path}: not a readable ILSVRC devkit meta.mat ({e})") from None
    return ids, words


def _ilsvrc_val(root: Path, val: Path, index: dict[str, int]) -> tuple[Split, list[str] | None]:
    """The flat validation folder, labelled by the devkit or by ``LOC_val_solution.csv``."""
    files = sorted(p for p in val.iterdir() if p.is_file() and not p.name.startswith("."))
    classes = sorted(index, key=index.get)
    gt_txt = _find(root, "ILSVRC2012_validation_ground_truth.txt")
    loc_csv = _find(root, "LOC_val_solution.csv")
    names = None
    if gt_txt is not None:
        meta = gt_txt.parent / "meta.mat"
        if not meta.is_file():
            meta = _find(root, "meta.mat")
        if meta is None:
            raise UserError(f"{gt_txt} needs the devkit's meta.mat beside it (to map ILSVRC2012_IDs to synsets)")
        id_to_wnid, words = read_devkit_meta(meta)
        try:
            ids = [int(line) for line in _read_text(gt_txt).split()]
        except ValueError:
            raise UserError(f"{gt_txt}: expected one ILSVRC2012_ID per line") from None
        # line i labels ILSVRC2012_val_{i:08d}
        truth = {f"ILSVRC2012_val_{i + 1:08d}": id_to_wnid.get(v) for i, v in enumerate(ids)}
        names = [words.get(c, c) for c in classes]
    elif loc_csv is not None:
        truth = {}
        with open(loc_csv, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if not header or header[0].strip() != "ImageId":
                raise UserError(f"{loc_csv}: expected the header ImageId,PredictionString")
            for row in rows:
                if len(row) >= 2 and row[1].split():
                    truth[row[0].strip()] = row[1].split()[0]
    else:
        raise UserError(
            f"{val} is a flat folder of {len(files)} images but no ground truth was found under {root}: "
            "add the devkit's ILSVRC2012_validation_ground_truth.txt and meta.mat, or LOC_val_solution.csv")
    split = Split(files=FileList())
    for p in files:
        wnid = truth.get(p.name.split(".")[0])
        if wnid is None:
            split.skipped.append((str(p), "no ground-truth label for this file"))
        elif wnid not in index:
            split.skipped.append((str(p), f"label {wnid} is not a training class"))
        else:
            split.files.append((str(p), index[wnid]))
    split.files.pack()
    return split, names


# ------------------------------------------------------------------ IDX
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[.-]idx([13])-ubyte(\.gz)?$")
_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


MAX_IDX_BYTES = 1 << 32  # the data of one IDX file, held in memory whole: 4 GiB (MNIST's is 47 MB)
MAX_IDX_DIMS = 4  # images are N x H x W (x C), labels N
_CHUNK = 1 << 20


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzipped or not: detected from its first bytes) as a numpy array.

    Bounded before it allocates: the header's dimensions (at most :data:`MAX_IDX_DIMS`) say the data's size,
    which must be at most :data:`MAX_IDX_BYTES` and is exactly what the file holds (or inflates to: a
    gzipped file is inflated in chunks and refused as soon as it holds more than its header says)."""
    path = Path(path)
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        try:
            return _read_idx_stream(path, f, None if gz else os.fstat(raw.fileno()).st_size)
        except (OSError, EOFError, zlib.error) as e:
            if not gz:
                raise
            raise UserError(f"{path}: broken gzip data ({e})") from None


def _read_exactly(f, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_idx_stream(path: Path, f, file_size: int | None) -> np.ndarray:
    head = _read_exactly(f, 4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    ndim = head[3]
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise UserError(f"{path}: an IDX file of {ndim} dimensions (at most {MAX_IDX_DIMS} are read)")
    dims_bytes = _read_exactly(f, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise UserError(f"{path}: truncated IDX header")
    dims = [int(d) for d in np.frombuffer(dims_bytes, ">u4", ndim)]
    dtype = np.dtype(_IDX_TYPES[head[2]])
    start = 4 + 4 * ndim
    nbytes = math.prod(dims) * dtype.itemsize  # Python integers: no overflow
    if nbytes > MAX_IDX_BYTES:
        raise UserError(f"{path}: IDX dimensions {tuple(dims)} make {nbytes:,} bytes of data, over the limit of "
                        f"{MAX_IDX_BYTES:,} bytes for one file")
    if file_size is not None and file_size - start < nbytes:
        raise UserError(f"{path}: truncated IDX file ({file_size - start} bytes of data for shape {tuple(dims)})")
    data = bytearray(nbytes)
    view, got = memoryview(data), 0
    while got < nbytes:
        n = f.readinto(view[got:got + _CHUNK])
        if not n:
            break
        got += n
    if got < nbytes:
        raise UserError(f"{path}: truncated IDX file ({got} bytes of data for shape {tuple(dims)})")
    if f.read(1):
        raise UserError(f"{path}: more data than its IDX header says (shape {tuple(dims)}, {nbytes:,} bytes)")
    return np.frombuffer(data, dtype, math.prod(dims)).reshape(dims)


def read_idx_folder(root: Path) -> Source:
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(root.iterdir()):
        m = _IDX_NAME.match(p.name)
        if m:
            found.setdefault((m.group(1), m.group(2)), p)
    splits = {}
    for prefix, split in (("train", "train"), ("t10k", "val")):
        if (prefix, "images") not in found:
            continue
        if (prefix, "labels") not in found:
            raise UserError(f"{found[prefix, 'images']} has no matching {prefix}-labels-idx1-ubyte file")
        images = read_idx(found[prefix, "images"])
        labels = read_idx(found[prefix, "labels"]).astype(np.int64)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.dtype != np.uint8:
            raise UserError(f"{found[prefix, 'images']}: expected N x H x W uint8 images, got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise UserError(f"{found[prefix, 'labels']}: {len(labels)} labels for {len(images)} images")
        splits[split] = Split(images=images, labels=labels)
    if "train" not in splits:
        raise UserError(f"{root}: no train-images-idx3-ubyte[.gz] file")
    n_classes = int(max(int(s.labels.max()) for s in splits.values())) + 1
    _check_classes(n_classes, f"{root}: IDX labels up to {n_classes - 1}")
    classes = [str(i) for i in range(n_classes)]
    names = FASHION_NAMES if "fashion" in str(root.resolve()).lower() and n_classes == 10 else classes
    return Source("idx", root, classes, list(names), splits, channels=int(splits["train"].images.shape[-1]))


# ------------------------------------------------------------------ CIFAR
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a CIFAR python batch ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a CIFAR python batch (a {type(obj).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_split(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise UserError(f"{path}: a CIFAR batch needs 'data' and '{label_key}'")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"{path}: expected N x 3072 pixels and N labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10(root: Path) -> Source:
    parts = sorted((p for p in root.glob("data_batch_*") if p.name.rsplit("_", 1)[1].isdigit()),
                   key=lambda p: int(p.name.rsplit("_", 1)[1]))
    train = [_cifar_split(p, "labels") for p in parts]
    val = _cifar_split(root / "test_batch", "labels")
    names = [str(i) for i in range(10)]
    if (root / "batches.meta").is_file():
        names = _names(read_pickle(root / "batches.meta").get("label_names", names))
        _check_classes(len(names), f"{root / 'batches.meta'}")
    splits = {
        "train": Split(images=np.concatenate([t[0] for t in train]), labels=np.concatenate([t[1] for t in train])),
        "val": Split(images=val[0], labels=val[1]),
    }
    return Source("cifar10", root, list(names), list(names), splits)


def read_cifar100(root: Path) -> Source:
    train = _cifar_split(root / "train", "fine_labels")
    splits = {"train": Split(images=train[0], labels=train[1])}
    if (root / "test").is_file():
        val = _cifar_split(root / "test", "fine_labels")
        splits["val"] = Split(images=val[0], labels=val[1])
    meta = read_pickle(root / "meta")
    names = _names(meta.get("fine_label_names", [str(i) for i in range(100)]))
    _check_classes(len(names), f"{root / 'meta'}")
    return Source("cifar100", root, list(names), list(names), splits)


# ------------------------------------------------------------------ WebDataset shards
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff", "gif")  # first found is the image
_SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def webdataset_shards(root: Path) -> dict[str, list[Path]]:
    """``split -> shards`` of the ``.tar`` files in ``root`` (split named in the file name; ``""``
    when it names none) and in ``root/<split>/``; empty when there are none."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.tar")):
        words = [_SPLIT_WORDS[w] for w in re.split(r"[^a-z0-9]+", path.stem.lower()) if w in _SPLIT_WORDS]
        found.setdefault(words[0] if words else "", []).append(path)
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in _SPLIT_WORDS):
        found.setdefault(_SPLIT_WORDS[d.name.lower()], []).extend(sorted(d.glob("*.tar")))
    return {k: v for k, v in found.items() if v}


MAX_LABEL_BYTES = 64  # a .cls member is a class number: anything longer is not read


def _shard_samples(path: Path, max_image_bytes: int = MAX_IMAGE_BYTES) -> Split:
    """The samples of one tar shard: (member, label), and the keys that are not samples, as skipped
    (see the module docstring: a key is one sample wherever its members lie; an ambiguous key is skipped)."""
    try:
        members = scan_shard(path)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable tar file ({e})") from None
    samples: dict[str, dict[str, tuple[str, int, int]]] = {}
    repeated: dict[str, str] = {}  # key -> its first extension seen twice
    counts: dict[tuple[str, str], int] = {}
    for key, ext, offset, size in members:
        parts = samples.setdefault(key, {})
        if ext.lower() in parts:
            repeated.setdefault(key, ext)
        parts[ext.lower()] = (ext, offset, size)
        counts[key, ext.lower()] = counts.get((key, ext.lower()), 0) + 1
    split = Split(files=[])
    with open(path, "rb") as f:
        for key, parts in samples.items():
            where = f"{path}:{key}"
            if key in repeated:
                count = counts[key, repeated[key].lower()]
                split.skipped.append((where, f"member {key}.{repeated[key]} appears {count} times in the shard: "
                                             "which sample is meant? (none of this key is used)"))
                continue
            images = [e for e in IMAGE_EXTENSIONS if e in parts]
            if not images:
                split.skipped.append((where, f"no image member (.{', .'.join(IMAGE_EXTENSIONS[:4])}...)"))
                continue
            if len(images) > 1:
                split.skipped.append((where, f"{len(images)} image members (.{', .'.join(images)}) under one key: "
                                             "which is the sample's?"))
                continue
            if "cls" not in parts:
                split.skipped.append((where, "no .cls member (the label)"))
                continue
            _, offset, size = parts["cls"]
            if size > MAX_LABEL_BYTES:
                split.skipped.append((where, f".cls member of {size} bytes: not a class number (not read)"))
                continue
            f.seek(offset)
            text = f.read(size).strip()
            if not text.isdigit() or len(text) > 9:
                split.skipped.append((where, f"label {text[:20].decode('ascii', 'replace')!r} is not a class number"))
                continue
            if int(text) >= MAX_CLASSES:  # a class count from one number: refused before a list of it is built
                raise UserError(f"{where}.cls: class {int(text):,} in a WebDataset label, over the limit of "
                                f"{MAX_CLASSES:,} classes")
            ext, offset, size = parts[images[0]]
            if size > max_image_bytes:
                split.skipped.append((where, f"image member {key}.{ext} of {size} bytes, over the limit of "
                                             f"{max_image_bytes} bytes for one image (not read)"))
                continue
            split.files.append((Member(str(path), f"{key}.{ext}", offset, size), int(text)))
    return split


def _class_file(root: Path, n: int) -> tuple[list[str], list[str]] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    lines = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    _check_classes(len(lines), f"{path}")
    if len(lines) < n:
        raise UserError(f"{path} names {len(lines)} classes, but the shards have labels up to {n - 1}")
    ids = [line.partition(" ")[0] for line in lines]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: the class ids (first word of each line) are not all different")
    return ids, [line.partition(" ")[2].strip() or line.partition(" ")[0] for line in lines]


def read_webdataset(root: Path, shards: dict[str, list[Path]], max_image_bytes: int = MAX_IMAGE_BYTES) -> Source:
    """A folder of WebDataset shards (see the module docstring) as a :class:`Source` of tar members."""
    if "" in shards:
        raise UserError(f"{shards[''][0]}: no split in its name: name shards like train-000000.tar and "
                        "val-000000.tar, or put them in train/ and val/")
    if "train" not in shards:
        raise UserError(f"{root}: no training shards (names with 'train', or train/*.tar) among "
                        f"{sum(len(v) for v in shards.values())} .tar files")
    splits = {}
    for name in SPLITS:
        if name in shards:
            parts = [_shard_samples(p, max_image_bytes) for p in shards[name]]
            splits[name] = Split(files=[x for part in parts for x in part.files],
                                 skipped=[x for part in parts for x in part.skipped])
    labels = [label for _, label in splits["train"].files]
    if not labels:
        raise UserError(f"{root}: no training samples with an image and a .cls label in {len(shards['train'])} shards")
    n = max(labels) + 1
    _check_classes(n, f"{root}: WebDataset labels up to {n - 1}")
    named = _class_file(root, n)
    classes, names = named if named else ([str(i) for i in range(n)], [str(i) for i in range(n)])
    return Source("webdataset", root, classes, names, splits)
