"""Shards: tar files in WebDataset layout, written atomically, read by offset; their order; the JPEG decoder.

Each sample is two members with the same key: ``<key>.jpg`` (a JPEG of the
square image) or ``<key>.npy`` (raw uint8 ``H x W x C``, for small images, see
:mod:`alexnet.data.meta`), and ``<key>.cls`` (the label as ASCII digits). Any
WebDataset reader can read the shards; this package reads them faster through
an index, ``OUT/<split>.index.npy``: one int64 row per sample,
``(shard number, byte offset of the image data, its byte size, label)``,
so the loader gets any sample with one slice of a memory-mapped shard.
For ``.npy`` members the offset and size are those of the pixels after the
npy header.

Order: ``prepare`` writes a split's samples in a fixed shuffled order,
:func:`shuffled_order` (a hash of ``(seed, split, source index)``, sorted: the
same permutation on any machine and numpy version), so every shard holds a
mix of classes and a streaming WebDataset reader (shard shuffle + a sample
buffer) makes mixed batches. A sample's key is still ``<split>_<source index>``.

:class:`ShardWriter` streams one shard into a temporary file beside the
target, fsyncs and renames it (the streaming form of
:func:`alexnet.fileio.atomic_write`): a killed process leaves either no file
or a whole one, never half of one under the final name.

Decoding: :func:`decode_jpegs`, the one place JPEG bytes become pixels, uses
the first decoder of :data:`DECODERS` that imports and decodes a probe image,
chosen once per process (:func:`jpeg_decoder`).
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..fileio import file_mode

INDEX_COLUMNS = ("shard", "offset", "size", "label")


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


_NPY_HEADERS: dict[tuple, bytes] = {}


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in the .npy format (the header is built once per shape and dtype)."""
    array = np.ascontiguousarray(array)
    key = (array.shape, array.dtype.str)
    header = _NPY_HEADERS.get(key)
    if header is None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        header = _NPY_HEADERS[key] = buf.getvalue()[: -array.nbytes or None]
    return header + array.tobytes()


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte POSIX ustar header of a regular file: mode 0644, owner 0, mtime 0.

    Written by hand because ``tarfile.addfile`` spends ~50 us per member, the
    bulk of the time for small raw samples.
    """
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError(f"member name longer than 100 bytes: {name}")
    h = bytearray(512)
    h[0:len(raw)] = raw
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[329:337] = b"0000000\0"
    h[337:345] = b"0000000\0"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


class ShardWriter:
    """Writes one tar shard to a temporary file; :meth:`commit` makes it final.

    Members get fixed metadata (mtime 0, uid/gid 0, mode 0644) so that the
    same samples always give the same bytes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.fchmod(fd, file_mode())
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        self.offset = 0
        self.index: list[tuple[int, int, int]] = []  # (offset, size, label) of each sample's image data

    def _add(self, name: str, data: bytes) -> int:
        """Append one member; the offset of its data."""
        self.file.write(ustar_header(name, len(data)))
        self.file.write(data)
        pad = -len(data) % 512
        if pad:
            self.file.write(b"\0" * pad)
        start = self.offset + 512
        self.offset = start + len(data) + pad
        return start

    def add(self, key: str, label: int, jpg: bytes | None = None, array: np.ndarray | None = None) -> None:
        if jpg is not None:
            offset = self._add(f"{key}.jpg", jpg)
            self.index.append((offset, len(jpg), label))
        else:
            data = npy_bytes(array)
            offset = self._add(f"{key}.npy", data)
            self.index.append((offset + len(data) - array.nbytes, array.nbytes, label))
        self._add(f"{key}.cls", str(int(label)).encode())

    def commit(self) -> None:
        end = 2 * 512 + (-(self.offset + 1024) % 10240)  # two zero blocks, then whole 10 KiB records, as tar does
        self.file.write(b"\0" * end)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)


# ---------------------------------------------------------------- order
SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x):
    """SplitMix64's output function (Steele, Lea and Flood 2014), vectorised over uint64."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + SPLITMIX_GAMMA
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shuffled_order(n: int, split: str, seed: int = 0) -> np.ndarray:
    """The order ``prepare`` writes a split's ``n`` source samples in: a permutation of ``0..n-1``
    that depends only on ``(seed, split, n)``."""
    key = splitmix64(splitmix64(np.uint64(seed % 2**64)) ^ np.uint64(zlib.crc32(split.encode())))
    return np.argsort(splitmix64(key ^ np.arange(n, dtype=np.uint64)), kind="stable")


# ---------------------------------------------------------------- decoding
@dataclass(frozen=True)
class Decoder:
    """A JPEG decoder: ``decode(list of 1-D uint8 byte tensors, channels, device) -> list of C x H x W uint8``.

    Every decoder raises ``RuntimeError`` for data it cannot decode.
    """

    name: str
    decode: Callable


_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def _torchvision_decoder() -> Decoder:
    """``torchvision.io.decode_jpeg``: libjpeg-turbo on a whole batch, nvJPEG for ``device="cuda"``.

    Deprecated since torchvision 0.29 in favour of TorchCodec, and still the
    batched CPU/GPU path while it exists. Its DeprecationWarning (issued on
    every call) is filtered here by its exact text and nowhere else; any
    other warning passes. When torchvision drops it, the import fails and the
    next decoder of :data:`DECODERS` takes over.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: list, channels: int, device=None) -> list:
        mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION, category=DeprecationWarning)
            if device is None:
                return list(decode_jpeg(data, mode=mode))
            return list(decode_jpeg(data, mode=mode, device=device))

    return Decoder("torchvision", decode)


def _to_channels(image, channels: int):
    """``C x H x W`` with ``channels`` channels. Shards hold JPEGs of the channels asked for; this serves
    other JPEGs (a grey or CMYK source file checked for damage), where an approximation is enough."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1:
        return image.expand(channels, -1, -1).contiguous()
    rgb = image[:3]
    return rgb if channels == 3 else rgb.float().mean(0, keepdim=True).round().to(image.dtype)


def _torchcodec_decoder() -> Decoder:
    """TorchCodec's ``decode_jpeg`` (torchcodec >= 0.16, torchvision's successor), one image per call."""
    from torchcodec.decoders import decode_jpeg

    def decode(data: list, channels: int, device=None) -> list:
        kw = {} if device is None else {"device": device}
        return [_to_channels(decode_jpeg(d, **kw), channels) for d in data]

    return Decoder("torchcodec", decode)


def _pillow_decoder() -> Decoder:
    """Pillow (libjpeg-turbo in its wheels: the same pixels as torchvision's), one image per call, on the CPU."""
    import torch
    from PIL import Image

    def decode(data: list, channels: int, device=None) -> list:
        mode = "RGB" if channels == 3 else "L"
        out = []
        for d in data:
            try:
                with Image.open(io.BytesIO(d.numpy().tobytes())) as im:
                    if im.format != "JPEG":
                        raise RuntimeError(f"not a JPEG but {im.format}")
                    if mode == "L":
                        im.draft("L", im.size)  # libjpeg's own grey output, as torchvision's GRAY mode
                    a = np.asarray(im.convert(mode))
            except (OSError, SyntaxError, ValueError) as e:
                raise RuntimeError(f"cannot decode JPEG: {e}") from None
            t = torch.from_numpy(a.reshape(a.shape[0], a.shape[1], channels).copy()).permute(2, 0, 1)
            out.append(t if device is None else t.to(device))
        return out

    return Decoder("pillow", decode)


DECODERS = (_torchvision_decoder, _torchcodec_decoder, _pillow_decoder)  # in order of preference
_DECODER: Decoder | None = None


def _probe_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 60)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _probe_ok(decoder: Decoder, device=None) -> bool:
    import torch

    probe = torch.frombuffer(bytearray(_probe_jpeg()), dtype=torch.uint8)
    out = decoder.decode([probe], 3, device)
    return (len(out) == 1 and tuple(out[0].shape) == (3, 8, 8) and out[0].dtype == torch.uint8
            and (device is None or out[0].device.type == torch.device(device).type))


def _reason(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def select_decoder(candidates=None, device=None) -> Decoder:
    """The first of ``candidates`` (default :data:`DECODERS`) that imports and decodes a probe JPEG
    to the right shape, on ``device`` (None: the CPU). A decoder that is missing, fails to import or fails
    the probe is passed over."""
    failures = []
    for make in candidates or DECODERS:
        try:
            decoder = make()
            if _probe_ok(decoder, device):
                return decoder
            failures.append(f"{decoder.name}: wrong output")
        except Exception as e:  # ImportError, a missing native extension (RuntimeError), an API change (TypeError)
            failures.append(f"{make.__name__.strip('_').replace('_decoder', '')}: {_reason(e)}")
    where = "" if device is None else f" on {device}"
    raise RuntimeError(f"no JPEG decoder works here{where}: " + "; ".join(failures))


_DEVICE_PROBES: dict[str, str | None] = {}


def device_decode_problem(device) -> str | None:
    """Why this process's decoder (:func:`jpeg_decoder`) cannot decode on ``device``, or None when it can.

    The check of the device that will decode: a torchvision built without nvJPEG passes the CPU probe of
    :func:`select_decoder` and fails only here. Probed once per device and process.
    """
    import torch

    key = str(torch.device(device))
    if key not in _DEVICE_PROBES:
        try:
            decoder = jpeg_decoder()
            _DEVICE_PROBES[key] = None if _probe_ok(decoder, device) else f"{decoder.name}: wrong output on {key}"
        except Exception as e:  # no nvJPEG in this build, a driver error, no decoder at all
            _DEVICE_PROBES[key] = _reason(e)
    return _DEVICE_PROBES[key]


def jpeg_decoder() -> Decoder:
    """The decoder of this process, selected on first use (:func:`select_decoder`) and kept."""
    global _DECODER
    if _DECODER is None:
        _DECODER = select_decoder()
    return _DECODER


def decode_jpegs(data: list, channels: int = 3, device=None) -> list:
    """Decode JPEG byte tensors (1-D uint8, on the CPU): ``C x H x W`` uint8 each, on ``device`` if given.

    On a CUDA ``device`` the outputs are ready for work queued on the current stream after this returns.
    Before decoding, the host waits for the current stream to finish what it has queued. Why: torchvision's
    CUDA ``decode_jpeg`` allocates its outputs with the caching allocator on the caller's current stream but
    writes them on a private stream that does not wait for the caller's (it synchronises only its own
    stream before starting, and makes the caller's stream wait for it at the end). The allocator hands out
    a block freed on the current stream at once, because work on that stream runs in order; a block freed
    while kernels queued on the stream still read it (the decoded images of the previous batch, freed right
    after its crop and centring were queued) can therefore become this decode's output and be overwritten
    before those kernels ran: silent corruption of the previous batch. Once the current stream is idle no
    queued kernel reads a free block, and memory the consumer still uses is protected by ``record_stream``
    (the allocator then waits on an event before reuse). The wait costs the prefetch thread the time of
    one batch's augmentation (a few ms on a GPU), not the training stream. TorchCodec's decoder gets the same
    wait: its stream handling is not ours to rely on.
    """
    if device is not None:
        import torch

        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
    return jpeg_decoder().decode(data, channels, device)


# ---------------------------------------------------------------- reading
@dataclass(frozen=True)
class Member:
    """One file inside a tar shard, read by offset (a sample of a WebDataset source)."""

    shard: str
    name: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.shard} ends inside member {self.name}")
        return data

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


def scan_shard(path: str | os.PathLike) -> list[tuple[str, str, int, int]]:
    """``(key, extension, data offset, size)`` of each member of a tar shard, in order."""
    out = []
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            base = os.path.basename(m.name)
            key, _, ext = base.partition(".")
            out.append((os.path.join(os.path.dirname(m.name), key), ext, m.offset_data, m.size))
    return out
