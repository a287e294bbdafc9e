"""One image file -> the paper's square: RGB (or L), shorter side rescaled, centre crop.

:func:`load_square` is the only place where source files are decoded. It
turns every mode Pillow reads into 8-bit RGB (or L for one channel):

* EXIF orientation is applied first (``ImageOps.exif_transpose``);
* 16-bit and 32-bit integer grey (``I;16*``, ``I``) is scaled to 8 bits
  (``I`` holding no value above 255 is taken as 8-bit), float grey clipped;
* transparency (RGBA, LA, palette with a transparent colour) is composited
  over white, so transparent pixels do not show their hidden colour;
* CMYK, palette, YCbCr, 1-bit, ... go through Pillow's ``convert``.

Then the shorter side is rescaled to ``side`` and the central square cut
(one ``resize`` with a source box, bicubic, antialiased), as the paper
prepares ImageNet. Large JPEGs are decoded at a reduced DCT scale (Pillow's
``draft``) that still leaves the shorter side >= ``side``.

A file that cannot be used raises :class:`BadImage` with a one-line reason:
empty, larger than ``max_bytes`` (:data:`MAX_IMAGE_BYTES`, 64 MB by default:
refused from its size on disk or in its tar header, before a byte of it is
read), not an image, truncated or corrupt, or declaring more pixels than
``max_pixels`` (a decompression bomb: refused before any pixel is decoded).

Damaged but decodable files get the same policy as truncated ones: refused
(so ``prepare`` skips them and lists them in skipped.txt). Pillow hides the
decoder's complaints and fills what it could not decode with grey, so a
JPEG is also decoded once by the loader's decoder (libjpeg-turbo through
torchvision, see :func:`alexnet.data.shards.jpeg_decoder`) and refused when
libjpeg reports corrupt data: a bit-flipped entropy-coded body, a header
declaring more rows than the data holds. A flip that still decodes to valid
codes is undetectable and kept, as any decoder would; so is any damage
libjpeg does not report, which is all of it when the decoder in use is
Pillow's (the fallback when torchvision has none).

A file is a path, or a member of a tar shard (:class:`alexnet.data.shards.Member`,
anything with ``read() -> bytes``), for WebDataset sources.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # Pillow's own default limit (about 0.25 GB of RGB)
MAX_IMAGE_BYTES = 64 << 20  # no image file (or tar member) larger than this is read: its bytes would be held whole


class BadImage(Exception):
    """A source file that is skipped; ``str(e)`` is the reason listed in skipped.txt."""


def to_mode(im: Image.Image, channels: int = 3) -> Image.Image:
    """``im`` as 8-bit ``RGB`` (``channels=3``) or ``L`` (``channels=1``), see the module docstring."""
    target = "RGB" if channels == 3 else "L"
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode != target:
        im = im.convert(target)
    return im


def square(im: Image.Image, side: int) -> Image.Image:
    """Rescale the shorter side of ``im`` to ``side`` and cut the central ``side x side``."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    if (w, h) == (side, side):
        return im
    return im.resize((side, side), Image.Resampling.BICUBIC, box=box)


def byte_size(path) -> int | None:
    """The size in bytes of a file or a tar member (its ``size``, from the tar header), without reading it;
    None for another readable object that does not say."""
    if hasattr(path, "read"):
        size = getattr(path, "size", None)
        return size if isinstance(size, int) else None
    return os.stat(path).st_size


def check_bytes(path, max_bytes: int = MAX_IMAGE_BYTES) -> None:
    """:class:`BadImage` when ``path`` is empty or over ``max_bytes`` (see :func:`byte_size`)."""
    try:
        size = byte_size(path)
    except OSError as e:
        raise BadImage(f"cannot read: {e.strerror or e}") from None
    if size is None:
        return
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    if size > max_bytes:
        raise BadImage(f"{size} bytes, over the limit of {max_bytes} bytes for one image file (not read)")


def _read(path, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a file: a path, or a tar member (anything with ``read()``); refused over ``max_bytes``."""
    check_bytes(path, max_bytes)
    if hasattr(path, "read"):
        data = path.read()
    else:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # a file that grew since it was measured is still read no further
    if len(data) > max_bytes:
        raise BadImage(f"over the limit of {max_bytes} bytes for one image file")
    return data


def open_image(path, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image:
    """Open ``path`` (a path or a tar member) lazily (header only), refusing empty files, files over
    ``max_bytes`` (before reading them), non-images and decompression bombs."""
    check_bytes(path, max_bytes)
    if hasattr(path, "read"):
        path = io.BytesIO(_read_some(path, max_bytes))
    return _open(path, max_pixels)


def _read_some(path, max_bytes: int) -> bytes:
    """:func:`_read`, with a read error or an empty result as :class:`BadImage`."""
    try:
        data = _read(path, max_bytes)
    except OSError as e:
        raise BadImage(f"cannot read: {e.strerror or e}") from None
    if not data:
        raise BadImage("empty file (0 bytes)")
    return data


def _open(path, max_pixels: int) -> Image.Image:
    """Pillow's lazy open of a path or a file object, with our verdicts (see :func:`open_image`)."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the limit is ours (max_pixels), checked from the header just below
        with warnings.catch_warnings():  # Pillow's notes on odd headers: the verdict is ours, one line
            warnings.simplefilter("ignore")
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"cannot open: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise BadImage(f"decompression bomb: declares {w} x {h} = {w * h} pixels, over the limit of {max_pixels}")
    if w < 1 or h < 1:
        im.close()
        raise BadImage(f"declares an empty size {w} x {h}")
    return im


# libjpeg's warnings that mean the data is damaged (jerror.h: JWRN_HIT_MARKER, JWRN_HUFF_BAD_CODE,
# JWRN_EXTRANEOUS_DATA, JWRN_MUST_RESYNC, JWRN_ARITH_BAD_CODE, JWRN_JPEG_EOF); others are harmless notes
_JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")


def jpeg_damage(path, max_bytes: int = MAX_IMAGE_BYTES) -> str | None:
    """libjpeg-turbo's complaint about the JPEG at ``path`` (the first line of it), or None if it decodes cleanly."""
    return decode_reporting(_read(path, max_bytes))[1]


def decode_reporting(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """JPEG bytes decoded by the loader's decoder: ``(H x W x 3 uint8 pixels or None where the decoder gave
    up, the first line of libjpeg's complaint that the data is damaged or None)``.

    libjpeg prints its warnings on file descriptor 2, so that descriptor is
    pointed at a temporary file for the length of one decode.
    """
    import torch

    from .shards import decode_jpegs

    sys.stderr.flush()
    saved = os.dup(2)
    pixels = None
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            pixels = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], 3)[0]
        except RuntimeError:  # a fatal libjpeg error: Pillow's libjpeg stops there too and says why
            pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        said = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
    damage = [line for line in said if line.startswith(_JPEG_DAMAGE)]
    return (None if pixels is None else pixels.permute(1, 2, 0).numpy()), (damage[0] if damage else None)


def _refuse_damaged(path, fmt: str | None, max_bytes: int = MAX_IMAGE_BYTES) -> None:
    if fmt != "JPEG":
        return
    try:
        damage = jpeg_damage(path, max_bytes)
    except OSError as e:
        raise BadImage(f"cannot read: {e.strerror or e}") from None
    if damage:
        raise BadImage(f"damaged: {damage}")


def check_damage(path, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> None:
    """Raise :class:`BadImage` for a file :func:`load_square` refuses before decoding it (see the module docstring)."""
    im = open_image(path, max_pixels, max_bytes)
    fmt = im.format
    im.close()
    _refuse_damaged(path, fmt, max_bytes)


def load_square(path, side: int, channels: int = 3, max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_IMAGE_BYTES) -> np.ndarray:
    """The file at ``path`` as a ``side x side x channels`` uint8 array (see the module docstring).

    The file is read once. A JPEG is decoded once where it can be: the damage check's decode (the
    loader's libjpeg-turbo) gives the pixels whenever Pillow would decode at full size anyway (no
    reduced DCT scale, no EXIF rotation, RGB or grey), and libjpeg-turbo's pixels are the same bytes
    Pillow's libjpeg-turbo gives (tests/test_data_prepare.py checks); otherwise Pillow decodes.
    """
    check_bytes(path, max_bytes)
    data = _read_some(path, max_bytes)
    source = im = _open(io.BytesIO(data), max_pixels)
    pixels = None
    if im.format == "JPEG":
        pixels, damage = decode_reporting(data)
        if damage:
            source.close()
            raise BadImage(f"damaged: {damage}")
    try:
        with warnings.catch_warnings():  # size is checked above; other notes become the BadImage reason or nothing
            warnings.simplefilter("ignore")
            if im.format == "JPEG":
                w, h = im.size
                scale = side / min(w, h)
                im.draft(im.mode, (max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))))
                if pixels is not None and im.size == (w, h) and _decoded_as_is(im, pixels, channels):
                    im = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]) if im.mode == "L" else pixels, im.mode)
            im = ImageOps.exif_transpose(im)
            im = square(to_mode(im, channels), side)
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except MemoryError:
        raise BadImage("cannot decode: out of memory") from None
    except Exception as e:  # a broken file raises anything from OSError to struct.error: skip it, never crash
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadImage(f"cannot decode: {msg}") from None
    finally:
        source.close()
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _decoded_as_is(im: Image.Image, pixels: np.ndarray, channels: int) -> bool:
    """Whether ``pixels`` (the damage check's RGB decode) are what Pillow would decode ``im`` to before
    :func:`to_mode`: a full-size YCbCr (``RGB``) or grey JPEG whose EXIF says no rotation."""
    if pixels.shape[:2] != (im.size[1], im.size[0]) or im.mode not in ("RGB", "L"):
        return False
    if im.mode == "RGB" and channels != 3:  # RGB -> L is Pillow's luma formula, not libjpeg's Y
        return False
    return im.getexif().get(0x0112, 1) == 1  # 0x0112: Orientation


def probe_size(path, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[int, int] | None:
    """``(width, height)`` from the header of ``path``, or None if it is not a usable image."""
    try:
        im = open_image(path, max_pixels, max_bytes)
    except BadImage:
        return None
    size = im.size
    im.close()
    return size
