"""The structured log: one JSON object per line, in a size-rotated file, never the Alma key.

Library modules log with the standard ``logging`` module under the ``orchestrator`` logger tree, putting the facts in
``extra={"hwf": {...}}`` (the HTTP calls of the Alma client and the resolver, events, scheduler decisions).
:func:`install` attaches one rotating JSON-lines handler to that tree; the CLI calls it once per command. Every
line passes through a redaction of the secrets it was given (the Alma key), so not even a bug can write one.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
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


class RotatingLines(logging.handlers.RotatingFileHandler):
    """The stdlib's size-rotated file, formatting each record once.

    ``RotatingFileHandler`` formats a record twice (once to decide whether to roll over, once to write it)
    and checks with two ``stat`` calls per record that the file is a regular one; at one line per HTTP
    exchange, 16 verifier threads spent more time there than on their requests. Here the line is formatted
    once and the regular-file check is made when the file is opened (a FIFO or /dev/stdout never rolls over).
    The position is still read from the file, so several hwf processes appending to one log roll it over at
    the right size."""

    def _open(self) -> Any:
        stream = super()._open()
        self._regular = os.path.isfile(self.baseFilename)
        return stream

    def emit(self, record: logging.LogRecord) -> None:
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


def uninstall() -> None:
    """Detach and close the handler :func:`install` attached (tests, the end of an embedded command)."""
    global _installed
    if _installed is not None:
        logger = logging.getLogger(ROOT)
        logger.removeHandler(_installed)
        logger.setLevel(_level)
        _installed.close()
        _installed = None
