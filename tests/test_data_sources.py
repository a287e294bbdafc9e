"""Readers: every source kind on fixture files written here (no download, no real dataset)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from alexnet.cli.main import main
from alexnet.data import open_source
from alexnet.data.matlab import loadmat
from alexnet.data.sources import FASHION_NAMES, read_idx
from alexnet.errors import UserError
from source_writers import SYNSETS, VAL_TRUTH, fake_ilsvrc, tiny_jpeg, write_cifar, write_idx, write_mat


# ------------------------------------------------------------------ writers


# MATLAB 5 writer, enough for a fake devkit meta.mat (the reader's other half)


# ------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_gz_or_raw(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0, 2, 2], np.uint8)
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", images, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", labels, gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", images[:3], gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels[:3], gz)
    src = open_source(tmp_path)
    assert src.kind == "idx" and src.channels == 1
    assert set(src.splits) == {"train", "val"}  # t10k is the val split
    np.testing.assert_array_equal(src.splits["train"].images[..., 0], images)
    np.testing.assert_array_equal(src.splits["train"].labels, labels)
    np.testing.assert_array_equal(src.splits["val"].images[..., 0], images[:3])
    assert src.classes == ["0", "1", "2"]


def test_idx_wider_types_and_fashion_names(tmp_path):
    a = np.arange(-3, 9, dtype=">i4").reshape(3, 4)
    write_idx(tmp_path / "x.idx", a, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"), a)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8), gz=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8), gz=True)
    src = open_source(folder)
    assert src.class_names == FASHION_NAMES and src.classes == [str(i) for i in range(10)]


def test_idx_truncated_and_bad_magic_are_user_errors(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 3, 3), np.uint8), gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        read_idx(p)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(UserError, match="magic"):
        read_idx(tmp_path / "bad")


# ------------------------------------------------------------------ CIFAR
def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    d1, d2, dt = (rng.integers(0, 256, (n, 3072), dtype=np.uint8) for n in (4, 3, 2))
    write_cifar(root / "data_batch_1", d1, [0, 1, 2, 9])
    write_cifar(root / "data_batch_2", d2, [3, 4, 5])
    write_cifar(root / "test_batch", dt, [7, 8])
    names = [f"name{i}".encode() for i in range(10)]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    src = open_source(tmp_path)  # found one level down
    assert src.kind == "cifar10" and src.class_names == [f"name{i}" for i in range(10)]
    train = src.splits["train"]
    assert train.images.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(train.labels, [0, 1, 2, 9, 3, 4, 5])
    # CIFAR rows are the red plane, then green, then blue, each 32 x 32 row-major
    img = train.images[5]
    assert img[0, 0, 0] == d2[1, 0] and img[0, 1, 0] == d2[1, 1] and img[1, 0, 1] == d2[1, 1024 + 32]
    assert img[31, 31, 2] == d2[1, 3071]
    np.testing.assert_array_equal(src.splits["val"].labels, [7, 8])


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    write_cifar(tmp_path / "train", rng.integers(0, 256, (5, 3072), dtype=np.uint8), [0, 99, 5, 5, 1],
                key="fine_labels", extra={b"coarse_labels": [0, 19, 1, 1, 0]})
    write_cifar(tmp_path / "test", rng.integers(0, 256, (2, 3072), dtype=np.uint8), [3, 4],
                key="fine_labels", extra={b"coarse_labels": [0, 0]})
    names = [f"fine{i}".encode() for i in range(100)]
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}, protocol=2))
    src = open_source(tmp_path)
    assert src.kind == "cifar100" and len(src.classes) == 100 and src.class_names[99] == "fine99"
    np.testing.assert_array_equal(src.splits["train"].labels, [0, 99, 5, 5, 1])
    assert src.splits["val"].images.shape == (2, 32, 32, 3)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar(tmp_path / "data_batch_1", np.zeros((1, 3072), np.uint8), [0], extra={b"x": _Evil()})
    write_cifar(tmp_path / "test_batch", np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(UserError, match="refusing"):
        open_source(tmp_path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


# ------------------------------------------------------------------ folders
def test_imagenet_style_folder(tmp_path):
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for cls in ("zebra", "apple", "mango"):
            for i in range(n):
                tiny_jpeg(tmp_path / split / cls / f"{i}.jpg")
    tiny_jpeg(tmp_path / "train" / "apple" / "nested" / "deep.jpg")  # recursive, like ImageFolder
    (tmp_path / "train" / "apple" / ".hidden.jpg").write_bytes(b"")  # hidden files are not listed
    src = open_source(tmp_path)
    assert src.kind == "folder" and src.classes == ["apple", "mango", "zebra"] and src.class_names == src.classes
    assert len(src.splits["train"]) == 10 and len(src.splits["val"]) == 6 and len(src.splits["test"]) == 3
    labels = [label for _, label in src.splits["train"].files]
    assert labels == [0] * 4 + [1] * 3 + [2] * 3


def test_folder_val_class_must_be_a_train_class(tmp_path):
    tiny_jpeg(tmp_path / "train" / "a" / "0.jpg")
    tiny_jpeg(tmp_path / "val" / "b" / "0.jpg")
    with pytest.raises(UserError, match="not in train"):
        open_source(tmp_path)


@pytest.mark.parametrize("make", ["missing", "empty", "file", "unknown"])
def test_bad_sources_are_one_line_errors(tmp_path, capsys, make):
    src = tmp_path / "src"
    if make == "empty":
        src.mkdir()
    elif make == "file":
        src.write_text("x")
    elif make == "unknown":
        src.mkdir()
        (src / "notes.txt").write_text("x")
    with pytest.raises(UserError):
        open_source(src)
    assert main(["prepare", str(src), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnet prepare: error:") and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------ ILSVRC-2012
# Three synsets whose devkit ids are NOT in sorted-wnid order, as in the real devkit.


@pytest.mark.parametrize("variant", [dict(truth="devkit"), dict(truth="devkit", compressed=False, chars16=True),
                                     dict(truth="devkit", big_endian=True, compressed=False), dict(truth="loc")])
def test_ilsvrc_layout_validation_labels(tmp_path, variant):
    fake_ilsvrc(tmp_path, **variant)
    src = open_source(tmp_path)
    assert src.kind == "ilsvrc2012"
    assert src.classes == ["n01440764", "n02119789", "n04596742"]  # sorted synset ids, as torchvision
    assert src.class_names == ["tench, Tinca tinca", "kit fox, Vulpes macrotis", "wok"]
    val = src.splits["val"]
    got = {os.path.basename(p): src.classes[label] for p, label in val.files}
    wnid = {i: w for w, i, _ in SYNSETS}
    assert got == {f"ILSVRC2012_val_{k + 1:08d}.JPEG": wnid[v] for k, v in enumerate(VAL_TRUTH)}
    assert [os.path.basename(p) for p, _ in val.skipped] == ["ILSVRC2012_val_00000006.JPEG"]


def test_ilsvrc_kaggle_layout(tmp_path):
    base = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    fake_ilsvrc(base, truth="loc")
    for f in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        (base / f).rename(tmp_path / f)
    src = open_source(tmp_path)
    assert src.kind == "ilsvrc2012" and len(src.splits["val"]) == 5 and src.class_names[2] == "wok"


def test_ilsvrc_flat_val_without_ground_truth(tmp_path):
    fake_ilsvrc(tmp_path, truth="devkit")
    (tmp_path / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").unlink()
    with pytest.raises(UserError, match="no ground truth"):
        open_source(tmp_path)


def test_matlab_reader_shapes(tmp_path):
    write_mat(tmp_path / "m.mat", {"s": [{"a": 7, "b": "xy"}, {"a": 300, "b": ""}], "t": "hello"}, compressed=True)
    m = loadmat(tmp_path / "m.mat")
    assert m["t"] == "hello"
    assert [int(x["a"][0, 0]) for x in m["s"]] == [7, 300] and m["s"][0]["b"] == "xy" and m["s"][1]["b"] == ""
    (tmp_path / "bad.mat").write_bytes(b"\0" * 200)
    with pytest.raises(ValueError):
        loadmat(tmp_path / "bad.mat")


# ------------------------------------------------------------------ links, odd entries, odd names
def test_folder_links_inside_a_class_are_listed_not_followed(tmp_path):
    """`ln -s . train/circle/again` stored each image 41 times; `ln -s .. up` relabelled other classes."""
    for c in ("circle", "square"):
        for i in range(3):
            tiny_jpeg(tmp_path / "train" / c / f"{i}.jpg")
    circle = tmp_path / "train" / "circle"
    os.symlink(".", circle / "again")
    os.symlink("..", circle / "up")
    os.symlink("../square", circle / "sideways")
    (circle / "deeper").mkdir()
    tiny_jpeg(circle / "deeper" / "real.jpg")  # a real subfolder is still read
    os.symlink("missing.jpg", circle / "dangling.jpg")
    os.mkfifo(circle / "pipe.jpg")
    src = open_source(tmp_path)
    train = src.splits["train"]
    names = sorted(os.path.relpath(p, tmp_path) for p, _ in train.files)
    assert names == ["train/circle/0.jpg", "train/circle/1.jpg", "train/circle/2.jpg", "train/circle/deeper/real.jpg",
                     "train/square/0.jpg", "train/square/1.jpg", "train/square/2.jpg"]
    assert [label for p, label in train.files if "/square/" in p] == [1, 1, 1]
    skipped = {os.path.basename(p): reason for p, reason in train.skipped}
    assert set(skipped) == {"again", "up", "sideways", "dangling.jpg", "pipe.jpg"}
    assert "not followed" in skipped["up"] and "regular file" in skipped["pipe.jpg"]


def test_class_folder_links_are_followed_once(tmp_path):
    tiny_jpeg(tmp_path / "elsewhere" / "x.jpg")
    tiny_jpeg(tmp_path / "src" / "train" / "b" / "y.jpg")
    os.symlink(tmp_path / "elsewhere", tmp_path / "src" / "train" / "a")
    assert len(open_source(tmp_path / "src").splits["train"].files) == 2
    os.symlink(tmp_path / "elsewhere", tmp_path / "src" / "train" / "c")
    with pytest.raises(UserError, match="same folder"):
        open_source(tmp_path / "src")


def test_file_list_reads_back_what_was_listed():
    from alexnet.data.sources import FileList

    pairs = [(f"/data/train/n{i % 7:08d}/img_{i}.JPEG", i % 7) for i in range(70_000)]  # past one flush
    pairs.append((os.fsdecode(b"/data/train/n1/latin1-\xe9.jpg"), 3))  # not UTF-8: kept byte for byte
    files = FileList(pairs[:10])
    files.extend(pairs[10:])
    assert len(files) == len(pairs) and list(files) == pairs
    assert files[-1] == pairs[-1] and files[12345] == pairs[12345]
    assert os.fsencode(files[-1][0]) == b"/data/train/n1/latin1-\xe9.jpg"
    np.testing.assert_array_equal(files.labels(), [label for _, label in pairs])
    with pytest.raises(IndexError):
        files[len(pairs)]
    assert not FileList() and len(FileList()) == 0


def test_listing_holds_no_python_object_per_file(tmp_path):
    """prepare's memory must not grow with the file count by a tuple and a string per file (1.28M of them
    were ~250 MB per process, copied into each worker): the memory blocks a listing keeps are as many
    for 8,000 files as for 2,000 (a structural check of what the peak RSS measures at scale)."""
    import tracemalloc

    def blocks_kept_by_listing(n: int) -> int:
        root = tmp_path / f"n{n}"
        for c in range(4):
            d = root / "train" / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n // 4):
                (d / f"{i}.jpg").touch()
        tracemalloc.start()
        try:
            src = open_source(root)
            kept = sum(s.count for s in tracemalloc.take_snapshot().statistics("filename"))
        finally:
            tracemalloc.stop()
        assert len(src.splits["train"]) == n
        return kept

    small, large = blocks_kept_by_listing(2000), blocks_kept_by_listing(8000)
    assert large - small < 500, (small, large)
