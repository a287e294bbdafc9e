"""Shards: tar files in WebDataset layout, written atomically, read by offset.

Each sample is two members with the same key: ``<key>.jpg`` (a JPEG of the
square image) or ``<key>.npy`` (raw uint8 ``H x W x C``, for images of 64 px
or less), and ``<key>.cls`` (the label as ASCII digits). Any WebDataset
reader can read the shards; this package reads them faster through an index,
``OUT/<split>.index.npy``: one int64 row per sample,
``(shard number, byte offset of the image data, its byte size, label)``,
so the loader gets any sample with one slice of a memory-mapped shard.
For ``.npy`` members the offset and size are those of the pixels after the
npy header.

:func:`atomic_write_bytes` and :class:`ShardWriter` write to a temporary
file beside the target, fsync and rename: a killed process leaves either no
file or a whole one, never half of one under the final name.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes, file_mode, remove_temporaries  # noqa: F401  (re-exported)

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


def decode_jpegs(data: list, channels: int = 3, device=None) -> list:
    """Decode JPEG byte tensors with torchvision (libjpeg-turbo; nvJPEG for ``device="cuda"``): C x H x W uint8 each.

    torchvision 0.29 marks its image codecs deprecated in favour of
    TorchCodec; they are still the batched libjpeg-turbo / nvJPEG path, so the
    warning is silenced here, in the one place that decodes.
    """
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        warnings.filterwarnings("ignore", message=".*deprecated.*TorchCodec.*")
        if device is None:
            return decode_jpeg(data, mode=mode)
        return decode_jpeg(data, mode=mode, device=device)


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
