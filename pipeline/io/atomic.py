"""Atomic, durable writes: a temporary file beside the target, ``fsync``ed and renamed onto it.

A reader never sees a half-written file under the final name; the temporaries an interrupted run left
are recognisable (:func:`is_partial_file`) and cleared by :func:`remove_stale_partials`.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    """The process umask, read once at import (setting and restoring it is the only portable getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# Temporary files of atomic writes are named ``.<final name>.partial-<random><suffix>``: hidden, never taken for a
# result (they do not end in the final name), and recognisable so a later run can clear the ones a killed run left.
PARTIAL_MARKER = ".partial-"


def fsync_directory(folder: str | Path) -> None:
    """Make a rename or removal in ``folder`` durable (``fsync`` of the directory; a no-op where unsupported)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's data to disk (``fsync``)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_partial_file(path: str | Path) -> bool:
    """True for the temporary file of an atomic write (see :func:`atomic_path`)."""
    name = Path(path).name
    return name.startswith(".") and PARTIAL_MARKER in name


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in ``folder`` (not recursive).

    Only call it where no other writer is active (a run that holds the folder's lock, or its own staging folder).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if path.is_file() and is_partial_file(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is made durable and renamed onto ``path``, else removed.

    The temporary file is flushed to disk (``fsync``) before the rename and the folder after it, so a
    crash or power loss leaves either the old file or the complete new one. Its name keeps the final
    suffix (``.nii.gz``...) so that writers choosing a format by extension behave, and marks it as a
    partial file (:func:`is_partial_file`). On any error, a full disk included, the temporary file is
    removed and the error re-raised; a reader never sees a half-written file under the final name.

    Raises:
        OSError: the folder cannot be created or written (full disk, permissions), re-raised as it came.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL_MARKER}", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates mode 0600; give the file the mode an ordinary open() would (0666 less the umask)
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_directory(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, then rename). Returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically. Returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
