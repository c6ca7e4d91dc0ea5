"""The structured log: one JSON object per line, in a size-rotated file, never the Alma key.

Library modules log with the standard ``logging`` module under the ``orchestrator`` logger tree, putting the facts in
``extra={"hwf": {...}}`` (the HTTP calls of the Alma client and the resolver, events, scheduler decisions).
:func:`install` attaches one rotating JSON-lines handler to that tree; the CLI calls it once per command. Every
line passes through a redaction of the secrets it was given (the Alma key), so not even a bug can write one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import logging.handlers
import os
import stat
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

ROOT = "orchestrator"
REDACTED = "***"

# The level of an audit event's log line: a set that needs a person is a warning (an error when hwf itself, or a
# row it cannot read, stopped it); what may need a look soon is a warning; the rest of the trail is info.
_FAULTS = frozenset({"fault", "corrupt"})
_WARNINGS = frozenset({"warning", "regression", "drift", "submit_unknown", "abandoned", "adopt_stopped"})


def event_level(kind: str, attention_kind: str | None = None) -> int:
    """The logging level of an audit event of ``kind`` (``attention_kind``: the kind of an attention event)."""
    if kind == "attention":
        return logging.ERROR if attention_kind in _FAULTS else logging.WARNING
    return logging.WARNING if kind in _WARNINGS else logging.INFO


class JsonLines(logging.Formatter):
    """``{"at", "level", "logger", "event", "message", ...the record's hwf fields}`` on one line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "hwf", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(str(key), value)
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        text = json.dumps(line, ensure_ascii=False, default=str)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


_SAID: set[str] = set()  # the log failures this process has told of


class RotatingLines(logging.handlers.RotatingFileHandler):
    """The stdlib's size-rotated file, formatting each record once, that never hangs and never fails a command.

    ``RotatingFileHandler`` formats a record twice (once to decide whether to roll over, once to write it)
    and checks with two ``stat`` calls per record that the file is a regular one; at one line per HTTP
    exchange, 16 verifier threads spent more time there than on their requests. Here the line is formatted
    once and the regular-file check is made when the file is opened (a FIFO or /dev/stdout never rolls over).
    The position is still read from the file, so several hwf processes appending to one log roll it over at
    the right size.

    The file is opened without blocking (as the key file is read): a FIFO that no process reads is an error at
    once, not a command that waits for a reader, and a FIFO whose reader stops reading fails a write instead of
    holding it. A log that fails (``/dev/full``, a full disk, such a FIFO) says so in one line on stderr, once,
    and the command goes on without it: its outcome is never the log's."""

    _regular = False
    _failed = False

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(self.baseFilename, flags, 0o666)
        try:
            kind = os.fstat(fd).st_mode
            self._regular = stat.S_ISREG(kind)
            if not stat.S_ISFIFO(kind) and hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)  # a terminal or device blocks as it always did; only a FIFO never waits
            return open(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def emit(self, record: logging.LogRecord) -> None:
        if self._failed:
            return
        try:
            line = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            if self.maxBytes > 0 and self._regular:
                self.stream.seek(0, 2)  # the end, as other processes may have written since
                if self.stream.tell() + len(line) >= self.maxBytes:
                    self.doRollover()
            self.stream.write(line)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own contract: report through handleError, never raise
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """One line on stderr, the first time only, and the log is off for the rest of the command (no
        traceback per record, as logging's own handler would print)."""
        self._give_up(sys.exc_info()[1])

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:  # the last flush failed: said once, never the command's failure
            self._give_up(exc)

    def _give_up(self, exc: BaseException | None) -> None:
        if self._failed:
            return
        self._failed = True
        reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc else "unknown error"
        if isinstance(exc, OSError) and exc.errno == errno.ENXIO:
            reason = "it is a FIFO that no process reads"
        elif isinstance(exc, BlockingIOError):
            reason = "it is a FIFO whose reader stopped reading"
        line = f"hwf: cannot write the log file {self.baseFilename}: {reason}; going on without the log\n"
        if line not in _SAID:  # one command may open its log more than once (a context per phase): said once
            _SAID.add(line)
            with contextlib.suppress(Exception):
                sys.stderr.write(line)
                sys.stderr.flush()
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


_installed: logging.Handler | None = None
_level = logging.NOTSET  # the tree's level before install(), restored by uninstall()


def install(file: Path, *, max_bytes: int, backups: int, secrets: Iterable[str] = ()) -> logging.Handler:
    """Write the ``orchestrator`` log tree to ``file`` (rotated at ``max_bytes``, ``backups`` old files kept), replacing
    the handler an earlier call installed. :raises ConfigError: the file cannot be written (exit 2)."""
    uninstall()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingLines(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=False)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO no process reads: one line, and the command goes on without its log
            handler = RotatingLines(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
            handler._give_up(exc)
            return handler
        raise ConfigError(
            f"cannot write the log file {file}: {exc.strerror or exc} (key [log] file; enabled = false turns it off)"
        ) from None
    if not os.access(file, os.W_OK):
        handler.close()
        raise ConfigError(f"cannot write the log file {file}: permission denied (key [log] file)")
    handler.setFormatter(JsonLines(secrets))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger(ROOT)
    logger.addHandler(handler)
    global _installed, _level
    _level = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    _installed = handler
    return handler


def new_command() -> None:
    """A command begins (the CLI's entry): the log failures it meets are told of again, once."""
    _SAID.clear()


def uninstall() -> None:
    """Detach and close the handler :func:`install` attached (tests, the end of an embedded command)."""
    global _installed
    if _installed is not None:
        logger = logging.getLogger(ROOT)
        logger.removeHandler(_installed)
        logger.setLevel(_level)
        _installed.close()
        _installed = None
