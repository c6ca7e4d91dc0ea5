"""The one writer of a file an operator names with ``-o`` (``hwf report``, ``hwf evidence``).

A regular file (or a new one) is written atomically: a temporary file created new beside it (``O_EXCL``: never
one planted there, never through a symlink under its name), fsync, rename, so a crash or a full disk never
leaves half a file where the old one was. Anything else (a FIFO, ``/dev/stdout``, ``/dev/full``, a terminal)
is written in place and never replaced; a symlink is followed and its target written, the link kept. A
directory is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from orchestrator.errors import BadInputError, OutputError


def write_output(chunks: Iterable[bytes], path: Path, *, what: str) -> None:
    """The one writer of a file an operator names with ``-o`` (``hwf report``, ``hwf evidence``): a regular
    file (or a new one) atomically, through a temporary file made fresh beside it (never one found there, never
    through a symlink planted under its name); a symlink's target is written and the link kept; a FIFO, a
    device or a terminal is written in place and never replaced. ``what`` names the output in errors.

    :raises BadInputError: ``path`` is a directory, or its directory does not exist.
    :raises OutputError: the write failed (no space, no permission, ...), in one line.
    """
    target = Path(os.path.realpath(path))  # a symlink's target is written; the link stays
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise BadInputError(f"cannot write {what} to {path}: it is a directory")
    if mode is None and not target.parent.is_dir():
        raise BadInputError(f"cannot write {what} to {path}: directory {target.parent} does not exist")
    try:
        if mode is None or stat.S_ISREG(mode):
            _atomic(chunks, target, mode)
        else:
            with open(target, "wb") as stream:
                _copy(chunks, stream)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _copy(chunks: Iterable[bytes], stream: BinaryIO) -> None:
    for chunk in chunks:
        stream.write(chunk)
    stream.flush()


def _atomic(chunks: Iterable[bytes], target: Path, mode: int | None) -> None:
    """Temp file beside ``target`` (created new: ``O_EXCL``, so never through a symlink), fsync, rename over it,
    fsync the directory; the temp file never stays."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            _copy(chunks, stream)
            os.fsync(stream.fileno())
        os.chmod(tmp, stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
