"""Crash-safe file writes shared by every part of the package, and the checks
that an output can be written before any work starts."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import UserError


def file_mode() -> int:
    """The mode ``open()`` would give a new file (0666 less the umask); mkstemp's are 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, rename.

    A kill at any moment leaves either the old file or the new one, never half;
    the new file gets the usual permissions. A failed write (a full disk, a
    file-size limit, a folder that cannot be created) is a one-line
    :class:`UserError` that says whether the previous file is still there.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
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
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data))


def _describe(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device"
    return "not a regular file"


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


def _probe(folder: Path, target: Path) -> None:
    """Create and remove a file in the existing folder ``folder``: the only reliable test (root ignores modes)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".alexnet-probe-", dir=folder)
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e} ({folder})") from None
    os.close(fd)
    os.unlink(tmp)


def _existing_ancestor(path: Path) -> Path:
    """The nearest part of ``path`` that exists (``path`` itself included)."""
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse, before any work, a folder that cannot be created or written: a file, a read-only place, /proc/..."""
    path = Path(path)
    base = _existing_ancestor(path)
    try:
        st = os.stat(base)
    except OSError as e:  # a dangling link or a loop on the way
        raise UserError(f"cannot create {what} {path}: {base}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        if base == Path(os.path.abspath(path)):
            raise UserError(f"{what} {path} is {_describe(st)}, not a folder")
        raise UserError(f"cannot create {what} {path}: {base} is {_describe(st)}, not a folder")
    _probe(base, path)
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
    elif path.name in ("", ".", ".."):
        raise UserError(f"{what} {path} names a folder, not a file")
    check_output_dir(path.parent or Path("."), f"folder of {what}")
    return path
