"""Crash-safe file writes shared by every part of the package, and the checks
that an output can be written before any work starts."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
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

    The rename replaces whatever ``path`` is, a symbolic link included: it
    never writes through a link to the file the link names.

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
                writer = _WholeWrites(f)
                try:
                    data(writer)
                except Exception:
                    if writer.error is not None:  # torch.save turns the OSError of a write into a RuntimeError
                        raise writer.error from None
                    raise
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


class _WholeWrites:
    """A binary file whose ``write`` writes every byte or raises the system's error (a full disk, a file-size
    limit: ``OSError``), and keeps it in ``error``: writers such as ``torch.save`` turn it into an error that
    names no cause."""

    def __init__(self, f):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                n = self._f.write(view[done:])
                if n is None or n <= 0:
                    self._f.flush()  # raises the error that stopped the write
                    raise OSError(errno.EIO, "write made no progress")
                done += n
        except OSError as e:
            self.error = e
            raise
        return done

    def __getattr__(self, name):
        return getattr(self._f, name)


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete the ``.*.tmp`` files a killed writer left in ``folder``; how many.

    Call it only while no writer works in ``folder`` (under its :func:`lock_folder`)."""
    n = 0
    for p in Path(folder).glob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW)``: a file descriptor of a regular file at ``path`` itself.

    A symbolic link at ``path`` is refused, not followed (a one-line :class:`UserError`), and so is
    anything that is not a regular file (a FIFO is opened without blocking, then refused).
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"refusing to write through {path}: it is a symbolic link") from None
        if e.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise UserError(f"{path} is a FIFO, not a file") from None
        raise UserError(f"cannot open {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{path} is {_describe(st)}, not a file")
    os.set_blocking(fd, True)
    return fd


LOCK_NAME = ".alexnet.lock"


class FolderLock:
    """An advisory lock (``flock``) on ``FOLDER/.alexnet.lock``, which holds the holder's pid; see :func:`lock_folder`."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # no stale pid for the next one to read
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:  # a holder dropped without release(): closing the file ends the lock
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _busy(folder: Path, what: str, user: str, fd: int) -> UserError:
    holder = ""
    for _ in range(20):  # the holder writes its pid just after it takes the lock
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if holder:
            break
        time.sleep(0.05)
    return UserError(f"{what} {folder} is in use by another {user} (pid {holder or 'unknown'}): wait for it "
                     f"to end, or choose another folder")


def lock_folder(folder: str | os.PathLike, what: str = "run folder", user: str = "alexnet train") -> FolderLock:
    """Take ``folder``'s lock (made if missing) without waiting, or a one-line :class:`UserError` naming the pid
    that holds it. The lock is the kernel's: a killed holder leaves no lock behind, only the file."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        error = _busy(folder, what, user, fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else UserError(
            f"cannot lock {what} {folder}: {e.strerror or e}")
        os.close(fd)
        raise error from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return FolderLock(fd, path)


def check_unlocked(folder: str | os.PathLike, what: str = "run folder", user: str = "alexnet train") -> None:
    """A one-line :class:`UserError` naming the holder's pid when another process holds ``folder``'s lock;
    writes nothing (a folder or lock file that is not there is not locked)."""
    folder = Path(folder)
    try:
        fd = open_nofollow(folder / LOCK_NAME, os.O_RDONLY)
    except UserError:
        if not os.path.lexists(folder / LOCK_NAME):
            return
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise _busy(folder, what, user, fd) from None
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
