"""load_square's one-decode path gives the pixels Pillow's own decode gives, byte for byte."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alexnet.data import images


def _jpeg(path, array, mode=None, orientation=None, **save):
    im = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif
    im.save(path, "JPEG", **save)
    return path


def _cases(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-6, 7, (300, 420, 3)), axis=1).clip(0, 255).astype(np.uint8)
    grey = smooth[:, :, 1].copy()
    big = np.kron(smooth[:120, :160], np.ones((6, 6, 1), np.uint8))  # 720 x 960
    return {
        "rgb 4:2:0": _jpeg(tmp_path / "a.jpg", smooth, quality=90),
        "rgb 4:4:4 progressive": _jpeg(tmp_path / "b.jpg", smooth, quality=95, subsampling=0, progressive=True),
        "grey": _jpeg(tmp_path / "c.jpg", grey, "L", quality=90),
        "rotated by EXIF": _jpeg(tmp_path / "d.jpg", smooth, quality=90, orientation=6),
        "large (draft)": _jpeg(tmp_path / "e.jpg", big, quality=90),  # reduced DCT scale at side 256: Pillow decodes
        "cmyk": _save_cmyk(tmp_path / "f.jpg", smooth),
    }


def _save_cmyk(path, array):
    Image.fromarray(array).convert("CMYK").save(path, "JPEG", quality=90)
    return path


@pytest.mark.parametrize("channels", [3, 1])
def test_one_decode_equals_pillows_decode(tmp_path, monkeypatch, channels):
    cases = _cases(tmp_path)
    fast = {k: images.load_square(p, 256, channels) for k, p in cases.items()}
    used = []
    real = images._decoded_as_is
    monkeypatch.setattr(images, "_decoded_as_is", lambda *a: used.append(real(*a)) and False)
    slow = {k: images.load_square(p, 256, channels) for k, p in cases.items()}
    assert any(used), "the one-decode path was never taken"
    for k in cases:
        assert fast[k].shape == (256, 256, channels)
        np.testing.assert_array_equal(fast[k], slow[k], err_msg=k)


def test_the_file_is_read_once(tmp_path, monkeypatch):
    path = _cases(tmp_path)["rgb 4:2:0"]
    reads = []
    real = images._read
    monkeypatch.setattr(images, "_read", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    images.load_square(path, 256)
    assert len(reads) == 1


def test_damaged_jpeg_still_refused(tmp_path):
    path = _cases(tmp_path)["rgb 4:2:0"]
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start:-2] = np.random.default_rng(1).integers(0, 256, len(data) - 2 - start, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(data))
    with pytest.raises(images.BadImage, match="damaged"):
        images.load_square(bad, 256)
    assert images.jpeg_damage(bad) is not None
    assert images.decode_reporting(io.BytesIO(path.read_bytes()).getvalue())[1] is None
