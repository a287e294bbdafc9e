"""prepare: bad files skipped and listed, every mode to RGB, statistics exact, resumable, atomic."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli.main import main
from alexnet.data import load_stats, prepare, read_meta
from alexnet.data.prepare import read_skipped
from alexnet.data.shards import ShardWriter, decode_jpegs, scan_shard, shuffled_order
from alexnet.errors import UserError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (16-bit RGB, or a header that lies about its size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def photo(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly), h x w x 3 uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    c = rng.uniform(0, 1, (3, 3))
    img = np.stack([c[i, 0] + c[i, 1] * x + c[i, 2] * y for i in range(3)], -1) * 120 + rng.uniform(0, 60, (1, 1, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def mixed_folder(root: Path) -> tuple[dict[str, str], list[str]]:
    """train/{a,b}/ with one good file of each kind and each bad kind; returns (bad name -> reason word, good names)."""
    a, b = root / "train" / "a", root / "train" / "b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    good = []

    def put(folder, name, data):
        (folder / name).write_bytes(data)
        good.append(name)

    put(a, "rgb.jpg", jpeg_bytes(Image.fromarray(photo(96, 72, 0))))
    put(a, "gray.png", _png(Image.fromarray(photo(80, 80, 1)[:, :, 0], "L")))
    put(a, "cmyk.jpg", jpeg_bytes(Image.fromarray(photo(90, 70, 2)).convert("CMYK")))
    rgba = Image.fromarray(photo(80, 80, 3)).convert("RGBA")
    put(b, "rgba.png", _png(rgba))
    put(b, "gray16.png", _png(Image.fromarray((np.arange(80 * 80, dtype=np.uint16) * 10).reshape(80, 80))))
    rows = b"".join(b"\0" + np.full((70, 3), 40000, ">u2").tobytes() for _ in range(70))
    put(b, "rgb16.png", png_bytes(70, 70, 16, 2, rows))
    put(b, "palette.gif", _gif(Image.fromarray(photo(80, 80, 4)).convert("P")))
    bad = {}
    (a / "zero.jpg").write_bytes(b"")
    bad["zero.jpg"] = "empty"
    (a / "text.jpg").write_text("this is not a JPEG at all\n")
    bad["text.jpg"] = "not an image"
    full = jpeg_bytes(Image.fromarray(photo(96, 96, 5)))
    (b / "truncated.jpg").write_bytes(full[: len(full) // 2])
    bad["truncated.jpg"] = "decode"
    corrupt = bytearray(full)  # a valid header, then noise in the compressed data
    start = full.index(b"\xff\xda") + 20
    corrupt[start:] = np.random.default_rng(0).integers(0, 256, len(corrupt) - start, dtype=np.uint8).tobytes()
    (b / "corrupt.jpg").write_bytes(bytes(corrupt))
    bad["corrupt.jpg"] = "damaged"
    (a / "garbage.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    bad["garbage.jpg"] = "not an image"
    (b / "bomb.png").write_bytes(png_bytes(60000, 60000, 8, 0, b"\0" * 10))  # declares 3.6 G pixels
    bad["bomb.png"] = "decompression bomb"
    return bad, good


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _gif(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "GIF")
    return buf.getvalue()


def read_samples(out: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All stored images of a split, N x H x W x C, decoded as the loader does, and labels, in the order of the
    source listing (prepare writes them shuffled; each sample's key is <split>_<index in the source>)."""
    meta = read_meta(out)
    index = np.load(out / f"{split}.index.npy")
    size, c = meta["size"], meta["channels"]
    source_index = {}  # (shard, end of the image member) -> index in the source; the pixels end where the member does
    for number, name in enumerate(meta["shards"][split]):
        for key, ext, offset, n in scan_shard(out / name):
            if ext in ("jpg", "npy"):
                source_index[number, offset + n] = int(key.rsplit("_", 1)[1])
    images, source = [], []
    for shard, offset, n, _ in index:
        data = (out / meta["shards"][split][shard]).read_bytes()[offset:offset + n]
        if meta["format"] == "jpg":
            images.append(decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], c)[0].permute(1, 2, 0).numpy())
        else:
            images.append(np.frombuffer(data, np.uint8).reshape(size, size, c))
        source.append(source_index[shard, offset + n])
    order = np.argsort(source, kind="stable")
    return np.stack(images)[order], index[order, 3]


def reference_stats(images: np.ndarray) -> dict:
    """The statistics by plain float64 numpy, in pixel units (0..255) as stats.npz holds them."""
    x = images.astype(np.float64)
    pixels = x.reshape(-1, x.shape[-1])
    cov = np.atleast_2d(np.cov(pixels, rowvar=False, bias=True))
    eigval, eigvec = np.linalg.eigh(cov)
    return {"mean_image": x.mean(0), "mean_rgb": pixels.mean(0), "cov": cov, "eigval": eigval[::-1], "eigvec": eigvec[:, ::-1]}


def check_stats(out: Path, images: np.ndarray) -> None:
    got, ref = load_stats(out), reference_stats(images)
    # ours sums integers exactly; the reference's float64 sums of ~1e6 terms round at ~1e-12 (of 255, 255^2)
    np.testing.assert_allclose(got["mean_image"], ref["mean_image"], rtol=0, atol=255e-10)
    np.testing.assert_allclose(got["mean_rgb"], ref["mean_rgb"], rtol=0, atol=255e-10)
    np.testing.assert_allclose(got["eigval"], ref["eigval"], rtol=1e-8, atol=255**2 * 1e-12)
    # eigenvectors up to sign; the stored sign makes the largest component positive
    dots = np.abs(np.sum(got["eigvec"] * ref["eigvec"], axis=0))
    np.testing.assert_allclose(dots, 1.0, atol=1e-8)
    np.testing.assert_allclose(got["eigvec"] @ np.diag(got["eigval"]) @ got["eigvec"].T, ref["cov"], atol=255**2 * 1e-10)


# ------------------------------------------------------------------ bad files and modes
def test_prepare_keeps_good_files_and_lists_each_bad_one(tmp_path):
    bad, good = mixed_folder(tmp_path / "src")
    summary = prepare(tmp_path / "src", tmp_path / "out", size=48, workers=2, progress=False)
    assert summary["splits"] == {"train": len(good)} and summary["skipped"] == len(bad)
    listed = {os.path.basename(e["path"]): e["reason"] for e in read_skipped(tmp_path / "out")}
    assert set(listed) == set(bad)
    for name, word in bad.items():
        assert word in listed[name], (name, listed[name])
    meta = read_meta(tmp_path / "out")
    assert meta["size"] == 48 and meta["channels"] == 3 and meta["format"] == "raw" and meta["skipped"] == len(bad)
    images, labels = read_samples(tmp_path / "out", "train")
    assert images.shape == (len(good), 48, 48, 3)
    check_stats(tmp_path / "out", images)


def test_modes_become_rgb_as_documented(tmp_path):
    src = tmp_path / "src" / "train" / "x"
    src.mkdir(parents=True)
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., 0] = 255  # red hidden under full transparency
    Image.fromarray(rgba, "RGBA").save(src / "a_transparent.png")
    Image.fromarray(np.full((80, 80), 65535, np.uint16)).save(src / "b_white16.png")
    Image.fromarray(np.full((80, 80), 32768, np.uint16)).save(src / "c_mid16.png")
    Image.new("CMYK", (80, 80), (0, 255, 255, 0)).save(src / "d_cmyk_red.jpg", quality=100)
    Image.new("L", (80, 80), 77).save(src / "e_gray.png")
    # EXIF orientation 6 (rotate 90 clockwise to display): a wide image, red on its left half, shows tall, red on top
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, :60] = (255, 0, 0)
    wide[:, 60:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(src / "f_exif.png", exif=exif.tobytes())
    (src.parent / "y").mkdir()
    Image.new("RGB", (80, 80)).save(src.parent / "y" / "other_class.png")  # a classifier needs two classes
    prepare(tmp_path / "src", tmp_path / "out", size=40, workers=1, progress=False)
    images, _ = read_samples(tmp_path / "out", "train")
    assert (images[0] == 255).all()  # composited over white, not red
    assert (images[1] == 255).all()  # 16-bit full scale -> 255
    assert (np.abs(images[2].astype(int) - 128) <= 1).all()  # 16-bit half scale -> 128
    r, g, bl = images[3].reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and bl < 60  # CMYK red stays red
    assert (images[4] == 77).all()  # grey copied to the three channels
    top, bottom = images[5][:10].reshape(-1, 3).mean(0), images[5][-10:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # EXIF applied before the crop


# ------------------------------------------------------------------ jpg shards, layout, statistics
def test_jpeg_shards_webdataset_layout_and_stats(tmp_path):
    src = tmp_path / "src"
    for s, (split, n) in enumerate((("train", 5), ("val", 2))):
        for k, cls in enumerate(("c0", "c1")):
            (src / split / cls).mkdir(parents=True)
            for i in range(n):
                image = Image.fromarray(photo(300 + 7 * i, 200 + 11 * i, 100 * s + 10 * k + i))
                image.save(src / split / cls / f"{i}.jpg", quality=90)
    summary = prepare(src, tmp_path / "out", workers=2, progress=False, shard_size=3)
    out = tmp_path / "out"
    meta = read_meta(out)
    assert summary["splits"] == {"train": 10, "val": 4} and meta["splits"] == {"train": 10, "val": 4}
    assert meta["size"] == 256 and meta["format"] == "jpg" and meta["source"] == "folder" and meta["version"] == 1
    assert meta["classes"] == ["c0", "c1"] and meta["class_names"] == ["c0", "c1"]
    assert meta["shards"]["train"] == [f"train-{k:06d}.tar" for k in range(4)]  # 3 + 3 + 3 + 1
    assert meta["shuffle_seed"] == 0
    # WebDataset layout: <key>.jpg then <key>.cls, the label as ASCII; keys are <split>_<index in the source>,
    # in the fixed shuffled order
    order = shuffled_order(10, "train", 0)
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    with tarfile.open(out / "train-000000.tar") as tar:
        names = tar.getnames()
        assert names == [f"train_{i:08d}.{ext}" for i in order[:3] for ext in ("jpg", "cls")]
        assert tar.extractfile(f"train_{order[0]:08d}.cls").read() == str(int(order[0] >= 5)).encode()
        im = Image.open(io.BytesIO(tar.extractfile(f"train_{order[0]:08d}.jpg").read()))
        assert im.size == (256, 256) and im.format == "JPEG"
    # the index points at exactly the .jpg members
    index = np.load(out / "train.index.npy")
    members = [m for m in scan_shard(out / "train-000001.tar") if m[1] == "jpg"]
    assert [[o, n] for _, _, o, n in members] == index[index[:, 0] == 1][:, 1:3].tolist()
    assert index[:, 3].tolist() == [int(i >= 5) for i in order]  # sample ids follow the written order
    images, labels = read_samples(out, "train")
    assert labels.tolist() == [0] * 5 + [1] * 5
    check_stats(out, images)  # the statistics of the JPEGs as the loader decodes them


def test_idx_prepare_one_channel_stats(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)
    for prefix, n in (("train", 23), ("t10k", 5)):
        hdr = bytes([0, 0, 8, 3]) + struct.pack(">3I", n, 28, 28)
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(hdr + images[:n].tobytes()))
        lab = bytes([0, 0, 8, 1]) + struct.pack(">I", n) + (np.arange(n) % 4).astype(np.uint8).tobytes()
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab))
    prepare(tmp_path, tmp_path / "out", workers=1, progress=False)
    meta = read_meta(tmp_path / "out")
    assert meta["channels"] == 1 and meta["size"] == 28 and meta["format"] == "raw" and meta["source"] == "idx"
    assert meta["splits"] == {"train": 23, "val": 5}
    stored, labels = read_samples(tmp_path / "out", "train")
    np.testing.assert_array_equal(stored[..., 0], images)  # raw: lossless
    np.testing.assert_array_equal(labels, np.arange(23) % 4)
    stats = load_stats(tmp_path / "out")
    assert stats["mean_image"].shape == (28, 28, 1) and stats["eigvec"].tolist() == [[1.0]]
    np.testing.assert_allclose(stats["eigval"], [np.var(images.astype(np.float64))], rtol=1e-12)
    check_stats(tmp_path / "out", stored)


# ------------------------------------------------------------------ resumable, atomic
def small_folder(root: Path, n: int = 12) -> None:
    for i in range(n):
        d = root / "train" / f"k{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(50, 40, i)).save(d / f"{i}.png")


def snapshot(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "meta.json"}


def test_killed_prepare_resumes_without_half_shards(tmp_path, monkeypatch):
    small_folder(tmp_path / "src")
    prepare(tmp_path / "src", tmp_path / "clean", workers=1, progress=False, shard_size=2)
    clean = snapshot(tmp_path / "clean")

    real_commit, calls = ShardWriter.commit, []

    def dying_commit(self):
        calls.append(self.path.name)
        if len(calls) == 3:  # killed while the third shard is being written
            raise KeyboardInterrupt
        real_commit(self)

    monkeypatch.setattr(ShardWriter, "commit", dying_commit)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "src", out, workers=1, progress=False, shard_size=2)
    assert not (out / "meta.json").exists()  # not a prepared folder until the end
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert not list(out.glob(".*.tmp"))
    # a tar renamed into place whose part file never was: not counted as done
    (out / ".prepare" / "train-000001.npz").unlink()
    (out / ".train-000002.tar.XXXX.tmp").write_bytes(b"half a shard")  # as a SIGKILL leaves it
    monkeypatch.setattr(ShardWriter, "commit", real_commit)
    summary = prepare(tmp_path / "src", out, workers=1, progress=False, shard_size=2)
    assert summary["resumed_shards"] == 1 and summary["processed"] == 10
    assert not list(out.glob(".*.tmp"))
    assert snapshot(out) == clean  # byte for byte what an uninterrupted run writes
    again = prepare(tmp_path / "src", out, workers=1, progress=False, shard_size=2)
    assert again["resumed_shards"] == 6 and again["processed"] == 0


def test_sigkill_mid_prepare_then_resume(tmp_path):
    """A real kill -9 of prepare and its worker processes, half way: the rerun finishes it, byte for byte."""
    import signal
    import subprocess
    import sys

    src = tmp_path / "src"
    for i in range(200):
        d = src / "train" / f"k{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(150, 110, i)).save(d / f"{i}.jpg", quality=90)
    code = ("import sys; from alexnet.data import prepare; "
            "prepare(sys.argv[1], sys.argv[2], workers=2, progress=False, shard_size=4)")
    prepare(src, tmp_path / "clean", workers=2, progress=False, shard_size=4)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), str(out)], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list((out / ".prepare").glob("train-*.npz"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers, mid-shard
    finally:
        proc.wait()
    done = len(list((out / ".prepare").glob("train-*.npz")))
    assert not (out / "meta.json").exists() and 2 <= done < 50  # killed with most of its 50 shards to do
    summary = prepare(src, out, workers=2, progress=False, shard_size=4)
    assert summary["resumed_shards"] >= done - 1 and summary["splits"] == {"train": 200}
    assert snapshot(out) == snapshot(tmp_path / "clean")


def test_prepare_refuses_other_data_in_out(tmp_path):
    small_folder(tmp_path / "src")
    prepare(tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    with pytest.raises(UserError, match="other data or settings"):
        prepare(tmp_path / "src", tmp_path / "out", size=32, workers=1, progress=False)  # 40 px images -> 32
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        prepare(tmp_path / "src", tmp_path / "foreign", workers=1, progress=False)


def test_all_bad_is_a_user_error(tmp_path, capsys):
    for c in ("x", "y"):
        d = tmp_path / "src" / "train" / c
        d.mkdir(parents=True)
        (d / "a.jpg").write_text("nope")
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "no usable training images" in capsys.readouterr().err


def test_cli_prepare_summary(tmp_path, capsys):
    small_folder(tmp_path / "src")
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--workers", "2", "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert "12 train" in line and "none skipped" in line and "50x50" not in line and "40x40x3 (raw)" in line


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist(tmp_path):
    t0 = time.perf_counter()
    summary = prepare(FASHION, tmp_path / "fm", progress=False)
    elapsed = time.perf_counter() - t0
    meta = read_meta(tmp_path / "fm")
    assert meta["splits"] == {"train": 60000, "val": 10000}
    assert meta["size"] == 28 and meta["channels"] == 1 and meta["format"] == "raw" and meta["source"] == "idx"
    assert meta["class_names"][0] == "T-shirt/top" and summary["skipped"] == 0
    stats = load_stats(tmp_path / "fm")
    assert 0.28 < float(stats["mean_rgb"][0]) / 255 < 0.29  # Fashion-MNIST's well-known mean, 0.2860 of white
    assert elapsed < 120


def test_prepare_cifar_and_ilsvrc_sources(tmp_path):
    from source_writers import fake_ilsvrc, write_cifar

    rng = np.random.default_rng(0)
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    write_cifar(cifar / "data_batch_1", data, [0, 1, 2, 3, 4, 5])
    write_cifar(cifar / "test_batch", data[:2], [9, 8])
    prepare(cifar, tmp_path / "c", workers=1, progress=False)
    meta = read_meta(tmp_path / "c")
    assert meta["source"] == "cifar10" and meta["splits"] == {"train": 6, "val": 2} and meta["size"] == 32
    stored, labels = read_samples(tmp_path / "c", "train")
    np.testing.assert_array_equal(stored, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # raw: lossless
    fake_ilsvrc(tmp_path / "ilsvrc", truth="devkit")
    summary = prepare(tmp_path / "ilsvrc", tmp_path / "i", workers=2, progress=False)
    meta = read_meta(tmp_path / "i")
    assert meta["source"] == "ilsvrc2012" and meta["splits"] == {"train": 6, "val": 5} and summary["skipped"] == 1
    assert meta["classes"] == ["n01440764", "n02119789", "n04596742"] and meta["class_names"][2] == "wok"
    assert "no ground-truth label" in (tmp_path / "i" / "skipped.txt").read_text()


def test_any_file_name_survives_prepare_and_skipped_txt(tmp_path):
    """A name that is not UTF-8 was a UnicodeEncodeError; a tab or newline broke skipped.txt."""
    from alexnet.data.prepare import read_skipped

    for c in ("a", "b"):
        (tmp_path / "src" / "train" / c).mkdir(parents=True)
    good = _png(Image.fromarray(photo(40, 40, 0)))
    root = os.fsencode(tmp_path / "src" / "train")
    for name in (b"a/\xff\xfe.png", b"a/tab\there.png", b"b/new\nline.png"):
        with open(root + b"/" + name, "wb") as f:
            f.write(good)
    for name in (b"a/bad\xff.png", b"b/bad\tname\n.png"):
        with open(root + b"/" + name, "wb") as f:
            f.write(b"not an image")
    summary = prepare(tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    assert summary["splits"] == {"train": 3} and summary["skipped"] == 2
    lines = (tmp_path / "out" / "skipped.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    entries = read_skipped(tmp_path / "out")
    names = sorted(bytes.fromhex(e["path_hex"]) if "path_hex" in e else os.fsencode(e["path"]) for e in entries)
    assert names == sorted([root + b"/a/bad\xff.png", root + b"/b/bad\tname\n.png"])
    assert all(e["split"] == "train" and "not an image" in e["reason"] for e in entries)
    # a rerun recognises its own unfinished or finished work (the fingerprint hashes names as bytes)
    assert prepare(tmp_path / "src", tmp_path / "out", workers=1, progress=False)["processed"] == 0


def test_one_usable_class_is_refused(tmp_path):
    (tmp_path / "src" / "train" / "a").mkdir(parents=True)
    (tmp_path / "src" / "train" / "b").mkdir(parents=True)
    Image.fromarray(photo(40, 40, 0)).save(tmp_path / "src" / "train" / "a" / "x.png")
    (tmp_path / "src" / "train" / "b" / "y.png").write_text("broken")
    with pytest.raises(UserError, match="only class a has usable training images"):
        prepare(tmp_path / "src", tmp_path / "out", workers=1, progress=False)
