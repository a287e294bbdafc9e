"""Shards: a fixed shuffled order that mixes classes, foreign WebDataset shards as a source, the JPEG decoder's fallback."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli.main import main as cli
from alexnet.data import generate_synth, make_loader, prepare, read_meta
from alexnet.data import shards
from alexnet.data.prepare import read_skipped
from alexnet.data.shards import decode_jpegs, scan_shard, select_decoder, shuffled_order
from alexnet.errors import UserError


# ------------------------------------------------------------------ order
def classes_per_shard(out, split: str = "train") -> list[int]:
    index = np.load(out / f"{split}.index.npy")
    return [len(np.unique(index[index[:, 0] == s, 3])) for s in np.unique(index[:, 0])]


def test_shards_of_a_ten_class_split_each_hold_several_classes(tmp_path):
    generate_synth(tmp_path / "src", classes=10, train_per_class=20, val_per_class=4, size=32, progress=False)
    summary = prepare(tmp_path / "src", tmp_path / "out", workers=1, progress=False, shard_size=20)
    meta = read_meta(tmp_path / "out")
    assert meta["shuffle_seed"] == 0 and len(meta["shards"]["train"]) == 10 and summary["splits"]["train"] == 200
    per_shard = classes_per_shard(tmp_path / "out")
    print(f"classes per 20-sample shard of a 10-class split: {per_shard} (source order: 1 each)")
    assert min(per_shard) >= 5  # in source order each shard held exactly one class
    # the labels are the source's, in the written order; the loader reads them as before
    index = np.load(tmp_path / "out" / "train.index.npy")
    source_labels = np.repeat(np.arange(10), 20)  # folder order: class by class
    assert index[:, 3].tolist() == source_labels[shuffled_order(200, "train", 0)].tolist()
    loader = make_loader(tmp_path / "out", "train", batch_size=50, train=True, num_workers=0)
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == sorted(index[:, 3].tolist())


def test_shuffled_order_is_fixed_and_seeded():
    a = shuffled_order(1000, "train", 0)
    assert sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, shuffled_order(1000, "train", 0))
    assert not np.array_equal(a, shuffled_order(1000, "train", 1))
    assert not np.array_equal(a, shuffled_order(1000, "val", 0))
    # pinned: the order must not change with numpy's generators (a resumed prepare relies on it)
    assert shuffled_order(10, "train", 0).tolist() == PINNED_ORDER


PINNED_ORDER = [4, 7, 8, 5, 1, 2, 6, 3, 9, 0]


def test_seed_is_a_prepare_setting(tmp_path):
    generate_synth(tmp_path / "src", classes=2, train_per_class=6, val_per_class=1, size=16, progress=False)
    prepare(tmp_path / "src", tmp_path / "a", workers=1, progress=False, seed=3)
    assert read_meta(tmp_path / "a")["shuffle_seed"] == 3
    with pytest.raises(UserError, match="other data or settings"):
        prepare(tmp_path / "src", tmp_path / "a", workers=1, progress=False, seed=4)
    assert cli(["prepare", str(tmp_path / "src"), str(tmp_path / "b"), "--seed", "3", "--workers", "1", "--no-progress"]) == 0
    assert (tmp_path / "a" / "train.index.npy").read_bytes() == (tmp_path / "b" / "train.index.npy").read_bytes()


# ------------------------------------------------------------------ foreign WebDataset shards
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 50, 210)]


def image_bytes(colour, fmt: str = "JPEG", size=(90, 70)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    """A tar as other tools write it (Python's tarfile: mtimes, GNU/PAX headers), not our ShardWriter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def foreign(tmp_path):
    """train shards named *-train-*.tar in the root, val shards in val/, keys with folders, a classes.txt."""
    root = tmp_path / "wds"
    for s in range(2):
        members = []
        for i in range(6):
            label = (i + s) % 3
            key = f"images/s{s}_{i:04d}"
            members += [(f"{key}.jpg", image_bytes(COLOURS[label])), (f"{key}.cls", f"{label}\n".encode())]
        write_tar(root / f"mydata-train-{s:06d}.tar", members)
    bad = [("x/nolabel.jpg", image_bytes(COLOURS[0])),
           ("x/onlylabel.cls", b"1"),
           ("x/badlabel.jpg", image_bytes(COLOURS[1])), ("x/badlabel.cls", b"one"),
           ("x/png.png", image_bytes(COLOURS[2], "PNG")), ("x/png.cls", b"2"),
           ("x/broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"), ("x/broken.cls", b"0")]
    write_tar(root / "mydata-train-000002.tar", bad)
    write_tar(root / "val" / "0.tar", [(f"v{i}.jpeg", image_bytes(COLOURS[i % 3])) for i in range(3)]
              + [(f"v{i}.cls", str(i % 3).encode()) for i in range(3)])
    (root / "classes.txt").write_text("n01 red thing\nn02 green thing\nn03 blue thing\n")
    return root


def test_foreign_webdataset_shards_prepare_and_load(foreign, tmp_path):
    out = tmp_path / "out"
    summary = prepare(foreign, out, workers=1, progress=False)
    meta = read_meta(out)
    assert meta["source"] == "webdataset" and summary["splits"] == {"train": 13, "val": 3}
    assert meta["classes"] == ["n01", "n02", "n03"] and meta["class_names"][1] == "green thing"
    skipped = {e["path"].rsplit(":", 1)[1]: e["reason"] for e in read_skipped(out)}
    assert skipped.keys() == {"x/nolabel", "x/onlylabel", "x/badlabel", "x/broken.jpg"}  # keys, or the member
    assert "no .cls" in skipped["x/nolabel"] and "no image" in skipped["x/onlylabel"]
    assert "not a class number" in skipped["x/badlabel"] and "cannot" in skipped["x/broken.jpg"]
    loader = make_loader(out, "val", batch_size=3, train=False, num_workers=0, normalize={"mean": [0, 0, 0], "std": [1, 1, 1]})
    (x, y), = list(loader)
    for image, label in zip(x, y.tolist()):  # each stored image has its label's colour
        assert np.allclose(image.mean((1, 2)).numpy() * 255, COLOURS[label], atol=6)
    train = make_loader(out, "train", batch_size=13, train=False, num_workers=0, normalize={"mean": [0, 0, 0], "std": [1, 1, 1]})
    (x, y), = list(train)
    for image, label in zip(x, y.tolist()):
        assert np.allclose(image.mean((1, 2)).numpy() * 255, COLOURS[label], atol=6)


def test_our_own_shards_are_a_webdataset_source(tmp_path):
    """What prepare writes reads back through the foreign-shard reader (any WebDataset reader can read it)."""
    generate_synth(tmp_path / "src", classes=3, train_per_class=4, val_per_class=2, size=80, progress=False)
    prepare(tmp_path / "src", tmp_path / "a", workers=1, progress=False, shard_size=5)
    prepare(tmp_path / "a", tmp_path / "b", workers=1, progress=False)
    a, b = read_meta(tmp_path / "a"), read_meta(tmp_path / "b")
    assert b["source"] == "webdataset" and b["splits"] == a["splits"] and b["skipped"] == 0
    labels = lambda d: sorted(np.load(d / "train.index.npy")[:, 3].tolist())  # noqa: E731
    assert labels(tmp_path / "a") == labels(tmp_path / "b")


def test_unusable_shard_folders_are_one_line_errors(tmp_path, capsys):
    write_tar(tmp_path / "a" / "shard-000000.tar", [("k.jpg", image_bytes(COLOURS[0])), ("k.cls", b"0")])
    write_tar(tmp_path / "b" / "val-000000.tar", [("k.jpg", image_bytes(COLOURS[0])), ("k.cls", b"0")])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train-000000.tar").write_bytes(b"not a tar file" * 100)
    for name, want in (("a", "no split in its name"), ("b", "no training shards"), ("c", "not a readable tar file")):
        assert cli(["prepare", str(tmp_path / name), str(tmp_path / f"out-{name}")]) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1, err


def test_scan_shard_indexes_foreign_members(foreign):
    members = scan_shard(foreign / "mydata-train-000000.tar")
    assert [(k, e) for k, e, _, _ in members[:2]] == [("images/s0_0000", "jpg"), ("images/s0_0000", "cls")]
    data = (foreign / "mydata-train-000000.tar").read_bytes()
    _, _, offset, size = members[1]
    assert data[offset:offset + size] == b"0\n"


# ------------------------------------------------------------------ the JPEG decoder
def jpegs(n: int = 4) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = np.clip(rng.normal(128, 40, (40, 48, 3)).cumsum(0) / 8 + 60, 0, 255).astype(np.uint8)
        out.append(torch.frombuffer(bytearray(_jpeg(a)), dtype=torch.uint8))
    return out


def _jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture()
def no_torchvision_decoder(monkeypatch):
    """torchvision.io (and torchcodec) gone: their imports fail, as after torchvision removes its codecs.
    Yields a function that brings torchvision.io back."""
    import torchvision.io

    original = torchvision.io
    for name in ("torchvision.io", "torchcodec", "torchcodec.decoders"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(shards, "_DECODER", None)
    yield lambda: monkeypatch.setitem(sys.modules, "torchvision.io", original)
    shards._DECODER = None  # the next user selects again, with torchvision back


def test_decoder_falls_back_to_pillow_with_the_same_pixels(no_torchvision_decoder):
    data = jpegs()
    assert shards.jpeg_decoder().name == "pillow"
    with_pillow = decode_jpegs(data, 3)
    grey = decode_jpegs(data[:1], 1)[0]
    shards._DECODER = None
    no_torchvision_decoder()  # torchvision back
    assert shards.jpeg_decoder().name == "torchvision"
    for a, b in zip(with_pillow, decode_jpegs(data, 3)):
        assert a.dtype == torch.uint8 and torch.equal(a, b)  # both libjpeg-turbo: identical
    assert torch.equal(grey, decode_jpegs(data[:1], 1)[0])


def test_loader_and_prepare_work_with_the_fallback(no_torchvision_decoder, tmp_path):
    generate_synth(tmp_path / "src", classes=2, train_per_class=4, val_per_class=2, size=96, progress=False)
    prepare(tmp_path / "src", tmp_path / "out", workers=1, progress=False)  # jpg shards; stats decoded by Pillow
    assert shards.jpeg_decoder().name == "pillow"
    x, y = next(iter(make_loader(tmp_path / "out", "train", batch_size=4, train=True, num_workers=0)))
    assert x.shape == (4, 3, 224, 224) and torch.isfinite(x).all()


def test_info_names_the_decoder_in_use(no_torchvision_decoder, capsys):
    assert cli(["info", "alexnet-small"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "JPEG decoder (prepare, loader): pillow"
    shards._DECODER = None
    no_torchvision_decoder()
    assert cli(["info", "alexnet-small", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jpeg_decoder"] == "torchvision"


def test_a_decoder_that_fails_its_probe_is_passed_over():
    def broken():
        def decode(data, channels, device=None):
            raise RuntimeError("Couldn't load the image extension")
        return shards.Decoder("broken", decode)

    assert select_decoder([broken, shards._pillow_decoder]).name == "pillow"
    with pytest.raises(RuntimeError, match="no JPEG decoder works here: broken: RuntimeError"):
        select_decoder([broken])


def test_decoding_shows_no_warning_and_hides_no_other():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchvision's deprecation notice would raise here
        decode_jpegs(jpegs(2), 3)
    # only that notice is filtered: any other warning raised while decoding still reaches the caller
    real = shards.jpeg_decoder()
    if real.name != "torchvision":
        pytest.skip("torchvision's decoder is not the one in use")
    io_module = sys.modules["torchvision.io"]
    original = io_module.decode_jpeg

    def noisy(*args, **kwargs):
        warnings.warn("something else", UserWarning)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(io_module, "decode_jpeg", noisy)
        decoder = shards._torchvision_decoder()
        with pytest.warns(UserWarning, match="something else"):
            decoder.decode(jpegs(1), 3)
