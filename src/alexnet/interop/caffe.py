"""Caffe's ``bvlc_alexnet`` weights -> an ``alexnet-caffe`` checkpoint, without Caffe installed.

::

    alexnet convert caffe deploy.prototxt bvlc_alexnet.caffemodel caffe.ckpt \\
        [--synsets synset_words.txt] [--mean imagenet_mean.binaryproto | --mean 104,117,123]

Two readers, no generated code and no ``protoc``:

* the **caffemodel** (a binary ``NetParameter``) is read by a protobuf
  wire-format reader for the few fields needed. Field numbers, from BVLC
  ``src/caffe/proto/caffe.proto``: ``NetParameter.layer = 100``
  (``LayerParameter``: ``name = 1``, ``type = 2`` (a string), ``blobs = 7``)
  and the older ``NetParameter.layers = 2`` (``V1LayerParameter``:
  ``name = 4``, ``type = 5`` (an enum), ``blobs = 6``; the oldest files wrap a
  ``V0LayerParameter`` in its field 1: ``name = 1``, ``type = 2``,
  ``blobs = 50``); ``BlobProto``: ``shape = 7`` (``BlobShape.dim = 1``, packed
  int64), ``data = 5`` (packed float), ``double_data = 8`` (packed double)
  and the older 4-D ``num, channels, height, width = 1..4``. A
  ``.binaryproto`` mean file is one ``BlobProto``. Unpacked values (one tag
  per float, legal wire format) are read as a strided numpy view, as fast as
  packed ones; every wire type, length and dimension is checked before it is
  used, so a damaged file is one line naming the layer and blob.
* the **prototxt** (protobuf text format) by a small parser that reads values
  as protobuf does: ``0.0001f``, octal and hex integers, C-escaped strings
  decoded as UTF-8, booleans ``true/True/t/1``, enums by name or number
  (``pool: 0`` is MAX); messages nest at most 100 deep. It gives the
  architecture: ``convolution_param`` (``num_output``, ``kernel_size``,
  ``stride``, ``pad``, ``group``), ``lrn_param`` (``local_size``, ``alpha``,
  ``beta``, ``k``), ``pooling_param`` and ``inner_product_param``.

The prototxt must describe ``bvlc_alexnet`` (conv1 relu1 norm1 pool1 conv2 ...
fc8; layer types matched in this order, layer names free): the shapes and
settings of ``alexnet-caffe`` (227 input, no conv1 padding, ``group: 2`` on
conv2/4/5, LRN ``local_size 5, alpha 1e-4, beta 0.75, k 1`` across all
channels, max-pool 3/2), any ``num_output`` for the last layer (the class
count). Anything else (CaffeNet's pool-before-norm order, another LRN, a
different kernel) is refused in one line naming the layer, rather than
converted into a network that computes something else. Weights are taken
from the caffemodel layer of the same name.

What Caffe's net expects is folded in so that our pipeline feeds it:

* **BGR**: Caffe's net takes channels in OpenCV's B, G, R order; conv1's
  weights are reversed along their input-channel axis, so the checkpoint
  takes R, G, B like every other one here.
* **the mean**: Caffe's net takes raw 0..255 pixels minus the mean, which is
  this package's input at ``scale`` 255. The mean goes into the checkpoint's
  ``data_stats`` (pixel units, RGB, ``H x W x C``) and ``eval_transform``:
  a ``.binaryproto`` mean image (``mean: "image"``, cut where the crop is
  cut, as Caffe's data layer does), or three per-channel values given in
  Caffe's B, G, R order (``mean: "rgb"``). Without ``--mean``, a
  ``transform_param { mean_value ... }`` in the prototxt is used, else
  ILSVRC-2012's per-channel mean (B, G, R = 104, 117, 123, Caffe's examples').
* **class names** from a synset file (Caffe's ``synset_words.txt`` format,
  ``n01440764 tench, Tinca tinca``, one line per output, in output order); for
  1000 outputs without one, the ILSVRC-2012 synsets in sorted order (Caffe's
  ``synset_words.txt`` order) with torchvision's names.

Fidelity note: Caffe's ``classify.py`` warps an image to 256 x 256 (aspect
not kept); this checkpoint evaluates as every other here, shorter side to 256,
centre square, centre 227 crop. Caffe's max pooling rounds the output size up
and PyTorch's down; at 227 input every pooling window fits, so both agree.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import models
from ..checkpoint import make_checkpoint, save_checkpoint
from ..errors import UserError, one_line
from ..fileio import require_file
from ..models.options import MAX_CLASSES

MODEL_NAME = "alexnet-caffe"
INPUT_SIZE = 227
ILSVRC_MEAN_BGR = (104.0, 117.0, 123.0)  # the per-channel mean Caffe's ImageNet examples subtract
# V1LayerParameter.LayerType values (caffe.proto) of the layers that can appear in an AlexNet
V1_TYPES = {4: "Convolution", 5: "Data", 6: "Dropout", 12: "ImageData", 14: "InnerProduct", 15: "LRN",
            17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 1: "Accuracy", 22: "Split", 29: "MemoryData"}
V1_NAMES = {"CONVOLUTION": "Convolution", "DATA": "Data", "DROPOUT": "Dropout", "IMAGE_DATA": "ImageData",
            "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "POOLING": "Pooling", "RELU": "ReLU", "SOFTMAX": "Softmax",
            "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy", "SPLIT": "Split", "MEMORY_DATA": "MemoryData"}
# layers that compute nothing at test time, or only feed or score the net
IGNORED = {"Input", "Data", "ImageData", "MemoryData", "DummyData", "HDF5Data", "Dropout", "Softmax",
           "SoftmaxWithLoss", "Accuracy", "Split", "Silence"}
# bvlc_alexnet's layers in order: (type, our layer); ReLUs and dropouts are checked around them
ALEXNET_ORDER = (
    ("Convolution", "conv1"), ("ReLU", None), ("LRN", "norm1"), ("Pooling", "pool1"),
    ("Convolution", "conv2"), ("ReLU", None), ("LRN", "norm2"), ("Pooling", "pool2"),
    ("Convolution", "conv3"), ("ReLU", None),
    ("Convolution", "conv4"), ("ReLU", None),
    ("Convolution", "conv5"), ("ReLU", None), ("Pooling", "pool5"),
    ("InnerProduct", "fc6"), ("ReLU", None),
    ("InnerProduct", "fc7"), ("ReLU", None),
    ("InnerProduct", "fc8"),
)


class ProtoError(ValueError):
    """Bytes that are not the protobuf message expected."""


# ====================================================================== wire format
MAX_DIM = 2**31 - 1  # Caffe's blob dimensions and counts are ints (Blob::Reshape checks them against INT_MAX)
# What a damaged file can raise from the decoding itself (a length that is no whole number of values, a
# value of the wrong kind, nesting past Python's stack): reported as the file's fault in one line. The
# readers below check what they can first, so this is the net under them, not the way they report.
DECODE_ERRORS = (struct.error, ValueError, IndexError, UnicodeDecodeError, OverflowError, RecursionError,
                 MemoryError)


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise ProtoError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos  # protobuf keeps the low 64 bits
        shift += 7
        if shift > 63:
            raise ProtoError(f"varint longer than 10 bytes at byte {pos}")


def _signed(value: int, bits: int = 64) -> int:
    """A varint as protobuf's int64 / int32 (negative numbers are sign-extended to 64 bits)."""
    value = value - 2**64 if value >= 2**63 else value
    if bits == 32 and not -2**31 <= value < 2**31:
        raise ProtoError(f"int32 field holds {value}")
    return value


def _field(buf: memoryview, pos: int, end: int) -> tuple[int, int, object, int]:
    """``(field number, wire type, value, position after it)`` of the field at ``pos``."""
    key, pos = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise ProtoError(f"field number 0 at byte {pos}")
    if wire == 0:
        value, pos = _varint(buf, pos, end)
    elif wire == 1:
        if pos + 8 > end:
            raise ProtoError(f"truncated fixed64 at byte {pos}")
        value, pos = bytes(buf[pos:pos + 8]), pos + 8
    elif wire == 2:
        n, pos = _varint(buf, pos, end)
        if n > end - pos:
            raise ProtoError(f"field {number} of {n} bytes runs past the end at byte {pos}")
        value, pos = (pos, pos + n), pos + n
    elif wire == 5:
        if pos + 4 > end:
            raise ProtoError(f"truncated fixed32 at byte {pos}")
        value, pos = bytes(buf[pos:pos + 4]), pos + 4
    else:  # 3, 4 (groups: never in caffe.proto), 6, 7 (invalid)
        raise ProtoError(f"wire type {wire} at byte {pos}")
    return number, wire, value, pos


def fields(buf: memoryview, start: int = 0, end: int | None = None):
    """``(field number, wire type, value)`` of each field of the message in ``buf[start:end]``.

    ``value``: an int (varint), 4 or 8 raw bytes (fixed32 / fixed64), or the
    ``(start, end)`` span of a length-delimited field (a string, bytes, a
    packed array or a sub-message: which one the schema says).
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        number, wire, value, pos = _field(buf, pos, end)
        yield number, wire, value


def _varints(buf: memoryview, span: tuple[int, int]) -> list[int]:
    out, pos = [], span[0]
    while pos < span[1]:
        v, pos = _varint(buf, pos, span[1])
        out.append(v)
    return out


def _string(buf: memoryview, value) -> str:
    if not isinstance(value, tuple):
        raise ProtoError("a string field that is not length-delimited")
    try:
        return bytes(buf[value[0]:value[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError("a name that is not UTF-8") from None


@dataclass
class Blob:
    shape: tuple[int, ...]
    data: np.ndarray  # float32, flat

    @property
    def trimmed(self) -> tuple[int, ...]:
        """The shape without leading 1s (old files store a bias as 1 x 1 x 1 x N, an fc weight as 1 x 1 x N x K)."""
        s = list(self.shape)
        while len(s) > 1 and s[0] == 1:
            s.pop(0)
        return tuple(s)


def _run(buf: memoryview, pos: int, end: int, tag: int, width: int) -> tuple[np.ndarray, int]:
    """The values of the longest run, from ``pos``, of one-byte ``tag`` + ``width`` bytes records: an unpacked
    repeated fixed32 / fixed64 field, read with numpy (strided over the tags, then the values in one copy).

    The run is probed in chunks that double, so a run broken every few values costs no more than it reads.
    """
    step = width + 1
    whole = (end - pos) // step
    records = np.frombuffer(buf, np.uint8, count=whole * step, offset=pos).reshape(whole, step)
    n, chunk = 0, 64
    while n < whole:
        tags = records[n:n + chunk, 0]
        off = np.flatnonzero(tags != tag)
        if off.size:
            n += int(off[0])
            break
        n += tags.size
        chunk *= 2
    values = np.ascontiguousarray(records[:n, 1:]).view("<f4" if width == 4 else "<f8").reshape(n)
    return values, pos + n * step


_FLOAT_TAG, _DOUBLE_TAG = 5 << 3 | 5, 8 << 3 | 1  # BlobProto.data unpacked (fixed32), double_data unpacked (fixed64)


def read_blob(buf: memoryview, start: int = 0, end: int | None = None) -> Blob:
    """One ``BlobProto``: its shape (``shape`` or the old num/channels/height/width) and its values as float32.

    As Caffe's ``Blob::FromProto``: the 4-D fields win when any is present, ``double_data`` when it holds values.
    """
    end = len(buf) if end is None else end
    dims: list[int] | None = None
    legacy: list[int | None] = [None, None, None, None]
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    pos = start
    while pos < end:
        if buf[pos] in (_FLOAT_TAG, _DOUBLE_TAG) and end - pos >= (5 if buf[pos] == _FLOAT_TAG else 9):
            values, pos = _run(buf, pos, end, buf[pos], 4 if buf[pos] == _FLOAT_TAG else 8)
            (floats if values.dtype.itemsize == 4 else doubles).append(values)
            continue
        number, wire, value, pos = _field(buf, pos, end)
        if number == 7:
            if wire != 2:
                raise ProtoError(f"blob shape has wire type {wire}, not a message")
            dims = dims or []  # a message given twice is merged: its repeated dims add up
            for n, w, v in fields(buf, *value):
                if n != 1:
                    continue
                if w == 2:
                    dims.extend(_signed(d) for d in _varints(buf, v))
                elif w == 0:
                    dims.append(_signed(v))
                else:
                    raise ProtoError(f"blob shape dim has wire type {w}, not a varint")
        elif number in (1, 2, 3, 4):
            if wire != 0:
                raise ProtoError(f"blob {('num', 'channels', 'height', 'width')[number - 1]} has wire type {wire}")
            legacy[number - 1] = _signed(value, 32)
        elif number in (5, 8):
            what, width = ("data", 4) if number == 5 else ("double_data", 8)
            if wire == 2:
                if (value[1] - value[0]) % width:
                    raise ProtoError(f"blob {what} of {value[1] - value[0]} bytes is not a whole number of "
                                     f"{width}-byte values")
                array = np.frombuffer(buf, "<f4" if width == 4 else "<f8", (value[1] - value[0]) // width, value[0])
            elif wire == (5 if width == 4 else 1):
                array = np.frombuffer(value, "<f4" if width == 4 else "<f8")
            else:
                raise ProtoError(f"blob {what} has wire type {wire}")
            (floats if width == 4 else doubles).append(array)
    if any(d is not None for d in legacy):
        names, dims = ("num", "channels", "height", "width"), [d or 0 for d in legacy]
    else:
        names, dims = ("dim",) * len(dims or []), dims or []
    for name, d in zip(names, dims):
        if not 0 <= d <= MAX_DIM:
            raise ProtoError(f"blob {name} {d}: outside 0..{MAX_DIM}")
    chunks = doubles if any(c.size for c in doubles) else floats
    count = sum(c.size for c in chunks)
    shape = tuple(dims)
    if math.prod(shape) > MAX_DIM:
        raise ProtoError(f"a blob of shape {shape} has more than {MAX_DIM} values")
    if not shape or math.prod(shape) != count:
        raise ProtoError(f"a blob of shape {shape or '()'} holds {count} values")
    data = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    return Blob(shape, data)


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[Blob]]:
    """``layer name -> blobs`` for every layer of a ``.caffemodel`` that has weights (one-line errors)."""
    path = require_file(path, "caffemodel")
    raw = path.read_bytes()
    if raw[:8] == b"\x89HDF\r\n\x1a\n":
        raise UserError(f"{path} is an HDF5 file (.caffemodel.h5): convert it with Caffe, or pass the binary .caffemodel")
    buf = memoryview(raw)
    layers: dict[str, list[Blob]] = {}
    where = "the net"
    try:
        for index, (number, wire, value) in enumerate(fields(buf)):
            if wire != 2 or number not in (100, 2):
                continue
            name_field, blob_field = (1, 7) if number == 100 else (4, 6)
            name, blobs = None, []
            where = f"layer #{index + 1}"
            for n, w, v in fields(buf, *value):
                if number == 2 and n == 1 and w == 2:  # a V0LayerParameter inside a V1 layer
                    for n0, w0, v0 in fields(buf, *v):
                        if n0 == 1 and w0 == 2:
                            name = _string(buf, v0)
                            where = f"layer {name!r}"
                        elif n0 == 50 and w0 == 2:
                            where = f"layer {name or f'#{index + 1}'!r} blob {len(blobs)}"
                            blobs.append(read_blob(buf, *v0))
                elif n == name_field and w == 2:
                    name = _string(buf, v)
                    where = f"layer {name!r}"
                elif n == blob_field and w == 2:
                    where = f"layer {name or f'#{index + 1}'!r} blob {len(blobs)}"
                    blobs.append(read_blob(buf, *v))
            if name is not None and blobs:
                layers[name] = blobs
            where = "the net"
    except ProtoError as e:
        raise UserError(f"{path} is not a Caffe model (protobuf, in {one_line(where)[:80]}: {e})") from None
    except DECODE_ERRORS as e:
        raise UserError(f"{path} is not a Caffe model (protobuf, in {one_line(where)[:80]}: "
                        f"{type(e).__name__}: {one_line(str(e))[:120]})") from e
    if not layers:
        raise UserError(f"{path} is not a Caffe model with weights: no layer holds any blobs")
    return layers


def read_binaryproto(path: str | os.PathLike) -> np.ndarray:
    """A mean ``.binaryproto`` (one BlobProto, 1 x 3 x H x W in B, G, R order) as ``H x W x 3`` RGB float32."""
    path = require_file(path, "mean file")
    try:
        blob = read_blob(memoryview(path.read_bytes()))
    except ProtoError as e:
        raise UserError(f"{path} is not a Caffe mean .binaryproto ({e})") from None
    except DECODE_ERRORS as e:
        raise UserError(f"{path} is not a Caffe mean .binaryproto ({type(e).__name__}: {one_line(str(e))[:120]})") from e
    shape = blob.trimmed
    if len(shape) != 3 or shape[0] != 3:
        raise UserError(f"{path}: the mean image has shape {blob.shape}, expected 1 x 3 x H x W (B, G, R)")
    return np.ascontiguousarray(blob.data.reshape(shape)[::-1].transpose(1, 2, 0))


# ====================================================================== text format
MAX_DEPTH = 100  # messages nested deeper are refused (bvlc_alexnet's deploy.prototxt: 4)
_TOKEN = re.compile(r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|(?P<punct>[{}<>:\[\],;])|(?P<word>[^\s{}<>:\[\],;"'\#]+)""")
_CLOSE = {"{": "}", "<": ">"}
# protobuf's text-format numbers (tokenizer.cc): decimal, octal (leading 0), hex; floats may end in f / F
_INT = re.compile(r"-?(?:0[xX](?P<hex>[0-9a-fA-F]+)|0(?P<oct>[0-7]*)|(?P<dec>[1-9][0-9]*))", re.ASCII)
_FLOAT = re.compile(r"-?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|[0-9]+(?=[fF]))[fF]?",
                    re.ASCII)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63}


class Ident(str):
    """An unquoted name in a prototxt (an enum value, true / false): equal to its text, but not a string."""


def _tokens(text: str):
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ProtoError(f"unexpected character {text[pos]!r} at line {line}")
        kind = m.lastgroup
        if kind is not None:
            yield kind, m.group(kind), line
        line += text.count("\n", pos, m.end())
        pos = m.end()


def _unescape(body: str, line: int) -> str:
    """A text-format string: C-escaped bytes (\\n, \\\\, \\", \\ooo, \\xhh, \\uhhhh), decoded as UTF-8."""
    out, i = bytearray(), 0
    while i < len(body):
        j = body.find("\\", i)
        if j < 0:
            out += body[i:].encode("utf-8")
            break
        out += body[i:j].encode("utf-8")
        c = body[j + 1:j + 2]
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
            i = j + 2
        elif c and c in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[j + 1:]).group()
            if int(digits, 8) > 255:
                raise ProtoError(f"octal escape \\{digits} past 255 at line {line}")
            out.append(int(digits, 8))
            i = j + 1 + len(digits)
        elif c in ("x", "X"):
            m = re.match(r"[0-9a-fA-F]{1,2}", body[j + 2:])
            if m is None:
                raise ProtoError(f"escape \\{c} without hex digits at line {line}")
            out.append(int(m.group(), 16))
            i = j + 2 + len(m.group())
        elif c in ("u", "U"):
            n = 4 if c == "u" else 8
            m = re.fullmatch(r"[0-9a-fA-F]{%d}" % n, body[j + 2:j + 2 + n])
            code = int(m.group(), 16) if m else -1
            if not (0 <= code <= 0x10FFFF) or 0xD800 <= code <= 0xDFFF:
                raise ProtoError(f"bad escape \\{c}{body[j + 2:j + 2 + n]} at line {line}")
            out += chr(code).encode("utf-8")
            i = j + 2 + n
        else:
            raise ProtoError(f"unknown escape \\{c} in a string at line {line}")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"a string that is not UTF-8 at line {line}") from None


def _scalar(kind: str, tok: str, line: int = 0):
    """A value token as protobuf's text format reads it: a string, an int, a float, or an :class:`Ident`."""
    if kind == "str":
        return _unescape(tok[1:-1], line)
    m = _INT.fullmatch(tok)
    if m:
        digits, base = (m["hex"], 16) if m["hex"] is not None else (m["oct"] or "0", 8) if m["oct"] is not None \
            else (m["dec"], 10)
        return -int(digits, base) if tok.startswith("-") else int(digits, base)
    if _FLOAT.fullmatch(tok):
        return float(tok.rstrip("fF"))
    if tok.lstrip("-").lower() in ("inf", "infinity", "nan"):
        return float(tok.lower().replace("infinity", "inf"))
    if _IDENT.fullmatch(tok):
        return Ident(tok)
    raise ProtoError(f"{tok[:40]!r} at line {line} is neither a number nor a name")


def parse_prototxt(text: str) -> list[tuple[str, object]]:
    """Protobuf text format as nested ``[(key, value), ...]``: a value is a number, a string, an enum
    name (:class:`Ident`), or a message (another such list). Repeated fields repeat their key."""
    toks = list(_tokens(text))
    pos = 0

    def value_message(tok: str, depth: int) -> list:
        nonlocal pos
        if depth >= MAX_DEPTH:
            raise ProtoError(f"messages nested more than {MAX_DEPTH} deep at line {toks[pos][2]}")
        pos += 1
        return message(_CLOSE[tok], depth + 1)

    def message(close: str | None, depth: int) -> list:
        nonlocal pos
        out = []
        while True:
            if pos >= len(toks):
                if close is None:
                    return out
                raise ProtoError(f"missing {close!r} at the end of the file")
            kind, tok, line = toks[pos]
            if kind == "punct" and tok == close:
                pos += 1
                return out
            if kind != "word":
                raise ProtoError(f"expected a field name at line {line}, found {tok[:40]!r}")
            key = tok
            pos += 1
            if pos < len(toks) and toks[pos][1] == ":" and toks[pos][0] == "punct":
                pos += 1
            if pos >= len(toks):
                raise ProtoError(f"field {key[:40]!r} has no value (line {line})")
            kind, tok, line = toks[pos]
            if kind == "punct" and tok in _CLOSE:
                out.append((key, value_message(tok, depth)))
            elif kind == "punct" and tok == "[":
                pos += 1
                while True:
                    if pos >= len(toks):
                        raise ProtoError(f"missing ']' after the list of {key[:40]!r} (line {line})")
                    k, t, ln = toks[pos]
                    if k == "punct" and t == "]":
                        pos += 1
                        break
                    if k == "punct" and t == ",":
                        pos += 1
                    elif k == "punct" and t in _CLOSE:
                        out.append((key, value_message(t, depth)))
                    elif k == "punct":
                        raise ProtoError(f"unexpected {t!r} in a list at line {ln}")
                    else:
                        out.append((key, _scalar(k, t, ln)))
                        pos += 1
            elif kind == "punct":
                raise ProtoError(f"field {key[:40]!r} has no value at line {line} (found {tok!r})")
            else:
                value = _scalar(kind, tok, line)
                pos += 1
                while kind == "str" and pos < len(toks) and toks[pos][0] == "str":  # "a" "b" is "ab"
                    value += _scalar("str", toks[pos][1], toks[pos][2])
                    pos += 1
                out.append((key, value))
            if pos < len(toks) and toks[pos][0] == "punct" and toks[pos][1] in ",;":
                pos += 1

    return message(None, 0)


_KINDS = {int: "an integer", float: "a number", bool: "true or false", list: "a message { ... }", str: "a string"}


def _show(value) -> str:
    return "{ ... }" if isinstance(value, list) else one_line(repr(value))[:40]


def _typed(value, kind, where: str, key: str):
    """``value`` as protobuf reads a field of type ``kind`` from text (bool: true/True/t/1, false/False/f/0)."""
    if kind is bool:
        if value in (0, 1) and isinstance(value, int) or isinstance(value, Ident) and value in ("true", "True", "t",
                                                                                                "false", "False", "f"):
            return value in (1, "true", "True", "t")
    elif kind is float:
        if isinstance(value, (int, float)):
            return float(value)
    elif kind is int:
        if isinstance(value, int):
            return value
    elif isinstance(value, kind):
        return value
    raise UserError(f"{where}: {key} {_show(value)} is not {_KINDS[kind]}")


def _get(msg: list, key: str, default=None, kind=None, where: str = ""):
    values = _all(msg, key, kind, where)
    return values[-1] if values else default  # a repeated optional field: the last one counts, as in protobuf


def _all(msg: list, key: str, kind=None, where: str = "") -> list:
    values = [v for k, v in msg if k == key]
    return values if kind is None else [_typed(v, kind, where, key) for v in values]


def _enum(msg: list, key: str, names: tuple[str, ...], where: str) -> str:
    """An enum field by name or by number (names in caffe.proto's order, numbered from 0); the default is the first."""
    value = _get(msg, key, Ident(names[0]))
    if isinstance(value, Ident) and value in names:
        return str(value)
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    raise UserError(f"{where}: {key} {_show(value)} is not one of {', '.join(names)} (0..{len(names) - 1})")


@dataclass
class Layer:
    name: str
    type: str
    params: list = field(default_factory=list)


def read_prototxt(path: str | os.PathLike) -> tuple[list[Layer], list]:
    """``(layers in order, the whole net)`` of a deploy prototxt (new ``layer`` or old ``layers`` syntax)."""
    path = require_file(path, "prototxt")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a prototxt (not text: a .caffemodel goes second)") from None
    try:
        net = parse_prototxt(text)
    except ProtoError as e:
        raise UserError(f"{path} is not a readable prototxt ({e})") from None
    except DECODE_ERRORS as e:
        raise UserError(f"{path} is not a readable prototxt ({type(e).__name__}: {one_line(str(e))[:120]})") from e
    layers = []
    for key, value in net:
        if key not in ("layer", "layers"):
            continue
        where = f"{path}: layer #{len(layers) + 1}"
        value = _typed(value, list, where, key)
        if isinstance(_get(value, "layer"), list):
            raise UserError(f"{path} uses Caffe's oldest (V0) layer syntax: upgrade it with Caffe's upgrade_net_proto_text")
        kind = _get(value, "type", "")
        if isinstance(kind, list):
            raise UserError(f"{where}: type {{ ... }} is not a layer type")
        kind = V1_NAMES.get(kind, kind) if isinstance(kind, str) else V1_TYPES.get(kind, str(kind))
        layers.append(Layer(_get(value, "name", f"#{len(layers) + 1}", str, where), kind, value))
    if not layers:
        raise UserError(f"{path} is not a Caffe net definition: no layer {{ ... }} entries")
    return layers, net


# ====================================================================== architecture
def _one(params: list, key: str, default, where: str):
    """A field that must have one value (Caffe's repeated kernel_size/stride/pad: all equal)."""
    values = _all(params, key, int, where)
    if not values:
        return default
    if len(set(values)) > 1:
        raise UserError(f"{where}: {key} {values} differs per axis; only square ones are supported")
    return values[0]


def _conv_settings(layer: Layer, where: str) -> dict:
    p = _get(layer.params, "convolution_param", [], list, where)
    k = _one(p, "kernel_size", None, where)
    kh, kw = _get(p, "kernel_h", k, int, where), _get(p, "kernel_w", k, int, where)
    s = _one(p, "stride", 1, where)
    pad = _one(p, "pad", 0, where)
    if (kh != kw or _get(p, "stride_h", s, int, where) != _get(p, "stride_w", s, int, where)
            or _get(p, "pad_h", pad, int, where) != _get(p, "pad_w", pad, int, where)):
        raise UserError(f"{where}: a non-square kernel, stride or padding is not supported")
    if _one(p, "dilation", 1, where) != 1:
        raise UserError(f"{where}: dilation is not supported")
    return {"num_output": _get(p, "num_output", None, int, where), "kernel_size": kh,
            "stride": _get(p, "stride_h", s, int, where), "pad": _get(p, "pad_h", pad, int, where),
            "group": _get(p, "group", 1, int, where), "bias_term": _get(p, "bias_term", True, bool, where)}


def _check(where: str, what: str, got, want) -> None:
    if got != want and not (isinstance(want, float) and isinstance(got, (int, float))
                            and math.isclose(got, want, rel_tol=1e-6)):
        raise UserError(f"{where}: {what} {got}, but {MODEL_NAME} (bvlc_alexnet) has {want}")


def _check_input(net: list, layers: list[Layer], prototxt: Path) -> None:
    """Refuse a declared input other than 3 x 227 x 227 (fc6 is sized for it)."""
    where = str(prototxt)
    dims = _all(net, "input_dim", int, where)
    for shape in _all(net, "input_shape", list, where):
        dims = _all(shape, "dim", int, where)
    for layer in layers:
        if layer.type == "Input":
            where = f"{prototxt}: layer {layer.name}"
            for shape in _all(_get(layer.params, "input_param", [], list, where), "shape", list, where):
                dims = _all(shape, "dim", int, where)
    if len(dims) >= 4 and (dims[1], dims[2], dims[3]) != (3, INPUT_SIZE, INPUT_SIZE):
        raise UserError(f"{prototxt}: input {' x '.join(map(str, dims[1:]))}, but {MODEL_NAME} takes 3 x 227 x 227")


def _mean_from_prototxt(layers: list[Layer], prototxt: Path) -> list[float] | None:
    for layer in layers:
        where = f"{prototxt}: layer {layer.name}"
        t = _get(layer.params, "transform_param", None, list, where)
        if t is None:
            continue
        if _get(t, "scale", 1.0, float, where) != 1.0:
            raise UserError(f"{prototxt}: layer {layer.name} scales its input by {_get(t, 'scale')}: "
                            f"{MODEL_NAME} takes raw 0..255 pixels minus the mean")
        values = _all(t, "mean_value", float, where)
        if values:
            return values * 3 if len(values) == 1 else values
    return None


def architecture(layers: list[Layer], prototxt: Path, model: torch.nn.Module) -> dict[str, Layer]:
    """Check the prototxt against ``model`` (an ``alexnet-caffe``); ``our layer name -> Caffe layer``."""
    steps = [layer for layer in layers if layer.type not in IGNORED]
    found = " ".join(layer.type for layer in steps)
    want = " ".join(t for t, _ in ALEXNET_ORDER)
    if [layer.type for layer in steps] != [t for t, _ in ALEXNET_ORDER]:
        hint = ""
        if "Pooling LRN" in found:
            hint = " (pooling before LRN is CaffeNet's order, bvlc_reference_caffenet; alexnet-caffe normalizes first)"
        raise UserError(f"{prototxt} is not bvlc_alexnet: its layers run {found}; expected {want}{hint}")
    mapping = {}
    for layer, (kind, ours) in zip(steps, ALEXNET_ORDER):
        where = f"{prototxt}: layer {layer.name}"
        if kind == "Convolution":
            conv = getattr(model, ours)
            s = _conv_settings(layer, where)
            _check(where, "num_output", s["num_output"], conv.out_channels)
            _check(where, "kernel_size", s["kernel_size"], conv.kernel_size[0])
            _check(where, "stride", s["stride"], conv.stride[0])
            _check(where, "pad", s["pad"], conv.padding[0])
            _check(where, "group", s["group"], conv.groups)
        elif kind == "LRN":
            lrn, p = getattr(model, ours), _get(layer.params, "lrn_param", [], list, where)
            if not lrn.alpha_per_channel or lrn.groups != 1:
                raise AssertionError(f"{MODEL_NAME}'s {ours} is not Caffe's LRN")  # a change to the variant
            _check(where, "norm_region", _enum(p, "norm_region", ("ACROSS_CHANNELS", "WITHIN_CHANNEL"), where),
                   "ACROSS_CHANNELS")
            _check(where, "local_size", _get(p, "local_size", 5, int, where), lrn.size)
            _check(where, "alpha", _get(p, "alpha", 1.0, float, where), float(lrn.alpha))
            _check(where, "beta", _get(p, "beta", 0.75, float, where), float(lrn.beta))
            _check(where, "k", _get(p, "k", 1.0, float, where), float(lrn.k))
        elif kind == "Pooling":
            pool, p = getattr(model, ours), _get(layer.params, "pooling_param", [], list, where)
            _check(where, "pool", _enum(p, "pool", ("MAX", "AVE", "STOCHASTIC"), where), "MAX")
            _check(where, "kernel_size", _get(p, "kernel_size", None, int, where), pool.kernel_size)
            _check(where, "stride", _get(p, "stride", 1, int, where), pool.stride)
            _check(where, "pad", _get(p, "pad", 0, int, where), 0)
            for name, want in (("kernel", pool.kernel_size), ("stride", pool.stride), ("pad", 0)):
                for axis in "hw":  # Caffe takes these over kernel_size / stride / pad where given
                    _check(where, f"{name}_{axis}", _get(p, f"{name}_{axis}", want, int, where), want)
            if _get(p, "global_pooling", False, bool, where):
                raise UserError(f"{where}: global_pooling, but {MODEL_NAME} (bvlc_alexnet) pools 3 x 3 windows")
        elif kind == "InnerProduct":
            p = _get(layer.params, "inner_product_param", [], list, where)
            if ours != "fc8":
                _check(where, "num_output", _get(p, "num_output", None, int, where), getattr(model, ours).out_features)
            _get(p, "transpose", False, bool, where)
            if not _get(p, "bias_term", True, bool, where):
                raise UserError(f"{where}: an inner product without bias is not supported")
        if ours is not None:
            mapping[ours] = layer
    return mapping


def _num_classes(layers: list[Layer], prototxt: Path) -> int:
    fcs = [layer for layer in layers if layer.type == "InnerProduct"]
    where = f"{prototxt}: layer {fcs[-1].name}" if fcs else str(prototxt)
    n = _get(_get(fcs[-1].params, "inner_product_param", [], list, where), "num_output", None, int, where) if fcs else None
    if n is None or n < 1:
        raise UserError(f"{prototxt}: the last InnerProduct layer has no num_output")
    if n > MAX_CLASSES:
        raise UserError(f"{where}: num_output {n}, more than the {MAX_CLASSES} classes {MODEL_NAME} allows")
    return n


# ====================================================================== weights
def _weights(mapping: dict[str, Layer], blobs: dict[str, list[Blob]], model: torch.nn.Module, weights: Path) -> dict:
    """The state dict: each layer's blobs checked against our shapes; conv1's input channels B, G, R -> R, G, B."""
    sd = {}
    for ours in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        layer, module = mapping[ours], getattr(model, ours)
        got = blobs.get(layer.name)
        if got is None:
            have = ", ".join(list(blobs)[:12])
            raise UserError(f"{weights} has no weights for layer {layer.name!r} (it has: {have})")
        want_w, want_b = tuple(module.weight.shape), tuple(module.bias.shape)
        w = got[0]
        where = f"layer {layer.name}"
        transpose = ours.startswith("fc") and _get(_get(layer.params, "inner_product_param", [], list, where),
                                                   "transpose", False, bool, where)
        shape = w.trimmed[::-1] if transpose else w.trimmed
        if shape != want_w:
            raise UserError(f"{weights}: layer {layer.name} weights have shape {' x '.join(map(str, w.shape))}, "
                            f"{MODEL_NAME}'s {ours} needs {' x '.join(map(str, want_w))}")
        weight = torch.from_numpy(w.data.reshape(w.trimmed).copy())
        if transpose:
            weight = weight.t().contiguous()
        if len(got) > 1:
            b = got[1]
            if b.trimmed != want_b:
                raise UserError(f"{weights}: layer {layer.name} bias has shape {' x '.join(map(str, b.shape))}, "
                                f"{MODEL_NAME}'s {ours} needs {want_b[0]}")
            bias = torch.from_numpy(b.data.copy())
        else:  # bias_term: false
            bias = torch.zeros(want_b)
        if ours == "conv1":
            weight = weight.flip(1).contiguous()  # Caffe's input is B, G, R; ours R, G, B
        sd[f"{ours}.weight"], sd[f"{ours}.bias"] = weight, bias
    return sd


# ====================================================================== mean, classes
def parse_mean(text: str | None, layers: list[Layer], prototxt: Path) -> tuple[np.ndarray | None, list[float], str]:
    """``(mean image H x W x 3 RGB or None, mean R, G, B, what it is)`` from ``--mean`` (see the module docstring)."""
    if text is not None and (os.path.exists(text) or not re.fullmatch(r"[\s\d.,+eE-]+", text)):
        image = read_binaryproto(text)
        return image, image.reshape(-1, 3).mean(0).astype(float).tolist(), f"mean image {Path(text).name}"
    if text is not None:
        try:
            values = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            values = []
        if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
            raise UserError(f"--mean {text!r}: expected a .binaryproto file or B,G,R values such as 104,117,123")
        bgr, what = (values * 3 if len(values) == 1 else values), "mean B,G,R " + ",".join(f"{v:g}" for v in values)
    else:
        bgr = _mean_from_prototxt(layers, prototxt)
        what = "mean B,G,R from the prototxt" if bgr is not None else "ILSVRC-2012 mean B,G,R 104,117,123"
        bgr = bgr if bgr is not None else list(ILSVRC_MEAN_BGR)
        if len(bgr) != 3:
            raise UserError(f"{prototxt}: mean_value has {len(bgr)} values, expected 1 or 3")
    return None, [float(v) for v in bgr[::-1]], what


def read_synsets(path: str | os.PathLike, n: int) -> tuple[list[str], list[str]]:
    """``(ids, names)`` from a ``synset_words.txt``-style file: ``<id> <name, name...>`` per line, ``n`` lines."""
    path = require_file(path, "synset file")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file of synsets (not UTF-8)") from None
    if len(lines) != n:
        raise UserError(f"{path} has {len(lines)} lines, but the net has {n} outputs (one line per output)")
    ids, names = [], []
    for line in lines:
        wnid, _, words = line.partition(" ")
        ids.append(wnid)
        names.append(words.strip() or wnid)
    if len(set(ids)) != n:
        raise UserError(f"{path}: the first words of its lines (the class ids) are not all different")
    return ids, names


def _classes(synsets, n: int) -> tuple[list[str], list[str]]:
    if synsets is not None:
        return read_synsets(synsets, n)
    if n == 1000:
        from .convert import imagenet_categories, imagenet_synsets

        return imagenet_synsets(), imagenet_categories()
    return [str(i) for i in range(n)], [str(i) for i in range(n)]


# ====================================================================== the conversion
def convert_caffe(prototxt: str | os.PathLike, weights: str | os.PathLike, out: str | os.PathLike,
                  synsets: str | os.PathLike | None = None, mean: str | None = None) -> dict:
    """Write an ``alexnet-caffe`` checkpoint from a deploy prototxt and its caffemodel; returns it.

    ``mean``: a ``.binaryproto`` path or ``"B,G,R"`` values (see the module docstring).
    """
    from ..data.transforms import eval_spec

    prototxt, weights = Path(prototxt), Path(weights)
    layers, net = read_prototxt(prototxt)
    n = _num_classes(layers, prototxt)
    _check_input(net, layers, prototxt)
    with torch.device("meta"):  # shapes and settings only: no memory, no initialisation
        model = models.create(MODEL_NAME, num_classes=n)
    mapping = architecture(layers, prototxt, model)
    mean_image, mean_rgb, mean_what = parse_mean(mean, layers, prototxt)
    classes, names = _classes(synsets, n)
    sd = _weights(mapping, read_caffemodel(weights), model, weights)
    if mean_image is not None:
        h, w = mean_image.shape[:2]
        if h != w or h < INPUT_SIZE:
            raise UserError(f"{mean}: the mean image is {h} x {w}; expected a square of at least {INPUT_SIZE} px")
        resize, kind = h, "image"
        image = torch.from_numpy(mean_image)
    else:
        resize, kind = 256, "rgb"
        image = torch.tensor(mean_rgb, dtype=torch.float32).view(1, 1, 3).expand(resize, resize, 3).contiguous()
    ckpt = make_checkpoint(
        MODEL_NAME, {"num_classes": n}, sd, classes, names,
        eval_spec(resize, INPUT_SIZE, kind, scale=255.0),  # raw pixels minus the mean, as Caffe's net takes them
        {"mean_image": image, "mean_rgb": mean_rgb},  # R, G, B, pixel units
        metrics={"note": f"converted from Caffe ({prototxt.name}, {weights.name}; {mean_what}); BVLC reports "
                         "57.1% / 80.2% top-1/top-5 for bvlc_alexnet (centre crop)"},
        source=f"caffe:{weights.name}",
    )
    models.from_checkpoint(ckpt)  # refuse weights that do not fit before writing anything
    save_checkpoint(out, ckpt)
    return ckpt

