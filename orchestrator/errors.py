"""Domain exceptions. Only ``cli.py`` turns them into exit codes and messages."""

from __future__ import annotations


class HwfError(Exception):
    """Base for errors shown to the operator as one line, without a traceback."""

    exit_code = 1


class ConfigError(HwfError):
    """The configuration file or environment is missing something or holds a bad value."""

    exit_code = 2


class BadInputError(HwfError):
    """Bad usage or bad input: unknown set, malformed CSV, invalid argument."""

    exit_code = 2


class DatabaseError(HwfError):
    """The database cannot be opened, is not an hwf database, or is from a newer hwf."""

    exit_code = 1


class DatabaseContentionError(DatabaseError):
    """PostgreSQL undid this transaction whole because another process's crossed it (a deadlock, a
    serialization failure): nothing of it was written, and the same step may simply run again."""


class AlmaError(HwfError):
    """Alma answered with an error or could not be reached.

    Carries the HTTP status, Alma's errorCode, errorMessage and trackingId, and the request path
    (never the API key, never the query string).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        alma_message: str | None = None,
        tracking_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.alma_message = alma_message
        self.tracking_id = tracking_id
        self.method = method
        self.path = path
        # Seconds Alma asked to wait (a Retry-After longer than hwf waits in place): the set waits, not hwf.
        self.retry_after = retry_after


class AlmaUnreachableError(AlmaError):
    """The connection failed or timed out: the outcome of a write is unknown."""


class AlmaBadReplyError(AlmaError):
    """Alma answered, but the body could not be understood (malformed XML or JSON, missing fields)."""


class RateLimitedError(AlmaError):
    """429 PER_SECOND_THRESHOLD after every retry: slow down and try again."""


class DailyQuotaError(AlmaError):
    """429 DAILY_THRESHOLD, or X-Exl-Api-Remaining under the configured floor: stop new work."""


class JobThresholdError(AlmaError):
    """402222/402223: Alma will not start the job now (3 running API jobs, 5 runs an hour). Wait."""


class UnsafeXmlError(HwfError):
    """An XML document has a DOCTYPE, entities, or is too large; it was not parsed."""


class TransitionNotAllowed(HwfError):
    """A trigger was fired in a state that does not allow it."""

    exit_code = 2


class NeedsAttentionError(HwfError):
    """The set cannot go on until an operator acts; the reason is stored on the set."""

    exit_code = 3


class LeaseHeldError(HwfError):
    """Another hwf process holds the set."""

    exit_code = 4


class ServeError(HwfError):
    """The dashboard cannot start: the port is in use, the address is not this machine's."""


class OutputError(HwfError):
    """A file hwf was asked to write could not be written (no space, no permission)."""

    exit_code = 1
