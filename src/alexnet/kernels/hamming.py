"""The Hamming top-R kernel (``csrc/hamming.c``): the coarse pass of the binary-code index.

The numpy form (:func:`alexnet.features.index.hamming_topk`) makes a
query-by-code array per 64-bit word and then partitions 1.28M (distance, id)
keys per query; it ran slower than exact search over 512-d fp16 rows. The C
kernel reads each code once per query, counts distances into a histogram and
picks the cut from it: the same set of ids, ties to the lower id
(``benchmarks/retrieval.py`` prints the rates).

Plain C with no torch headers, so it builds in about a second with the
machine's C compiler (``$CC``, default ``cc``) the first time it is asked for,
cached beside the LRN kernel under ``$ALEXNET_EXTENSIONS_DIR`` (default
``~/.cache/alexnet/extensions``) in a file named after its source, flags and
CPU. Where it cannot be built, :func:`get` returns None once with a warning
and the numpy form answers.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from .lrn_cpu import _cpu_tag, extensions_root

SOURCE = Path(__file__).with_name("csrc") / "hamming.c"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]

_lock = threading.Lock()
_state: dict = {}


def library_path() -> Path:
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), _cpu_tag().encode()):
        h.update(part)
        h.update(b"\0")
    return extensions_root() / f"alexnet_hamming_{h.hexdigest()[:16]}.so"


def _build() -> ctypes.CDLL:
    path = library_path()
    if not path.exists():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler (cc or gcc) on PATH")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)  # built aside, then renamed: never half a file
        os.close(fd)
        try:
            run = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"{cc} failed: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(path))
    f = lib.hamming_topk
    i64 = ctypes.c_int64
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, i64, i64, i64, i64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    f.restype = ctypes.c_int
    return lib


def get():
    """The loaded library, or None where it cannot be built (one warning, then the numpy form)."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = _build()
            except Exception as exc:  # no compiler, no OpenMP, unwritable cache
                _state["lib"] = None
                warnings.warn(f"alexnet: Hamming kernel unavailable ({' '.join(str(exc).split())[:200]}); "
                              "using the numpy form, which is slower", RuntimeWarning, stacklevel=2)
        return _state["lib"]


def topk(qcodes: np.ndarray, codes: np.ndarray, r: int, exclude: np.ndarray | None, threads: int) -> np.ndarray | None:
    """``Q x r`` ids (r <= N) of the codes nearest each query by (distance, id), or None without the kernel.

    ``qcodes``, ``codes``: packed uint8 codes whose width is a multiple of 8 bytes.
    """
    lib = get()
    if lib is None:
        return None
    q = np.ascontiguousarray(qcodes, dtype=np.uint8)
    c = np.ascontiguousarray(codes, dtype=np.uint8)
    nq, n, words = q.shape[0], c.shape[0], c.shape[1] // 8
    out = np.empty((nq, r), np.int64)
    ex = None if exclude is None else np.ascontiguousarray(exclude, dtype=np.int64)
    failed = lib.hamming_topk(q.ctypes.data, c.ctypes.data, nq, n, words, r,
                              None if ex is None else ex.ctypes.data, out.ctypes.data, max(1, int(threads)))
    if failed:
        raise MemoryError(f"Hamming search: no memory for the distances of {n} codes")
    return out
