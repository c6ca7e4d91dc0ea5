"""The Alma REST client: sets, jobs, job instances and bibs over one ``httpx.Client``.

Owns authentication (the key travels only in the ``Authorization`` header), the request-rate token bucket
(halved on 429 PER_SECOND_THRESHOLD, recovering slowly), retries (reads and bib PUTs only; a POST that may
have reached Alma is never re-sent: its outcome is unknown and the caller reconciles), the daily-quota floor,
and the mapping of Alma error bodies to ``errors.py``. Replies are parsed by ``alma_xml``/``alma_wire``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from types import TracebackType
from typing import NamedTuple, TypeVar
from urllib.parse import quote

import httpx

from orchestrator.alma.parse import (
    parse_bib_document,
    parse_bibs,
    parse_instance,
    parse_instances,
    parse_job,
    parse_job_run,
    parse_jobs,
    parse_members,
    parse_set,
    parse_sets,
)
from orchestrator.alma.payload import build_job_payload, set_body
from orchestrator.alma.types import AlmaSetInfo, Bib, BibBatch, JobInfo, JobInstance, JobRun, SetMember
from orchestrator.alma.wire import (
    ErrorDetail,
    Origin,
    Reply,
    decode,
    errors_exist,
    errors_in,
    instance_id_from_link,
    local_name,
    one_line,
    parse_error_body,
)
from orchestrator.bounded import MB, ReplyTooLarge, ReplyTooSlow, send_bounded
from orchestrator.errors import (
    AlmaBadReplyError,
    AlmaError,
    AlmaUnreachableError,
    ConfigError,
    DailyQuotaError,
    JobThresholdError,
    RateLimitedError,
)
from orchestrator.pacing import RateGate, SharesRemaining, TokenBucket, backoff_delay, retry_after
from orchestrator.transport import environment_proxy
from orchestrator.xmlsafe import parse_xml

__all__ = ["AlmaClient", "build_job_payload", "instance_id_from_link"]

_log = logging.getLogger(__name__)
_http_log = logging.getLogger("orchestrator.http")
T = TypeVar("T")

API_ROOT = "/almaws/v1"
REDACTED_KEY = "***"  # how a key is shown: the planning client's Authorization is "apikey ***"
PAGE_SIZE = 100
MAX_BIBS_PER_CALL = 100
MAX_MEMBERS_PER_CALL = 1000
MAX_RETRY_AFTER = 300.0
JOB_THRESHOLD_CODES = frozenset({"402222", "402223"})
_MEDIA = {"json": "application/json", "xml": "application/xml"}
_PUT_BIB_PARAMS = {
    "validate": "true",
    "override_warning": "true",
    "override_lock": "true",
    "stale_version_check": "false",
    "check_match": "false",
}
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_UNKNOWN_OUTCOME = "the outcome is unknown (Alma may have acted on it): check before sending it again"
_HINTS: dict[object, str] = {
    "UNAUTHORIZED": ": the API key lacks the area for this API or is for the other environment (sandbox/production)",
    "401": ": not an Alma API answer; is the base URL the API gateway (https://api-XX.hosted.exlibrisgroup.com)"
    " rather than the institution's Alma domain?",
    "403": ": the API key is invalid or this address is not allowed to use it",
    DailyQuotaError: ": the institution's daily API quota is spent; resume after midnight (institution time)",
    RateLimitedError: ": still too fast after {attempts} tries",
    JobThresholdError: ": Alma runs at most 3 API-started jobs at once and 5 runs of one job an hour;"
    " wait, then resubmit",
    AlmaUnreachableError: f": {_UNKNOWN_OUTCOME}",
}


class _NoSending(httpx.BaseTransport):
    """The transport of a planning client: building requests is all it may do."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a planning AlmaClient (--dry-run) never sends a request")


class _Answer(NamedTuple):
    body: bytes
    reply: Reply
    origin: Origin


def _api_root(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if not url.startswith(("https://", "http://")) or "?" in url or "#" in url:
        raise ValueError(f"Alma base URL must look like https://api-na.hosted.exlibrisgroup.com, not {url!r}")
    return url if url.endswith(API_ROOT) else url + API_ROOT


def _segment(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{what} is empty")
    return quote(value, safe="")


def _clean_ids(ids: Sequence[str], what: str) -> list[str]:
    """Stripped, de-duplicated ids in first-seen order; ids with spaces or commas are refused."""
    if isinstance(ids, str):
        raise TypeError(f"{what} must be a sequence of ids, not one string")
    seen: dict[str, None] = {}
    for raw in ids:
        value = str(raw).strip()
        if not value or "," in value or any(c.isspace() for c in value):
            raise ValueError(f"{what}: {raw!r} is not a valid id")
        seen.setdefault(value, None)
    return list(seen)


def _header_int(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


class AlmaClient:
    """A synchronous Alma REST client; one instance per API key, safe to share between threads."""

    remaining: int | None
    quota: int | None
    calls: int

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        format: str = "json",
        requests_per_second: float = 10.0,
        daily_call_floor: int = 0,
        max_retries: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        user_agent: str = "hwf/0.1",
        jitter: Callable[[], float] = random.random,
        max_reply_bytes: int = 20 * MB,
        deadline: float | None = None,
        gate: RateGate | None = None,
    ) -> None:
        """``base_url`` is the regional gateway (``/almaws/v1`` is appended unless present).

        ``jitter`` returns a number in [0, 1) that scales each backoff delay (full jitter). ``gate``
        replaces the process's own rate gate (``store.budget.SharedGate``: one budget for every process
        sharing the key).
        :raises ConfigError: the API key is empty or could not travel in an HTTP header.
        """
        if format not in _MEDIA:
            raise ValueError(f"format must be 'json' or 'xml', not {format!r}")
        if not api_key or not api_key.isascii() or any(c.isspace() or not c.isprintable() for c in api_key):
            raise ConfigError("the Alma API key is empty or contains spaces, control or non-ASCII characters")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.base_url = _api_root(base_url)
        self._secret = api_key
        self._format = format
        self._floor = daily_call_floor
        self._max_retries = max_retries
        self._sleep, self._jitter = sleep, jitter
        self._bucket: RateGate = gate or TokenBucket(requests_per_second, monotonic, sleep, window=True)
        # Every reply is read as a stream: at most max_reply_bytes, whole within ``deadline`` seconds
        # (default: 5 x the per-read timeout), so a 1-byte-a-second server cannot hold hwf forever.
        self._max_reply_bytes = max_reply_bytes
        self._deadline = deadline if deadline is not None else 5 * timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.remaining = None
        self.quota = None
        self.calls = 0
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            # A proxy from the environment (HTTPS_PROXY, NO_PROXY): httpx reads it only for a transport it builds.
            transport=transport or httpx.HTTPTransport(retries=2, proxy=environment_proxy(self.base_url)),
            follow_redirects=False,
            headers={
                "Authorization": f"apikey {api_key}",
                "Accept": _MEDIA[format],
                "User-Agent": user_agent,
            },
        )

    @classmethod
    def planner(cls, base_url: str, *, format: str = "json") -> AlmaClient:
        """A client that only builds requests (for ``--dry-run``): its key is ``***`` and it cannot send."""
        return cls(base_url, REDACTED_KEY, transport=_NoSending(), format=format, requests_per_second=math.inf)

    def _gateway(self) -> str:
        """Scheme and host of the gateway (for messages: never the query string, never the key)."""
        url = httpx.URL(self.base_url)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"

    def __repr__(self) -> str:
        return f"AlmaClient(base_url={self.base_url!r}, format={self._format!r})"

    def __enter__(self) -> AlmaClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @property
    def pacing_rate(self) -> float:
        """Requests a second the shared token bucket allows now (cut after a 429, recovering slowly)."""
        return self._bucket.current_rate()

    # Sets

    def get_set(self, set_id: str) -> AlmaSetInfo:
        """``GET /conf/sets/{set_id}``. :raises AlmaError: e.g. 60107 for an unknown set."""
        answer = self._call("GET", f"/conf/sets/{_segment(set_id, 'set id')}")
        return parse_set(answer.reply, answer.origin)

    def delete_set(self, set_id: str) -> None:
        """``DELETE /conf/sets/{set_id}`` (Alma answers 204 with no body). :raises AlmaError: refused."""
        request = self.build_request("DELETE", f"/conf/sets/{_segment(set_id, 'set id')}")
        self._send(request, request.method, self._api_path(request), True)

    def iter_set_members(self, set_id: str, page_size: int = PAGE_SIZE) -> Iterator[SetMember]:
        """Every member of a set, fetched ``page_size`` (≤ 100) at a time."""
        path = f"/conf/sets/{_segment(set_id, 'set id')}/members"
        yield from self._pages(path, {}, parse_members, page_size)

    def count_set_members(self, set_id: str) -> int:
        """The number of members of a set (``limit=0``: one cheap call)."""
        answer = self._call("GET", f"/conf/sets/{_segment(set_id, 'set id')}/members", params={"limit": "0"})
        _, total = parse_members(answer.reply, answer.origin)
        if total is None:
            raise answer.origin.bad("members.total_record_count is missing")
        return total

    def find_sets(self, name: str) -> list[AlmaSetInfo]:
        """Sets whose name matches ``name`` in Alma's brief search (``q=name~…``).

        Alma matches words, not the whole name: callers keep only the exact name they want.
        """
        if not name.strip():
            raise ValueError("set name is empty")
        return list(self._pages("/conf/sets", {"q": f"name~{name.strip()}"}, parse_sets))

    def create_set(
        self,
        name: str,
        *,
        description: str = "created by hwf",
        content: str = "BIB_MMS",
        private: bool = False,
    ) -> AlmaSetInfo:
        """Create an empty itemized set. Never retried once sent.

        :raises AlmaUnreachableError: the outcome is unknown; look the name up with ``find_sets``.
        """
        if not name.strip():
            raise ValueError("set name is empty")
        fields = [
            ("name", name),
            ("description", description),
            ("type", "ITEMIZED"),
            ("content", content),
            ("private", "true" if private else "false"),
            ("status", "ACTIVE"),
        ]
        content_type, body = set_body(fields, None, self._format)
        answer = self._call("POST", "/conf/sets", body=body, content_type=content_type, idempotent=False)
        return parse_set(answer.reply, answer.origin)

    def add_members(
        self, set_info: AlmaSetInfo, mms_ids: Sequence[str], *, fail_on_invalid_id: bool = False
    ) -> AlmaSetInfo:
        """Add MMS IDs to an itemized set, ≤ 1000 per call, sending the set object with ``<members>``.

        Returns the set as Alma describes it after the last call. Never retried once sent.
        :raises AlmaUnreachableError: the outcome of a chunk is unknown; diff the members before retrying.
        """
        return self._manage_members("add_members", set_info, mms_ids, fail_on_invalid_id)

    def remove_members(self, set_info: AlmaSetInfo, mms_ids: Sequence[str]) -> AlmaSetInfo:
        """Remove MMS IDs from an itemized set (``op=delete_members``), ≤ 1000 per call."""
        return self._manage_members("delete_members", set_info, mms_ids, False)

    def _manage_members(
        self, op: str, set_info: AlmaSetInfo, mms_ids: Sequence[str], fail_on_invalid_id: bool
    ) -> AlmaSetInfo:
        ids = _clean_ids(mms_ids, op)
        path = f"/conf/sets/{_segment(set_info.id, 'set id')}"
        params = {"op": op, "fail_on_invalid_id": "true" if fail_on_invalid_id else "false"}
        fields = [
            ("id", set_info.id),
            ("name", set_info.name),
            ("type", set_info.type or "ITEMIZED"),
            ("content", set_info.content or "BIB_MMS"),
        ]
        result = set_info
        chunks = [ids[i : i + MAX_MEMBERS_PER_CALL] for i in range(0, len(ids), MAX_MEMBERS_PER_CALL)]
        for number, chunk in enumerate(chunks, start=1):
            content_type, body = set_body(fields, chunk, self._format)
            try:
                answer = self._call("POST", path, params=params, body=body, content_type=content_type, idempotent=False)
                result = parse_set(answer.reply, answer.origin)
            except AlmaError as exc:
                if len(chunks) > 1:
                    start = (number - 1) * MAX_MEMBERS_PER_CALL
                    exc.args = (f"{exc} (chunk {number} of {len(chunks)}: ids {start + 1}-{start + len(chunk)})",)
                raise
        return result

    # Jobs

    def list_jobs(self, job_type: str = "MANUAL", category: str | None = None) -> Iterator[JobInfo]:
        """Every job of a type (``MANUAL``, ``SCHEDULED``, ``OTHER``), optionally of one category."""
        params = {"type": job_type}
        if category:
            params["category"] = category
        yield from self._pages("/conf/jobs", params, parse_jobs)

    def get_job(self, job_id: str) -> JobInfo:
        """``GET /conf/jobs/{job_id}`` (its parameter list may be absent)."""
        answer = self._call("GET", f"/conf/jobs/{_segment(job_id, 'job id')}")
        return parse_job(answer.reply, answer.origin)

    def run_job_request(
        self, job_id: str, parameters: Sequence[tuple[str, str]], *, payload_template: bytes | None = None
    ) -> httpx.Request:
        """The ``POST /conf/jobs/{id}?op=run`` that :meth:`run_job` sends (``--dry-run`` shows it)."""
        content_type, body = build_job_payload(parameters, fmt=self._format, template=payload_template)
        path = f"/conf/jobs/{_segment(job_id, 'job id')}"
        return self.build_request("POST", path, params={"op": "run"}, body=body, content_type=content_type)

    def run_job(
        self, job_id: str, parameters: Sequence[tuple[str, str]], *, payload_template: bytes | None = None
    ) -> JobRun:
        """Submit a job (``POST /conf/jobs/{id}?op=run``); return the new instance id. Never re-sent.

        :raises JobThresholdError: 402222/402223, the job was not started; wait and resubmit.
        :raises AlmaUnreachableError: the outcome is unknown; reconcile through ``list_instances``.
        """
        request = self.run_job_request(job_id, parameters, payload_template=payload_template)
        answer = self._exchange(request, idempotent=False)
        try:
            return parse_job_run(answer.reply, job_id.strip(), answer.origin)
        except AlmaBadReplyError as exc:
            exc.args = (f"{exc}; Alma accepted the request, so the job was probably started: reconcile",)
            raise

    def instance_request(self, job_id: str, instance_id: str) -> httpx.Request:
        """The ``GET /conf/jobs/{job_id}/instances/{instance_id}`` that :meth:`get_instance` sends."""
        path = f"/conf/jobs/{_segment(job_id, 'job id')}/instances/{_segment(instance_id, 'instance id')}"
        return self.build_request("GET", path)

    def get_instance(self, job_id: str, instance_id: str) -> JobInstance:
        """``GET /conf/jobs/{job_id}/instances/{instance_id}``."""
        return self.get_instance_reply(job_id, instance_id)[0]

    def get_instance_reply(self, job_id: str, instance_id: str) -> tuple[JobInstance, bytes]:
        """:meth:`get_instance` and the reply body exactly as Alma sent it (kept as evidence when a job ends)."""
        answer = self._exchange(self.instance_request(job_id, instance_id))
        return parse_instance(answer.reply, job_id.strip(), answer.origin), answer.body

    def _instances_query(
        self, job_id: str, date_from: date, date_to: date, status: str | None
    ) -> tuple[str, dict[str, str]]:
        params = {
            "submit_date_from": date_from.strftime("%Y-%m-%d"),
            "submit_date_to": date_to.strftime("%Y-%m-%d"),
        }
        if status:
            params["status"] = status
        return f"/conf/jobs/{_segment(job_id, 'job id')}/instances", params

    def instances_request(
        self, job_id: str, *, date_from: date, date_to: date, status: str | None = None
    ) -> httpx.Request:
        """The first page request of :meth:`list_instances` (``--dry-run`` shows it)."""
        path, params = self._instances_query(job_id, date_from, date_to, status)
        return self._page_request(path, params, PAGE_SIZE, 0)

    def list_instances(
        self, job_id: str, *, date_from: date, date_to: date, status: str | None = None
    ) -> Iterator[JobInstance]:
        """Every instance of a job submitted between two dates (inclusive; Alma's time zone is unknown)."""
        path, params = self._instances_query(job_id, date_from, date_to, status)
        yield from self._pages(path, params, lambda reply, origin: parse_instances(reply, job_id.strip(), origin))

    # Bibs

    def bibs_request(self, mms_ids: Sequence[str]) -> httpx.Request:
        """The ``GET /bibs?mms_id=…`` that :meth:`get_bibs` sends for up to 100 (non-empty) ids."""
        ids = _clean_ids(mms_ids, "get_bibs")
        if not 0 < len(ids) <= MAX_BIBS_PER_CALL:
            raise ValueError(f"get_bibs takes 1 to {MAX_BIBS_PER_CALL} MMS IDs per call, not {len(ids)}")
        return self.build_request("GET", "/bibs", params={"mms_id": ",".join(ids), "view": "full"})

    def get_bibs(self, mms_ids: Sequence[str]) -> BibBatch:
        """Up to 100 bibs in one call (``view=full``, no ``expand``); ids Alma left out are in ``missing``."""
        ids = _clean_ids(mms_ids, "get_bibs")
        if len(ids) > MAX_BIBS_PER_CALL:
            raise ValueError(f"get_bibs takes at most {MAX_BIBS_PER_CALL} MMS IDs per call, not {len(ids)}")
        if not ids:
            return BibBatch(bibs=())
        answer = self._exchange(self.bibs_request(ids))
        bibs = parse_bibs(answer.body, answer.reply, answer.origin)
        returned = {bib.mms_id for bib in bibs}
        return BibBatch(bibs=tuple(bibs), missing=tuple(i for i in ids if i not in returned))

    def get_bibs_xml(self, mms_ids: Sequence[str]) -> BibBatch:
        """Up to 100 bibs in one call as XML for editing: each ``Bib.xml`` is that ``<bib>`` as Alma sent it.

        What ``hwf fix`` reads before it backs up and writes (``GET /bibs?mms_id=``, ``Accept: application/xml``).
        :raises AlmaBadReplyError: the reply is not XML, or not readable as a whole.
        """
        ids = _clean_ids(mms_ids, "get_bibs_xml")
        if len(ids) > MAX_BIBS_PER_CALL:
            raise ValueError(f"get_bibs_xml takes at most {MAX_BIBS_PER_CALL} MMS IDs per call, not {len(ids)}")
        if not ids:
            return BibBatch(bibs=())
        answer = self._call("GET", "/bibs", params={"mms_id": ",".join(ids), "view": "full"}, accept=_MEDIA["xml"])
        if answer.reply.xml is None:
            raise answer.origin.bad("expected XML <bibs> (Accept: application/xml) but got JSON")
        bibs = parse_bibs(answer.body, answer.reply, answer.origin)
        wanted = set(ids)
        stray = [bib.mms_id for bib in bibs if bib.mms_id not in wanted]
        if stray:
            raise answer.origin.bad(f"asked for {len(ids)} bibs but got bib {stray[0]}, which was not asked for")
        returned = {bib.mms_id for bib in bibs}
        return BibBatch(bibs=tuple(bibs), missing=tuple(i for i in ids if i not in returned))

    def get_bib_xml(self, mms_id: str) -> Bib:
        """One bib as XML for editing: ``Bib.xml`` is exactly the body Alma sent."""
        path = f"/bibs/{_segment(mms_id, 'MMS ID')}"
        answer = self._call("GET", path, params={"view": "full"}, accept=_MEDIA["xml"])
        if answer.reply.xml is None:
            raise answer.origin.bad("expected an XML <bib> (Accept: application/xml) but got JSON")
        bib = parse_bib_document(answer.body, answer.reply, answer.origin)
        if bib.mms_id != mms_id.strip():
            raise answer.origin.bad(f"asked for bib {mms_id.strip()} but got bib {bib.mms_id}")
        return bib

    def put_bib_xml(self, mms_id: str, xml: bytes) -> Bib:
        """Replace a bib (``PUT /bibs/{mms_id}``, XML, a full replacement) and return Alma's answer.

        :raises ValueError: ``xml`` is not a ``<bib>`` without namespace for this MMS ID.
        """
        wanted = mms_id.strip()
        root = parse_xml(xml, "bib to PUT")
        if root.tag != "bib":
            raise ValueError(
                f"PUT /bibs/{wanted}: the document root must be <bib> without a namespace, not {root.tag!r}"
            )
        declared = next((c.text for c in root if isinstance(c.tag, str) and local_name(c) == "mms_id"), None)
        if declared is not None and declared.strip() != wanted:
            raise ValueError(f"PUT /bibs/{wanted}: the document is bib {declared.strip()}")
        answer = self._call(
            "PUT",
            f"/bibs/{_segment(wanted, 'MMS ID')}",
            params=_PUT_BIB_PARAMS,
            body=xml,
            content_type="application/xml; charset=utf-8",
            accept=_MEDIA["xml"],
        )
        return parse_bib_document(answer.body, answer.reply, answer.origin)

    def ping(self) -> dict[str, object]:
        """One cheap authenticated call (the number of sets) plus the quota headers."""
        answer = self._call("GET", "/conf/sets", params={"limit": "0"})
        _, total = parse_sets(answer.reply, answer.origin)
        return {"base_url": self.base_url, "sets": total, "remaining": self.remaining, "quota": self.quota}

    # Transport, retries, errors

    def _pages(
        self,
        path: str,
        params: dict[str, str],
        parse: Callable[[Reply, Origin], tuple[list[T], int | None]],
        page_size: int = PAGE_SIZE,
    ) -> Iterator[T]:
        """Page through a list by limit/offset until ``total_record_count`` is reached or a page is empty."""
        limit = max(1, min(PAGE_SIZE, page_size))
        offset = 0
        while True:
            answer = self._exchange(self._page_request(path, params, limit, offset))
            page, total = parse(answer.reply, answer.origin)
            yield from page
            offset += len(page)
            if not page or (total is not None and offset >= total) or (total is None and len(page) < limit):
                return

    def _page_request(self, path: str, params: dict[str, str], limit: int, offset: int) -> httpx.Request:
        return self.build_request("GET", path, params={**params, "limit": str(limit), "offset": str(offset)})

    def build_request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
    ) -> httpx.Request:
        """The request to send (the one place its URL, query and headers are made): ``send`` it, or show it."""
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        return self._http.build_request(method, path, params=params, content=body, headers=headers)

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        idempotent: bool = True,
    ) -> _Answer:
        request = self.build_request(method, path, params=params, body=body, content_type=content_type, accept=accept)
        return self._exchange(request, idempotent=idempotent)

    def _exchange(self, request: httpx.Request, *, idempotent: bool = True) -> _Answer:
        """Send a built request (paced, retried as its kind allows) and decode Alma's reply."""
        method, path = request.method, self._api_path(request)
        response = self._send(request, method, path, idempotent)
        origin = Origin(method, path, response.status_code)
        reply = decode(response.content, origin)
        if errors_exist(reply.tree):
            raise self._alma_error(method, path, response, errors_in(reply.tree))
        return _Answer(response.content, reply, origin)

    def _api_path(self, request: httpx.Request) -> str:
        """The request's path below ``/almaws/v1``, without the query (for messages and logs)."""
        root = httpx.URL(self.base_url).path.rstrip("/")
        path = request.url.path
        return path[len(root) :] if path.startswith(root + "/") else path

    def _send(self, request: httpx.Request, method: str, path: str, idempotent: bool) -> httpx.Response:
        attempt = 0
        while True:
            self._check_floor(method, path)
            self._bucket.acquire()
            with self._lock:
                self.calls += 1
            started = time.monotonic()
            try:
                try:
                    response = send_bounded(
                        self._http,
                        request,
                        max_bytes=self._max_reply_bytes,
                        deadline=self._deadline,
                        monotonic=self._monotonic,
                    )
                finally:
                    self._bucket.release()
            except ReplyTooLarge as exc:
                raise self._too_large(method, path, idempotent, exc) from None
            except _NOT_SENT as exc:
                self._log_call(method, path, None, started, error=type(exc).__name__)
                # The connection was never made, so even a POST did not reach Alma: safe to try again.
                if attempt < self._max_retries:
                    self._pause(attempt, None, method, path, type(exc).__name__)
                    attempt += 1
                    continue
                raise self._error(
                    AlmaUnreachableError,
                    f"Alma {method} {path}: could not reach {self._gateway()} ({type(exc).__name__})"
                    f" after {attempt + 1} tries; the request was not sent",
                    method=method,
                    path=path,
                ) from exc
            except (httpx.RequestError, ReplyTooSlow) as exc:
                self._log_call(method, path, None, started, error=type(exc).__name__)
                if idempotent and attempt < self._max_retries:
                    self._pause(attempt, None, method, path, type(exc).__name__)
                    attempt += 1
                    continue
                if idempotent:
                    message = (
                        f"Alma {method} {path}: no answer from {self._gateway()} ({type(exc).__name__}) "
                        f"after {attempt + 1} tries"
                    )
                else:
                    message = f"Alma {method} {path}: {type(exc).__name__} after sending; {_UNKNOWN_OUTCOME}"
                raise self._error(AlmaUnreachableError, message, method=method, path=path) from exc
            self._note_quota(response)
            status = response.status_code
            if status < 300:
                self._log_call(method, path, status, started)
                return response
            details = parse_error_body(response.content, response.headers.get("content-type", ""))
            first = details[0] if details else None
            code, tracking = (first.code, first.tracking_id) if first else (None, None)
            self._log_call(method, path, status, started, code=code, tracking_id=tracking)
            codes = {detail.code for detail in details}
            if status == 429:
                if "DAILY_THRESHOLD" in codes or b"DAILY_THRESHOLD" in response.content[:4096]:
                    raise self._alma_error(method, path, response, details, DailyQuotaError)
                self._bucket.slow_down()
                wait = retry_after(response)
                if attempt < self._max_retries and (wait is None or wait <= MAX_RETRY_AFTER):
                    self._pause(attempt, wait, method, path, f"429 {next(iter(codes), None) or 'rate limited'}")
                    attempt += 1
                    continue
                raise self._alma_error(method, path, response, details, RateLimitedError, attempts=attempt + 1)
            if status >= 500:
                if idempotent and attempt < self._max_retries:
                    self._pause(attempt, retry_after(response), method, path, f"HTTP {status}")
                    attempt += 1
                    continue
                if not idempotent:
                    raise self._alma_error(method, path, response, details, AlmaUnreachableError)
            if codes & JOB_THRESHOLD_CODES:
                raise self._alma_error(method, path, response, details, JobThresholdError)
            raise self._alma_error(method, path, response, details)

    def _too_large(self, method: str, path: str, idempotent: bool, exc: ReplyTooLarge) -> AlmaError:
        """A reply over alma.max_reply_mb: a bad reply, or after a POST an unknown outcome (reconciled)."""
        if idempotent:
            return self._error(
                AlmaBadReplyError,
                f"Alma {method} {path}: bad reply: {exc} (alma.max_reply_mb)",
                method=method,
                path=path,
            )
        message = f"Alma {method} {path}: {exc} (alma.max_reply_mb); {_UNKNOWN_OUTCOME}"
        return self._error(AlmaUnreachableError, message, method=method, path=path)

    def _check_floor(self, method: str, path: str) -> None:
        remaining = self.remaining
        if self._floor > 0 and remaining is None and isinstance(self._bucket, SharesRemaining):
            remaining = self._bucket.shared_remaining()  # another process's reading of the same key
        if self._floor > 0 and remaining is not None and remaining < self._floor:
            raise self._error(
                DailyQuotaError,
                f"Alma daily API quota nearly spent: {remaining} calls remain, under the floor of"
                f" {self._floor} (alma.daily_call_floor); {method} {path} was not sent",
                method=method,
                path=path,
            )

    def _note_quota(self, response: httpx.Response) -> None:
        remaining = _header_int(response, "x-exl-api-remaining")
        quota = _header_int(response, "x-exl-api-quota")
        with self._lock:
            if remaining is not None:
                self.remaining = remaining
            if quota is not None:
                self.quota = quota
        if remaining is not None and isinstance(self._bucket, SharesRemaining):
            self._bucket.note_remaining(remaining)

    def _log_call(
        self,
        method: str,
        path: str,
        status: int | None,
        started: float,
        *,
        code: str | None = None,
        tracking_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """One structured log line per HTTP exchange: no query string, no headers, never the key."""
        ms = round((time.monotonic() - started) * 1000, 1)
        fields: dict[str, object] = {"event": "http", "remote": "alma", "method": method, "path": path}
        fields |= {"status": status, "ms": ms}
        fields |= {"alma_code": code, "tracking_id": tracking_id, "error": error}
        _http_log.info("Alma %s %s -> %s in %.0f ms", method, path, status or error, ms, extra={"hwf": fields})

    def _pause(self, attempt: int, retry_after: float | None, method: str, path: str, why: str) -> None:
        if retry_after is None:
            delay = backoff_delay(attempt, self._jitter())
        else:
            delay = retry_after
        _log.info(
            "Alma %s %s: %s; retry %d of %d in %.1f s",
            method,
            path,
            why,
            attempt + 1,
            self._max_retries,
            delay,
        )
        self._sleep(delay)

    def _alma_error(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        details: list[ErrorDetail],
        cls: type[AlmaError] = AlmaError,
        attempts: int = 1,
    ) -> AlmaError:
        status = response.status_code
        first = details[0] if details else ErrorDetail(None, None, None)
        described = "; ".join(" ".join(p for p in (d.code, d.message) if p) for d in details if d.code or d.message)
        message = f"Alma {method} {path}: {status} {described or response.reason_phrase or 'error'}"
        if first.tracking_id:
            message += f" (tracking {first.tracking_id})"
        codes = {d.code for d in details}
        if "UNAUTHORIZED" in codes:
            message += _HINTS["UNAUTHORIZED"]
        elif status in (401, 403) and not details:
            message += _HINTS[str(status)]
        elif cls in _HINTS:
            message += _HINTS[cls].format(attempts=attempts)
        return self._error(
            cls,
            message,
            status=status,
            code=first.code,
            alma_message="; ".join(d.message for d in details if d.message) or None,
            tracking_id=first.tracking_id,
            method=method,
            path=path,
        )

    def _error(
        self,
        cls: type[AlmaError],
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        alma_message: str | None = None,
        tracking_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> AlmaError:
        """Build an exception whose text is one line and can never carry the API key."""
        return cls(
            one_line(message).replace(self._secret, "***"),
            status=status,
            code=code,
            alma_message=alma_message.replace(self._secret, "***") if alma_message else None,
            tracking_id=tracking_id,
            method=method,
            path=path,
        )
