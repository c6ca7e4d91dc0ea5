"""The Alma REST client: the calls hwf makes (sets and their members, jobs and their instances, bibs), each
built as a request (so ``--dry-run`` can show it) and sent through :class:`~orchestrator.alma.caller.AlmaCaller`.
Replies are read by ``alma.parse`` and ``alma.wire``, tolerantly: XML or JSON, a list or a single object.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from urllib.parse import quote

import httpx

from orchestrator.alma.caller import MEDIA, PAGE_SIZE, REDACTED_KEY, AlmaCaller, NoSending
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
    instance_id_from_link,
    local_name,
)
from orchestrator.errors import (
    AlmaBadReplyError,
    AlmaError,
)
from orchestrator.xmlsafe import parse_xml

__all__ = ["AlmaClient", "build_job_payload", "instance_id_from_link"]

_log = logging.getLogger(__name__)

MAX_BIBS_PER_CALL = 100
MAX_MEMBERS_PER_CALL = 1000
_PUT_BIB_PARAMS = {
    "validate": "true",
    "override_warning": "true",
    "override_lock": "true",
    "stale_version_check": "false",
    "check_match": "false",
}


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


class AlmaClient(AlmaCaller):
    """A synchronous Alma REST client; one instance per API key, safe to share between threads."""

    @classmethod
    def planner(cls, base_url: str, *, format: str = "json") -> AlmaClient:
        """A client that only builds requests (for ``--dry-run``): its key is ``***`` and it cannot send."""
        return cls(base_url, REDACTED_KEY, transport=NoSending(), format=format, requests_per_second=math.inf)

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
        return self._new_set(name, description=description, content=content, private=private)

    def create_set_from_logical(
        self, logical_set_id: str, name: str, *, description: str, content: str = "BIB_MMS", private: bool = False
    ) -> AlmaSetInfo:
        """``POST /conf/sets?from_logical_set=ID``: an itemized set that Alma populates from a logical set's members
        as they are now (not at once: read its member count until it is whole). The logical set is only read.
        Never retried once sent.

        :raises AlmaUnreachableError: the outcome is unknown; look the name up with ``find_sets``.
        """
        source = {"from_logical_set": logical_set_id.strip()}
        return self._new_set(name, description=description, content=content, private=private, params=source)

    def _new_set(
        self, name: str, *, description: str, content: str, private: bool, params: dict[str, str] | None = None
    ) -> AlmaSetInfo:
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
        answer = self._call("POST", "/conf/sets", params=params, body=body, content_type=content_type, idempotent=False)
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
        self,
        job_id: str,
        *,
        date_from: date,
        date_to: date,
        status: str | None = None,
        wanted: Callable[[str], bool] | None = None,
    ) -> Iterator[JobInstance]:
        """Every instance of a job submitted between two dates (inclusive; Alma's time zone is unknown).

        An entry hwf cannot read is skipped (and logged), unless ``wanted(its name)`` says it may be the one
        looked for: then AlmaBadReplyError.
        """
        path, params = self._instances_query(job_id, date_from, date_to, status)
        job = job_id.strip()
        yield from self._pages(path, params, lambda reply, origin: parse_instances(reply, job, origin, wanted=wanted))

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
        answer = self._call("GET", "/bibs", params={"mms_id": ",".join(ids), "view": "full"}, accept=MEDIA["xml"])
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
        answer = self._call("GET", path, params={"view": "full"}, accept=MEDIA["xml"])
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
            accept=MEDIA["xml"],
        )
        return parse_bib_document(answer.body, answer.reply, answer.origin)

    def ping(self) -> dict[str, object]:
        """One cheap authenticated call (the number of sets) plus the quota headers."""
        answer = self._call("GET", "/conf/sets", params={"limit": "0"})
        _, total = parse_sets(answer.reply, answer.origin)
        return {"base_url": self.base_url, "sets": total, "remaining": self.remaining, "quota": self.quota}
