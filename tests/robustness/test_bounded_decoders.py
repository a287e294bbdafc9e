"""Every reader of a source format is bounded before it allocates; prepare notices a changed source.

Each case is a crafted file (or folder) run through the CLI: it must end as a one-line error, exit 2,
naming the file and the limit, or as the documented behaviour (exit 0). The bombs (a meta.mat, an IDX .gz
and a stats.npz that inflate to 1 GB, from about 1 MB each) also run in a process of their own whose peak
memory is compared with the same command on an honest file.
"""

from __future__ import annotations

import io
import os
import resource  # noqa: F401  (used by the subprocess code)
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from alexnet.cli.main import main
from alexnet.data import load_stats, prepare
from alexnet.errors import UserError
from fault_kit import TALLY, run_cli
from helpers import write_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from source_writers import _el, fake_ilsvrc, tiny_jpeg, write_idx  # noqa: E402

GB = 1 << 30
E = "<"


# ---------------------------------------------------------------- crafted files
def _zeros_deflated(n: int, wbits: int = 15, head: bytes = b"") -> bytes:
    """``head`` and then ``n`` zero bytes, deflated a MB at a time: the test itself stays small."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [c.compress(head)]
    chunk = bytes(1 << 20)
    for _ in range(n >> 20):
        out.append(c.compress(chunk))
    out.append(c.flush())
    return b"".join(out)


def _mat(elements: bytes) -> bytes:
    header = b"MATLAB 5.0 MAT-file, crafted".ljust(116, b" ") + b"\0" * 8 + struct.pack(E + "H", 0x0100) + b"IM"
    return header + elements


def _head(cls: int, dims, name: bytes = b"") -> bytes:
    return (_el(6, struct.pack(E + "II", cls, 0), E, False) + _el(5, struct.pack(E + f"{len(dims)}i", *dims), E, False)
            + _el(1, name, E))


def _nested_cells(depth: int) -> bytes:
    el = _el(14, _head(6, (1, 1)) + _el(9, struct.pack(E + "d", 1.0), E), E, False)
    for _ in range(depth):
        el = _el(14, _head(1, (1, 1)) + el, E, False)
    return el


def _ilsvrc_with_meta(root: Path, meta: bytes) -> Path:
    fake_ilsvrc(root, "devkit")
    (root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").write_bytes(meta)
    return root


def mat_bomb(root):
    inner = _el(14, _head(2, (1, 1), b"synsets"), E, False)[:8]  # a matrix header, then 1 GB of zeros
    z = _zeros_deflated(GB, head=inner)
    return _ilsvrc_with_meta(root, _mat(struct.pack(E + "II", 15, len(z)) + z))


def mat_struct_no_fields(root):  # 100000 x 1000 structs with no fields: 10^8 dicts
    body = _head(2, (100000, 1000), b"synsets") + _el(5, struct.pack(E + "i", 32), E) + _el(1, b"", E)
    return _ilsvrc_with_meta(root, _mat(_el(14, body, E, False)))


def mat_nested(root):
    return _ilsvrc_with_meta(root, _mat(_nested_cells(3000)))


def mat_garbage(root):
    junk = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    return _ilsvrc_with_meta(root, _mat(struct.pack(E + "II", 15, len(junk)) + junk))


def mat_truncated_zlib(root):
    z = zlib.compress(_el(14, _head(2, (1, 1), b"synsets"), E, False) + bytes(10000))
    return _ilsvrc_with_meta(root, _mat(struct.pack(E + "II", 15, len(z) // 2) + z[:len(z) // 2]))


def _labels(root, n=10, dtype="u1"):
    write_idx(root / "train-labels-idx1-ubyte", (np.arange(n) % 2).astype(dtype), gz=False)


def idx_gz_bomb(root):  # a header of 10 x 28 x 28, then 1 GB of zeros: 8 KB is all it may hold
    root.mkdir()
    head = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28)
    (root / "train-images-idx3-ubyte.gz").write_bytes(_zeros_deflated(GB, 31, head))
    _labels(root)
    return root


def idx_dims_overflow(root):  # 2^32-1 ^ 3 bytes: overflows int64 in numpy's product
    root.mkdir()
    (root / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + bytes(64))
    _labels(root)
    return root


def idx_dims_huge(root):  # 2^31 x 2^31 x 2^31 wraps to 0 in int64: an empty array from a lying header
    root.mkdir()
    (root / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", *[2**31] * 3) + bytes(64))
    _labels(root)
    return root


def idx_label_huge(root):
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte", np.zeros((10, 8, 8), np.uint8), gz=False)
    labels = (np.arange(10) % 2).astype(">i4")
    labels[3] = 5_000_000
    write_idx(root / "train-labels-idx1-ubyte", labels, gz=False)
    return root


def _jpeg_bytes():
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (12, 10), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _wds(root, labels):
    root.mkdir()
    with tarfile.open(root / "train-000000.tar", "w") as t:
        for i, label in enumerate(labels):
            for ext, data in (("jpg", _jpeg_bytes()), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"s{i:04d}.{ext}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return root


def wds_cls_huge(root):
    return _wds(root, [0, 1, 999999999])


def wds_cls_million(root):  # 9 samples, one label 999999: a million classes
    return _wds(root, [0, 1, 0, 1, 0, 1, 0, 1, 999999])


def folder_empty_class(root):
    write_images(root, {"train": 2, "val": 1}, classes=2)
    (root / "train" / "c_empty").mkdir()
    return root


# case, builder, expected: ("error", words in the one line) or ("ok", words in the one stderr line)
CASES = [
    ("mat-zlib-bomb", mat_bomb, ("error", "64 MB")),
    ("mat-struct-100000x1000-no-fields", mat_struct_no_fields, ("error", "1,000,000 struct and cell elements")),
    ("mat-cells-3000-deep", mat_nested, ("error", "nested more than 32 deep")),
    ("mat-garbage-compressed", mat_garbage, ("error", "broken compressed data")),
    ("mat-truncated-compressed", mat_truncated_zlib, ("error", "meta.mat")),
    ("idx-gz-bomb", idx_gz_bomb, ("error", "more data than its IDX header says")),
    ("idx-dims-overflow", idx_dims_overflow, ("error", "over the limit of 4,294,967,296 bytes")),
    ("idx-dims-wrap-to-zero", idx_dims_huge, ("error", "over the limit of 4,294,967,296 bytes")),
    ("idx-label-5000000", idx_label_huge, ("error", "over the limit of 100,000")),
    ("wds-cls-999999999", wds_cls_huge, ("error", "over the limit of 100,000 classes")),
    ("wds-cls-999999-from-9-samples", wds_cls_million, ("error", "over the limit of 100,000 classes")),
    ("folder-empty-class", folder_empty_class, ("ok", "c_empty")),
]


def _prepare_argv(src, out, *more):
    return ["prepare", str(src), str(out), "--workers", "1", "--no-progress", *more]


def _run_case(argv, expected, capsys):
    rc, lines, clean = run_cli(argv, capsys, "trust")
    kind, words = expected
    if kind == "error":
        clean = clean and words in lines[0]
        TALLY["trust"]["clean"] += clean
        TALLY["trust"]["silent"] += rc == 0
        assert clean, (rc, lines)
        assert len(lines[0]) < 600
    else:
        correct = rc == 0 and len(lines) == 1 and "warning" in lines[0] and words in lines[0]
        TALLY["trust"]["correct"] += correct
        assert correct, (rc, lines)
    return lines


@pytest.mark.parametrize("case, build, expected", CASES, ids=[c[0] for c in CASES])
def test_crafted_source_is_bounded(case, build, expected, tmp_path, capsys):
    src = build(tmp_path / "src")
    _run_case(_prepare_argv(src, tmp_path / "out"), expected, capsys)


def test_the_class_bound_is_the_models():
    from alexnet.data.sources import MAX_CLASSES
    from alexnet.models.options import MAX_CLASSES as MODEL_MAX

    assert MAX_CLASSES == MODEL_MAX


# ---------------------------------------------------------------- stats.npz
def _stats_bomb(prep: Path) -> None:
    """stats.npz with its honest arrays and a ``cov`` whose npy header says 1 GB (deflated zeros)."""
    path = prep / "stats.npz"
    with np.load(path) as z:
        honest = {k: z[k] for k in z.files}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (GB // 8,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in honest.items():
            if k != "cov":
                buf = io.BytesIO()
                np.lib.format.write_array(buf, v)
                z.writestr(k + ".npy", buf.getvalue())
        with z.open("cov.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(GB >> 20):
                f.write(chunk)


def _prepared(root: Path) -> Path:
    write_images(root / "raw", {"train": 2}, classes=2)
    prepare(root / "raw", root / "prep", workers=1, progress=False)
    return root / "prep"


def test_stats_npz_bomb_is_refused(tmp_path):
    prep = _prepared(tmp_path)
    _stats_bomb(prep)
    TALLY["trust"]["tried"] += 1
    with pytest.raises(UserError, match="cov has shape") as e:
        load_stats(prep)
    TALLY["trust"]["clean"] += "stats.npz" in str(e.value)


def test_stats_npz_object_array_is_refused(tmp_path):
    prep = _prepared(tmp_path)
    with np.load(prep / "stats.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["count"] = np.array(None, dtype=object)
    np.savez(prep / "stats.npz", **arrays)
    TALLY["trust"]["tried"] += 1
    with pytest.raises(UserError, match="not numbers|Python objects|object"):
        load_stats(prep)
    TALLY["trust"]["clean"] += 1


# ---------------------------------------------------------------- a changed source
def _folder(root: Path, colour, size=(40, 40)) -> Path:
    for c in ("a", "b"):
        for i in range(3):
            tiny_jpeg(root / "train" / c / f"{i}.jpg", colour if c == "a" else (20, 20, 200), size)
    return root


def test_another_source_with_the_same_names_is_refused_then_forced(tmp_path, capsys):
    out = tmp_path / "out"
    _folder(tmp_path / "one", (200, 30, 30))
    _folder(tmp_path / "two", (30, 200, 30), (44, 40))
    assert main(_prepare_argv(tmp_path / "one", out)) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    _run_case(_prepare_argv(tmp_path / "two", out), ("error", "--force"), capsys)
    TALLY["trust"]["tried"] += 1
    assert main(_prepare_argv(tmp_path / "two", out, "--force")) == 0
    assert (out / "notes.txt").read_text() == "mine"  # --force deletes only what prepare writes
    fresh = tmp_path / "fresh"
    assert main(_prepare_argv(tmp_path / "two", fresh)) == 0
    for name in ("stats.npz", "train.index.npy", "train-000000.tar", "meta.json"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    TALLY["trust"]["correct"] += 1


def test_an_edited_source_into_an_interrupted_prepare_is_refused(tmp_path, capsys):
    src, out = _folder(tmp_path / "src", (200, 30, 30)), tmp_path / "out"
    prepare(src, out, workers=1, progress=False, shard_size=2)
    (out / "meta.json").unlink()  # as if killed before the end, with a shard still to do
    (out / ".prepare" / "train-000001.npz").unlink()
    tiny_jpeg(src / "train" / "a" / "0.jpg", (0, 0, 0), (48, 40))  # edited since
    os.utime(src / "train" / "a" / "0.jpg", ns=(1, 1))
    _run_case(_prepare_argv(src, out), ("error", "choose a new folder, or add --force"), capsys)


def test_force_refuses_a_folder_prepare_did_not_write(tmp_path, capsys):
    src, out = _folder(tmp_path / "src", (200, 30, 30)), tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    (out / "meta.json").write_text("{}")
    _run_case(_prepare_argv(src, out, "--force"), ("error", "not empty"), capsys)
    assert (out / "thesis.tex").read_text() == "x" and (out / "meta.json").read_text() == "{}"


# ---------------------------------------------------------------- peak memory of the bombs
def _peak(argv: list[str], stats: str | None = None) -> tuple[int, list[str], int]:
    call = (f"from alexnet.data import load_stats\ntry:\n    load_stats({stats!r}); rc = 0\n"
            f"except Exception as e:\n    print('error:', e, file=sys.stderr); rc = 2\n") if stats else \
        f"from alexnet.cli.main import main\nrc = main({argv!r})\n"
    code = ("import resource, sys\n" + call +
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    *lines, kb = r.stderr.splitlines()
    return r.returncode, lines, int(kb)


def _honest_ilsvrc(root):
    fake_ilsvrc(root, "devkit")
    return root


def _honest_idx(root):
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8), gz=True)
    _labels(root)
    return root


BOMBS = [("mat-zlib-bomb", mat_bomb, _honest_ilsvrc), ("idx-gz-bomb", idx_gz_bomb, _honest_idx)]


@pytest.mark.slow
@pytest.mark.parametrize("case, bomb, honest", BOMBS, ids=[b[0] for b in BOMBS])
def test_a_bomb_stays_small(case, bomb, honest, tmp_path):
    TALLY["trust"]["tried"] += 1
    TALLY["trust"]["process"] += 1
    rc, lines, crafted = _peak(_prepare_argv(bomb(tmp_path / "bomb"), tmp_path / "out1"))
    assert rc == 2 and len(lines) == 1, lines
    rc, lines, plain = _peak(_prepare_argv(honest(tmp_path / "honest"), tmp_path / "out2"))
    assert rc in (0, 2), lines  # the honest command may refuse something else; its cost is what counts
    print(f"{case}: peak RSS {crafted / 1e3:.0f} MB vs {plain / 1e3:.0f} MB for the honest file")
    TALLY["trust"]["clean"] += crafted < plain + 256_000
    assert crafted < plain + 256_000, f"peak RSS {crafted / 1e3:.0f} MB vs {plain / 1e3:.0f} MB for the honest file"


@pytest.mark.slow
def test_the_stats_bomb_stays_small(tmp_path):
    prep = _prepared(tmp_path / "a")
    honest = _prepared(tmp_path / "b")
    _stats_bomb(prep)
    TALLY["trust"]["tried"] += 1
    TALLY["trust"]["process"] += 1
    rc, lines, crafted = _peak([], str(prep))
    assert rc == 2 and len(lines) == 1, lines
    rc, _, plain = _peak([], str(honest))
    assert rc == 0
    print(f"stats-npz-bomb: peak RSS {crafted / 1e3:.0f} MB vs {plain / 1e3:.0f} MB for the honest file")
    TALLY["trust"]["clean"] += crafted < plain + 256_000
    assert crafted < plain + 256_000, f"peak RSS {crafted / 1e3:.0f} MB vs {plain / 1e3:.0f} MB for the honest file"
