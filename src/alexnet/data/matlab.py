"""Read MATLAB 5 / 7 ``.mat`` files: just enough for the ILSVRC devkit's ``meta.mat``.

The devkit maps the ILSVRC2012_IDs of its validation ground truth to synset
ids (WNIDs) and names only through ``data/meta.mat``, a struct array
``synsets`` with fields ``ILSVRC2012_ID``, ``WNID``, ``words``, ``gloss``,
``num_children``, ... Reading it usually needs SciPy; this module reads the
MAT 5 layout (and its zlib-compressed form, MATLAB's ``-v7``) directly, so
preparing ImageNet needs no extra dependency.

Supported: numeric arrays (stored in any MAT integer or float type), char
arrays, structs, cells, compressed elements, either byte order. Not
supported: sparse and object arrays, and ``-v7.3`` files (HDF5), which raise
``ValueError``.

Bounded before anything is allocated (a crafted file raises
:class:`MatLimit`, a ``ValueError``, naming the limit): the file's size and
the total inflated size of its compressed elements (:data:`MAX_MAT_BYTES`,
64 MB: ILSVRC-2012's ``meta.mat`` is about 2 MB, inflated), the number of
struct and cell elements in the whole file (:data:`MAX_ELEMENTS`, 1 M: the
devkit's has 1,860 structs of 6 fields) and the nesting of structs and
cells (:data:`MAX_DEPTH`, 32: the devkit's is 2). Broken compressed data,
a truncated file, negative dimensions: ``ValueError`` too.

Values come back as: numeric -> ``np.ndarray`` of the array's MATLAB shape;
char -> ``str`` (one string per row for several rows: a list); struct ->
a list of dicts in MATLAB's (column-major) element order; cell -> a list.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

# Data element types (MAT-file format, table 1-1).
_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 14, 15, 16, 17, 18
# Array classes.
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5
_CLASS_DTYPE = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}

MAX_MAT_BYTES = 64 << 20  # the file, and all its compressed elements inflated together (ILSVRC's: 2 MB)
MAX_ELEMENTS = 1_000_000  # struct and cell elements (Python objects built) in one file
MAX_DEPTH = 32  # structs and cells within structs and cells
_CHUNK = 1 << 20


class MatLimit(ValueError):
    """A MAT file over one of the bounds above (or broken): refused before it is built."""


class _Budget:
    """What one file may still cost: inflated bytes and struct / cell elements."""

    def __init__(self):
        self.inflated = 0
        self.elements = 0

    def inflate(self, payload: bytes) -> bytes:
        d = zlib.decompressobj()
        out = bytearray()
        try:
            chunk = d.decompress(payload, _CHUNK)
            while True:
                self.inflated += len(chunk)
                if self.inflated > MAX_MAT_BYTES:
                    raise MatLimit(f"compressed data inflating to more than {MAX_MAT_BYTES >> 20} MB, the limit "
                                   "for a MAT file")
                out += chunk
                if d.eof or not d.unconsumed_tail:
                    break
                chunk = d.decompress(d.unconsumed_tail, _CHUNK)
        except zlib.error as e:
            raise MatLimit(f"broken compressed data ({e})") from None
        if not d.eof:
            raise MatLimit("truncated compressed data")
        return bytes(out)

    def build(self, count: int) -> None:
        self.elements += count
        if self.elements > MAX_ELEMENTS:
            raise MatLimit(f"more than {MAX_ELEMENTS:,} struct and cell elements, the limit for a MAT file")


class _Reader:
    def __init__(self, data: bytes, endian: str, budget: _Budget | None = None, depth: int = 0):
        self.data, self.e = memoryview(data), endian  # a view: an element's payload is never copied
        self.budget = budget if budget is not None else _Budget()
        self.depth = depth

    def elements(self, start: int, end: int):
        """Yield ``(type, payload)`` for each data element in ``data[start:end]``."""
        pos = start
        while pos + 8 <= end:
            first, second = np.frombuffer(self.data, self.e + "u4", 2, pos)
            if first >> 16:  # small data element: type and size in 4 bytes, data in the next 4
                kind, n = int(first & 0xFFFF), int(first >> 16)
                yield kind, self.data[pos + 4 : pos + 4 + n]
                pos += 8
                continue
            kind, n = int(first), int(second)
            payload = self.data[pos + 8 : pos + 8 + n]
            if len(payload) < n:
                raise ValueError("truncated MAT file")
            yield kind, payload
            pos += 8 + n
            if kind != MI_COMPRESSED:
                pos += -n % 8

    def value(self, kind: int, payload: bytes) -> tuple[str, Any]:
        if kind == MI_COMPRESSED:
            inner = _Reader(self.budget.inflate(payload), self.e, self.budget, self.depth)
            for found in inner.top():
                return found
            raise MatLimit("empty compressed element")
        if kind != MI_MATRIX:
            raise ValueError(f"unexpected MAT element type {kind}")
        return _Reader(payload, self.e, self.budget, self.depth).matrix()

    def inner(self, kind: int, payload: bytes):
        """The value of an element of a struct or cell: one level deeper."""
        if self.depth >= MAX_DEPTH:
            raise MatLimit(f"structs or cells nested more than {MAX_DEPTH} deep, the limit for a MAT file")
        return _Reader(self.data, self.e, self.budget, self.depth + 1).value(kind, payload)[1]

    def top(self):
        for kind, payload in self.elements(0, len(self.data)):
            yield self.value(kind, payload)

    def numbers(self, kind: int, payload: bytes) -> np.ndarray:
        if kind in _NUMERIC:
            return np.frombuffer(payload, self.e + _NUMERIC[kind])
        if kind == MI_UTF8:
            return np.frombuffer(payload, "u1")
        if kind == MI_UTF16:
            return np.frombuffer(payload, self.e + "u2")
        if kind == MI_UTF32:
            return np.frombuffer(payload, self.e + "u4")
        raise ValueError(f"unexpected MAT data type {kind}")

    def matrix(self) -> tuple[str, Any]:
        try:
            return self._matrix()
        except StopIteration:  # a sub-element missing
            raise MatLimit("truncated MAT array (a part of it is missing)") from None

    def _matrix(self) -> tuple[str, Any]:
        if not self.data:  # an empty matrix may be written with no sub-elements at all
            return "", np.zeros((0, 0))
        parts = self.elements(0, len(self.data))
        flags = self.numbers(*next(parts))
        cls = int(flags[0] & 0xFF)
        dims = tuple(int(d) for d in self.numbers(*next(parts)))
        name = bytes(next(parts)[1]).decode("latin-1")
        if any(d < 0 for d in dims):
            raise MatLimit(f"negative dimensions {dims}")
        count = math.prod(dims) if dims else 0  # Python integers: no overflow
        if cls in (MX_CELL, MX_STRUCT):
            self.budget.build(count)  # before a single element is built
        if cls in _CLASS_DTYPE:
            real = self.numbers(*next(parts)).astype(_CLASS_DTYPE[cls])
            return name, real.reshape(dims, order="F")
        if cls == MX_CHAR:
            kind, payload = next(parts, (MI_UTF8, b""))
            if kind == MI_UTF8:
                chars = bytes(payload).decode("utf-8")
            else:
                chars = "".join(map(chr, self.numbers(kind, payload)))
            if count == 0:
                return name, ""
            rows = dims[0]
            if rows <= 1:
                return name, chars
            grid = np.array(list(chars)).reshape(dims, order="F")
            return name, ["".join(r) for r in grid]
        if cls == MX_CELL:
            cells = [self.inner(k, p) for k, p in parts]
            if len(cells) != count:
                raise MatLimit(f"MAT cell of {count} elements holds {len(cells)}")
            return name, cells
        if cls == MX_STRUCT:
            width = int(self.numbers(*next(parts))[0])
            raw = bytes(next(parts)[1])
            fields = [raw[i : i + width].split(b"\0", 1)[0].decode("latin-1") for i in range(0, len(raw), width)]
            values = [self.inner(k, p) for k, p in parts]
            if len(values) != count * len(fields):
                raise ValueError("MAT struct holds the wrong number of field values")
            return name, [dict(zip(fields, values[i * len(fields) : (i + 1) * len(fields)])) for i in range(count)]
        raise ValueError(f"MAT array class {cls} (sparse or object) is not supported")


def loadmat(path: str | Path) -> dict[str, Any]:
    """The variables of a MAT 5 / 7 file as a dict (see the module docstring)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_MAT_BYTES:
        raise MatLimit(f"a file of {size:,} bytes, over the limit of {MAX_MAT_BYTES >> 20} MB for a MAT file")
    with open(path, "rb") as f:
        data = f.read(MAX_MAT_BYTES + 1)
    if len(data) > MAX_MAT_BYTES:
        raise MatLimit(f"over the limit of {MAX_MAT_BYTES >> 20} MB for a MAT file")
    if len(data) < 128:
        raise ValueError("not a MAT file (shorter than its 128-byte header)")
    if data[:8] == b"\x89HDF\r\n\x1a\n" or data[512:520] == b"\x89HDF\r\n\x1a\n":
        raise ValueError("MAT -v7.3 (HDF5) files are not supported")
    marker = data[126:128]
    if marker == b"IM":
        endian = "<"
    elif marker == b"MI":
        endian = ">"
    else:
        raise ValueError("not a MAT 5 file (no endian marker in the header)")
    reader = _Reader(data, endian)
    out = {}
    for kind, payload in reader.elements(128, len(data)):
        name, value = reader.value(kind, payload)
        out[name] = value
    return out
