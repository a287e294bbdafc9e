"""Crash-safe file writes shared by every part of the package, and the checks
that an output can be written before any work starts."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError


def file_mode() -> int:
    """The mode ``open()`` would give a new file (0666 less the umask); mkstemp's are 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` to fill (by name) in a ``with`` block, renamed over ``path`` when it ends.

    For writers that need a file name rather than a file object (a numpy
    memory map); :func:`atomic_write` is the same for a ``write(file)``
    callable. A kill at any moment leaves either the old file or the new
    one, never half; the new file gets the usual permissions. An error in
    the block removes the temporary; a failed write (a full disk, a
    file-size limit, a folder that cannot be created) is a one-line
    :class:`UserError` that says whether the previous file is still there.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, file_mode())
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError):
            kept = f"the previous {path.name} is intact" if path.is_file() else "nothing was written"
            raise UserError(f"cannot write {path}: {e.strerror or e}; {kept}") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, data) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename (see :func:`atomic_path`).

    ``data``: bytes (or any bytes-like object), or a callable ``data(file)``
    that writes into the open binary file (``torch.save``, ``np.save``, ...).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete the ``.*.tmp`` files a killed writer left in ``folder``; how many."""
    n = 0
    for p in Path(folder).glob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def _describe(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if stat.S_ISREG(st.st_mode):
        return "a file"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    return "a device"


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is a regular file (or a link to one), else a one-line :class:`UserError` saying what it is."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:  # a link loop, a path through a file, no permission
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is {_describe(st)}, not a file")
    return path


def _writable_folder(folder: Path, what: str, path: Path) -> None:
    """Refuse to write ``path`` unless a file can be created in ``folder`` (made if missing), or where it would be.

    The test creates and removes a file in the nearest existing folder: the
    only reliable one (root ignores permission bits; /proc, read-only mounts).
    """
    base = Path(os.path.abspath(folder))
    while not os.path.lexists(base) and base != base.parent:
        base = base.parent
    try:
        st = os.stat(base)
    except OSError as e:  # a dangling link or a loop on the way
        raise UserError(f"cannot write {what} {path}: {base}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"cannot write {what} {path}: {base} is {_describe(st)}, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".alexnet-probe-", dir=base)
    except OSError as e:
        raise UserError(f"cannot write {what} {path}: {base}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse, before any work, a folder that cannot be created or written: a file, a read-only place, /proc/..."""
    path = Path(path)
    if os.path.isfile(path):
        raise UserError(f"{what} {path} is a file, not a folder")
    _writable_folder(path, what, path)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file", overwrite: bool = True) -> Path:
    """Refuse, before any work, a file that cannot be written (see :func:`check_output_dir`);
    ``overwrite=False`` also refuses an existing file."""
    path = Path(path)
    if os.path.lexists(path):
        try:
            st = os.stat(path)
        except OSError as e:
            raise UserError(f"cannot write {what} {path}: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is {_describe(st)}, not a file")
        if not overwrite:
            raise UserError(f"{what} {path} exists (pass --force to replace it)")
    _writable_folder(path.parent, what, path)
    return path
