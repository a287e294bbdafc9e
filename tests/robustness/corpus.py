"""A generated corpus of malformed, odd and hostile image files (over 200), each with the handling it must get.

``build(root)`` writes ``root/train/{a,b}/...`` and returns one :class:`Item`
per entry: its path, its class of malformation (``kind``) and what
``prepare`` must do with it: ``kept``, ``skipped`` (listed in skipped.txt),
or ``either`` where the answer depends on exactly which bytes were hit (a
bit flip the decoder cannot notice is a valid file). Every entry must be
accounted for exactly once either way.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Item:
    path: str  # as os.fsdecode gives it (any bytes)
    kind: str
    expect: str  # kept | skipped | either | walked (a folder or link: not an image entry itself)


def photo(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    c = rng.uniform(0, 1, (3, 3))
    img = np.stack([c[i, 0] + c[i, 1] * x + c[i, 2] * y for i in range(3)], -1) * 120 + rng.uniform(0, 60, (1, 1, 3))
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def jpeg_declaring(data: bytes, w: int, h: int) -> bytes:
    """``data`` (a baseline JPEG) with its frame header rewritten to declare ``w x h``."""
    i = data.index(b"\xff\xc0")
    out = bytearray(data)
    out[i + 5:i + 7] = h.to_bytes(2, "big")
    out[i + 7:i + 9] = w.to_bytes(2, "big")
    return bytes(out)


def png_zeros(w: int, h: int) -> bytes:
    """A real zlib bomb: ``w x h`` grey zeros, a few hundred kB that inflate to ``w * h`` bytes."""
    z = zlib.compressobj(9)
    row = b"\0" * (w + 1)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def gif_declaring(w: int, h: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, w, h, 0)
            + b"\x02\x02\x44\x01\x00;")


def tiff_declaring(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8),
               (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, 1, w)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8 + 16) + b"\0" * 16 + ifd


def build(root: Path, seed: int = 14) -> list[Item]:
    rng = np.random.default_rng(seed)
    dirs = [root / "train" / "a", root / "train" / "b"]
    for d in dirs:
        d.mkdir(parents=True)
    items: list[Item] = []
    count = [0]

    def put(kind: str, name: str, data: bytes, expect: str) -> None:
        d = dirs[count[0] % 2]
        count[0] += 1
        path = d / name if isinstance(name, str) else Path(os.fsdecode(os.fsencode(d) + b"/" + name))
        path.write_bytes(data)
        items.append(Item(os.fsdecode(path), kind, expect))

    rgb = Image.fromarray(photo(72, 56, 1))
    base = {
        "jpeg": encode(rgb, "JPEG", quality=90),
        "jpeg-progressive": encode(rgb, "JPEG", quality=90, progressive=True),
        "png": encode(rgb, "PNG"),
        "gif": encode(rgb.convert("P"), "GIF"),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "webp": encode(rgb, "WEBP", quality=80),
    }
    # good files of each format, so both classes stay usable whatever else happens
    for fmt, data in base.items():
        put("good", f"good.{fmt}", data, "kept")

    # truncated at 14 points: refused wherever pixels are missing; a JPEG even when only its end marker is
    # (Pillow's rule); a PNG or GIF that lost only its end chunk still holds every pixel: either answer will do
    cuts = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97]
    for fmt, data in base.items():
        for k, frac in enumerate(cuts):
            put(f"truncated-{fmt}", f"cut{k:02d}.{fmt}", data[:max(1, int(len(data) * frac))], "skipped")
        end = "skipped" if fmt.startswith("jpeg") or fmt in ("bmp", "tiff") else "either"
        put(f"truncated-{fmt}", f"cut-1.{fmt}", data[:-1], end)
        put(f"truncated-{fmt}", f"cut-2.{fmt}", data[:-2], end)

    # bit flips inside the compressed data: refused when the decoder notices, else a valid (if wrong) image
    jpeg = base["jpeg"]
    start = jpeg.index(b"\xff\xda") + 16
    for k in range(30):
        d = bytearray(jpeg)
        for pos in rng.integers(start, len(jpeg) - 2, size=int(rng.integers(1, 8))):
            d[pos] ^= int(rng.integers(1, 256))
        put("bitflip-jpeg", f"flip{k:02d}.jpg", bytes(d), "either")
    png = base["png"]
    for k in range(10):
        d = bytearray(png)
        pos = int(rng.integers(60, len(png) - 16))
        d[pos] ^= 0x55
        put("bitflip-png", f"flip{k:02d}.png", bytes(d), "skipped")  # zlib and CRC checks catch it

    # not images at all
    put("wrong-magic", "png-magic.jpg", b"\x89PNG\r\n\x1a\n" + jpeg[8:], "skipped")
    put("wrong-magic", "jpeg-magic.png", b"\xff\xd8\xff\xe0" + png[4:], "skipped")
    put("wrong-magic", "gif-magic.jpg", b"GIF89a" + jpeg[6:], "skipped")
    put("wrong-magic", "bmp-magic.png", b"BM" + png[2:], "skipped")
    put("wrong-magic", "tiff-magic.jpg", b"II*\x00" + jpeg[4:], "skipped")
    put("wrong-magic", "riff-magic.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\0" * 30, "skipped")
    put("empty", "zero.jpg", b"", "skipped")
    put("empty", "one-byte.png", b"\x89", "skipped")
    put("empty", "soi-only.jpg", b"\xff\xd8\xff", "skipped")
    put("text-renamed", "notes.jpg", b"these are my notes, not a picture\n" * 20, "skipped")
    put("text-renamed", "data.png", b"a,b,c\n1,2,3\n" * 50, "skipped")
    put("text-renamed", "script.gif", b"#!/bin/sh\nrm -rf /\n", "skipped")
    put("html-renamed", "page.jpg", b"<!DOCTYPE html><html><body><img src=x.jpg></body></html>", "skipped")
    put("html-renamed", "error.webp", b"<html><head><title>404 Not Found</title></head></html>", "skipped")
    for k in range(5):
        put("random-bytes", f"noise{k}.jpg", rng.integers(0, 256, int(rng.integers(10, 5000)), dtype=np.uint8).tobytes(),
            "skipped")

    # decompression bombs: refused from the header, before any pixel is decoded
    put("bomb", "bomb.png", png_header_only(60000, 60000), "skipped")
    put("bomb", "bomb.jpg", jpeg_declaring(jpeg, 65000, 65000), "skipped")
    put("bomb", "bomb.gif", gif_declaring(65535, 65535), "skipped")
    put("bomb", "bomb.tiff", tiff_declaring(100000, 100000), "skipped")
    put("bomb", "bomb-zlib.png", png_zeros(10000, 9000), "skipped")  # 90 M pixels, just over the limit

    # damaged but decodable: the decoder's complaint decides (prepare and predict agree)
    put("damaged-jpeg", "tall-9000.jpg", jpeg_declaring(encode(Image.fromarray(photo(256, 256, 2)), "JPEG"), 9000, 9000),
        "skipped")
    tail = bytearray(jpeg)
    tail[start:-2] = rng.integers(0, 256, len(jpeg) - 2 - start, dtype=np.uint8).tobytes()
    put("damaged-jpeg", "noise-body.jpg", bytes(tail), "skipped")

    # odd but valid: all kept
    frames = [Image.fromarray(photo(40, 40, 10 + k)).convert("P") for k in range(3)]
    put("animated-gif", "anim.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "kept")
    put("animated-gif", "anim.webp", encode(Image.fromarray(photo(40, 40, 3)), "WEBP", save_all=True,
                                            append_images=[Image.fromarray(photo(40, 40, 4))]), "kept")
    tiny = Image.fromarray(photo(1, 1, 5))
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        put("1x1", f"one.{fmt.lower()}", encode(tiny, fmt), "kept")
    put("strip", "wide.png", encode(Image.fromarray(photo(20000, 20, 6)), "PNG"), "kept")
    put("strip", "tall.png", encode(Image.fromarray(photo(20, 20000, 7)), "PNG"), "kept")
    put("16-bit", "grey16.png", encode(Image.fromarray((np.arange(60 * 60, dtype=np.uint16) * 17).reshape(60, 60)), "PNG"),
        "kept")
    put("16-bit", "grey16.tiff", encode(Image.fromarray((np.arange(60 * 60, dtype=np.uint16) * 17).reshape(60, 60)),
                                        "TIFF"), "kept")
    put("cmyk", "cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG"), "kept")
    put("cmyk", "cmyk.tiff", encode(rgb.convert("CMYK"), "TIFF"), "kept")
    pal = rgb.convert("P")
    put("palette-transparent", "pal.png", encode(pal, "PNG", transparency=0), "kept")
    put("palette-transparent", "pal.gif", encode(pal, "GIF", transparency=0), "kept")
    put("alpha", "grey-alpha.png", encode(rgb.convert("LA"), "PNG"), "kept")
    put("alpha", "rgba.png", encode(rgb.convert("RGBA"), "PNG"), "kept")
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        put("exif-rotation", f"exif{orientation}.jpg", encode(rgb, "JPEG", exif=exif.tobytes()), "kept")
    put("webp", "lossless.webp", encode(rgb, "WEBP", lossless=True), "kept")
    put("webp", "alpha.webp", encode(rgb.convert("RGBA"), "WEBP"), "kept")
    for comp in ("tiff_lzw", "tiff_adobe_deflate", "packbits"):
        put("tiff", f"{comp}.tiff", encode(rgb, "TIFF", compression=comp), "kept")
    put("tiff", "pages.tiff", encode(rgb, "TIFF", save_all=True, append_images=[rgb.rotate(90)]), "kept")
    put("bmp", "pal8.bmp", encode(pal, "BMP"), "kept")
    put("bmp", "mono.bmp", encode(rgb.convert("1"), "BMP"), "kept")
    put("other-format", "x.ppm", encode(rgb, "PPM"), "kept")
    put("other-format", "x.tga", encode(rgb, "TGA"), "kept")
    put("other-format", "x.ico", encode(rgb.resize((32, 32)), "ICO"), "kept")

    # odd names, each a good image
    good = base["png"]
    for k, name in enumerate(["tab\there.png", "new\nline.png", b"latin1-\xe9t\xe9.png", b"\xff\xfe\xfd.png",
                              "-rf.png", "  spaces  .png", "日本語の画像.png", "x" * 200 + ".png",
                              "back\\slash.png", "quote\"'.png", "%s%n%x.png", "emoji-\U0001F600.png"]):
        put("odd-name", name, good, "kept")

    # links, FIFOs, folders that look like files
    a, b = dirs
    os.symlink(".", a / "loop-self")
    os.symlink("..", a / "loop-parent")
    os.symlink("../b", a / "other-class")
    items += [Item(os.fsdecode(a / n), "folder-link", "skipped") for n in ("loop-self", "loop-parent", "other-class")]
    os.symlink("nowhere.png", b / "dangling.png")
    items.append(Item(os.fsdecode(b / "dangling.png"), "dangling-link", "skipped"))
    os.symlink("good.jpeg", a / "link-to-good.jpg")
    items.append(Item(os.fsdecode(a / "link-to-good.jpg"), "file-link", "kept"))
    os.mkfifo(b / "fifo.jpg")
    items.append(Item(os.fsdecode(b / "fifo.jpg"), "fifo", "skipped"))
    (b / "folder.jpg").mkdir()
    (b / "folder.jpg" / "inside.png").write_bytes(good)
    items.append(Item(os.fsdecode(b / "folder.jpg" / "inside.png"), "folder-named-jpg", "kept"))
    return items
