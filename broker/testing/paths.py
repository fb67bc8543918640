"""Short private directories for Unix sockets in tests (``sun_path`` holds about 100 bytes: pytest's ``tmp_path``
is often longer)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["short_dir"]


@contextmanager
def short_dir(prefix: str = "sb-") -> Iterator[Path]:
    """A new 0700 directory directly under ``/tmp``, removed with its contents afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
