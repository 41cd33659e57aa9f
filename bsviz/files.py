"""Atomic file writing: a result is either the whole new file or the old one, never half."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix, for writers that choose a format by it. An
    OSError while writing or renaming is raised again naming ``path``, not the temporary file.
    """
    path = _require_folder(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        with _naming_errors(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: str | Path, make_folder: bool = False) -> Path:
    """``path`` as a Path, once it is sure that a file can be written there (before long work).

    It must not name a folder, and its folder must exist (or be made, with ``make_folder``)
    and take new files. Raises OSError naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name a file to write")
    if make_folder:
        with _naming_errors(path), suppress(FileExistsError, NotADirectoryError):
            path.parent.mkdir(parents=True, exist_ok=True)  # a file in the way: said just below
    _require_folder(path)
    with _naming_errors(path):
        tempfile.TemporaryFile(dir=path.parent).close()
    return path


def _require_folder(path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise FileNotFoundError(f"output folder {path.parent} {what} (for {path})")
    return path


@contextmanager
def _naming_errors(path: Path) -> Iterator[None]:
    """Raise an OSError of the block again as one line naming ``path`` (its errno kept), not
    the temporary file it may be about."""
    try:
        yield
    except OSError as e:
        named = OSError(f"cannot write {path}: {e.strerror or e}")
        named.errno = e.errno
        raise named from None


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
