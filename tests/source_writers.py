"""Writers of fake data sources for the tests: IDX, CIFAR pickles, MATLAB v5 files, tiny JPEGs and a
small ILSVRC-2012 layout (devkit or Kaggle's LOC files). Imported by the test modules that need a source."""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib

import numpy as np
from PIL import Image

def write_idx(path, array: np.ndarray, gz: bool) -> None:
    codes = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_cifar(path, data: np.ndarray, labels, key="labels", extra=None) -> None:
    obj = {b"data": data, key.encode(): list(labels), b"batch_label": b"fixture"}
    obj.update(extra or {})
    path.write_bytes(pickle.dumps(obj, protocol=2))


def tiny_jpeg(path, colour=(200, 30, 30), size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")


def _el(kind: int, payload: bytes, e: str, small_ok: bool = True) -> bytes:
    if small_ok and len(payload) <= 4:
        return struct.pack(e + "I", len(payload) << 16 | kind) + payload.ljust(4, b"\0")
    return struct.pack(e + "II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(name: str, value, e: str, chars16: bool) -> bytes:
    def head(cls, dims):
        return (_el(6, struct.pack(e + "II", cls, 0), e, False) + _el(5, struct.pack(e + f"{len(dims)}i", *dims), e, False)
                + _el(1, name.encode(), e))

    if isinstance(value, str):
        body = head(4, (1, len(value)))
        body += _el(4, struct.pack(e + f"{len(value)}H", *map(ord, value)), e) if chars16 else _el(16, value.encode(), e)
    elif isinstance(value, list):  # struct array, n x 1
        fields = list(value[0])
        body = head(2, (len(value), 1)) + _el(5, struct.pack(e + "i", 32), e)
        body += _el(1, b"".join(f.encode().ljust(32, b"\0") for f in fields), e)
        for item in value:
            for f in fields:
                body += _matrix("", item[f], e, chars16)
    else:  # a double scalar, stored compacted as MATLAB does (uint8 / uint16 payload)
        v = int(value)
        body = head(6, (1, 1)) + (_el(2, struct.pack("B", v), e) if v < 256 else _el(4, struct.pack(e + "H", v), e))
    return _el(14, body, e, False)


def write_mat(path, variables: dict, compressed: bool, big_endian: bool = False, chars16: bool = False) -> None:
    e = ">" if big_endian else "<"
    header = b"MATLAB 5.0 MAT-file, written by the alexnet tests".ljust(116, b" ") + b"\0" * 8
    header += struct.pack(e + "H", 0x0100) + (b"MI" if big_endian else b"IM")
    out = header
    for name, value in variables.items():
        el = _matrix(name, value, e, chars16)
        out += struct.pack(e + "II", 15, len(z := zlib.compress(el))) + z if compressed else el
    path.write_bytes(out)


SYNSETS = [("n02119789", 1, "kit fox, Vulpes macrotis"), ("n01440764", 2, "tench, Tinca tinca"),
           ("n04596742", 3, "wok")]


VAL_TRUTH = [3, 1, 2, 1, 3]  # devkit ids of ILSVRC2012_val_00000001..5


def fake_ilsvrc(root, truth: str, compressed=True, big_endian=False, chars16=False):
    for wnid, _, _ in SYNSETS:
        for i in range(2):
            tiny_jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG")
    for i in range(len(VAL_TRUTH) + 1):  # one more image than the ground truth knows
        tiny_jpeg(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    if truth == "devkit":
        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{v}\n" for v in VAL_TRUTH))
        synsets = [{"ILSVRC2012_ID": i, "WNID": w, "words": words, "gloss": "g", "num_children": 0}
                   for w, i, words in SYNSETS]
        synsets.append({"ILSVRC2012_ID": 1001, "WNID": "n00001740", "words": "entity", "gloss": "g", "num_children": 3})
        write_mat(data / "meta.mat", {"synsets": synsets}, compressed, big_endian, chars16)
    else:
        wnid = {i: w for w, i, _ in SYNSETS}
        rows = [f"ILSVRC2012_val_{k + 1:08d},{wnid[v]} 1 2 30 40 {wnid[v]} 5 6 7 8" for k, v in enumerate(VAL_TRUTH)]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {words}\n" for w, _, words in sorted(SYNSETS)))
