"""The Alma API key from a file: a regular, private file of the user running hwf, holding one key on one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.errors import ConfigError

KEY_FILE_MAX_BYTES = 4096  # an Alma API key is ~36 characters; anything this big is not a key file


def read_key_file(path: Path, config_path: Path) -> str:
    """The key from a regular, private file of this user's. The file is looked at (``stat``) before it
    is opened, and opened without blocking, so a FIFO or a device never hangs hwf."""

    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"{config_path}: key alma.api_key_file: {path} {problem}")

    try:
        info = path.stat()
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise refuse("is a directory, not a key file")
    if not stat.S_ISREG(info.st_mode):
        raise refuse("is not a regular file (a FIFO, socket or device); put the key in a plain file")
    if info.st_uid != os.geteuid():
        raise refuse(f"is owned by uid {info.st_uid}, not by the user running hwf (uid {os.geteuid()})")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise refuse(f"is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}")
    if info.st_size > KEY_FILE_MAX_BYTES:
        raise refuse(f"is {info.st_size} bytes: not a key file (an Alma API key is one short line)")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise refuse("is not a regular file")
        raw = os.read(fd, KEY_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise refuse("is not a text file (it holds bytes that are not UTF-8)") from None
    if not key:
        raise refuse("is empty")
    if any(not ch.isprintable() or ch.isspace() for ch in key):
        raise refuse("does not hold one key on one line (it has spaces, line breaks or control characters)")
    return key
