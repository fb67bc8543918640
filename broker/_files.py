"""Private files: atomic writes, private directories, and a watched file set with last-good reload.

* :func:`write_atomically` replaces a file so a reader sees the old content or the new, never a part: a temporary
  file in the same directory (``rename(2)`` is atomic within one file system, POSIX.1-2017 ``rename``) gets its
  mode (and owner) first, is fsync'd, renamed over the target, and the directory is fsync'd.
* :func:`write_private_file` is that with mode 0600, creating missing parent directories with mode 0700.
* :class:`Watched` re-reads a set of files when their stat signature (inode, size, mtime, ctime) changes. The
  signature is recorded before the read, so a broken file is read (and its error logged by the caller) once per
  change, not once per poll; a failed read leaves :attr:`Watched.value` at the last good value.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["Signature", "Watched", "private_dir", "stat_signature", "write_atomically", "write_private_file"]

T = TypeVar("T")

Signature = tuple[tuple[int, int, int, int] | None, ...]


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; an existing directory is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_atomically(path: Path, data: bytes, *, mode: int, uid: int | None = None, gid: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, chmod/chown, fsync, rename, fsync of the directory)."""
    directory = path.parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (created so, never widened); parents made 0700."""
    private_dir(path.parent)
    write_atomically(path, data, mode=0o600)


def stat_signature(paths: Sequence[Path]) -> Signature:
    """Per path ``(inode, size, mtime_ns, ctime_ns)``, or None where it cannot be stat'ed (missing)."""
    signature: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            signature.append(None)
        else:
            signature.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(signature)


class Watched(Generic[T]):
    """The value ``load()`` makes from ``paths``, re-made when their stat signature changes.

    Nothing is read until the first :meth:`refresh` or :meth:`reload` (which raise what ``load`` raises).
    """

    def __init__(self, paths: Sequence[Path], load: Callable[[], T]) -> None:
        self.paths = tuple(paths)
        self._load = load
        self._signature: Signature | None = None
        self._value: T | None = None
        self._loaded = False

    @property
    def value(self) -> T:
        """The last value ``load`` returned."""
        if not self._loaded:
            raise RuntimeError("the watched files have not been read yet")
        return self._value  # type: ignore[return-value]

    def changed(self) -> bool:
        """True if the files changed since they were last read (or were never read)."""
        return stat_signature(self.paths) != self._signature

    def refresh(self) -> bool:
        """Re-read if the files changed; True if a new value is in force. A failed read raises, value kept."""
        if not self.changed():
            return False
        self.reload()
        return True

    def reload(self) -> T:
        """Read now: record the signature first (a broken file is read once per change), then ``load``."""
        self._signature = stat_signature(self.paths)
        value = self._load()
        self._value, self._loaded = value, True
        return value
