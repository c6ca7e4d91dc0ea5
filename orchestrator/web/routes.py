"""The dashboard's handlers: each reads through one read-side call and renders a template, JSON or SVG.

Handlers are plain functions (Starlette runs them in its thread pool): the read side is synchronous
SQLAlchemy, in short read transactions.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from orchestrator import __version__
from orchestrator.display import duration, iso_z
from orchestrator.errors import BadInputError
from orchestrator.service import evidence, overview, report, setdetail, views
from orchestrator.service.context import Context
from orchestrator.web import charts
from orchestrator.web.moments import natural_key, next_of, time_tag, zone_of
from orchestrator.web.text import clean

TEMPLATES = Path(__file__).parent / "templates"
SORT_KEYS = ("set", "name", "state", "records", "verified", "excluded", "note", "updated", "checked")
STATE_ORDER = {s: i for i, s in enumerate(charts.STATE_COLOURS)}


def _finalize(value: Any) -> Any:
    # Every {{ value }} passes here before autoescaping: control characters become visible symbols.
    # Markup was made safe (and cleaned) by a filter already.
    return clean(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def _duration(seconds: float | None) -> str:
    return duration(seconds) if seconds is not None else ""


def code_spans(text: str) -> Markup:
    """Text with its `backticked` commands set as code; everything escaped (control characters shown)."""
    parts = clean(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return Markup(escape(clean(text)))
    return Markup("").join(Markup("<code>%s</code>") % p if i % 2 else escape(p) for i, p in enumerate(parts))


def breakable(text: str) -> Markup:
    """``identifiers_copied`` that may break after its underscore in a narrow column (``<wbr>``: no character
    is added to the text)."""
    return Markup("_<wbr>").join(escape(clean(part)) for part in text.split("_"))


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = time_tag
    env.filters["duration"] = _duration
    env.filters["num"] = lambda n: f"{n:,}"
    env.filters["code_spans"] = code_spans
    env.filters["breakable"] = breakable
    env.globals["version"] = __version__
    return env


_ENV = _environment()


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    page = _ENV.get_template(template).render(request=request, path=request.url.path, **values)
    return HTMLResponse(page, status_code=status)


def needs_you(attention: int, batches: tuple[overview.BatchItem, ...]) -> int:
    """What waits for a person: the sets in attention and the integration batches waiting for a click."""
    return attention + sum(1 for b in batches if b.needs_person)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_page(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    return render(request, "error.html", status=status, status_code=status, message=message)


def unauthorized(request: Request) -> Response:
    message = (
        "this dashboard needs its access token: open the address `hwf serve` printed (with ?token=...), "
        "or send the header Authorization: Bearer TOKEN"
    )
    response = error_page(request, 401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="hwf"'
    return response


def chart_key(ov: overview.Overview) -> str:
    """What the overview's charts show, in short: the page's script draws them again when it changes."""
    states = ",".join(str(n) for n in ov.sets_by_state.values())
    return f"{ov.records}|{ov.records_excluded}|{ov.records_verified}|{states}"


def _filename(set_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", set_id)[:80] or "set"


class Pages:
    """The handlers, bound to the read-only context they read through."""

    def __init__(self, ctx: Context, *, poll_seconds: float) -> None:
        self.ctx = ctx
        self.poll_seconds = poll_seconds

    # -- pages ------------------------------------------------------------------------------------

    def overview_page(self, request: Request) -> Response:
        ov = overview.overview(self.ctx)
        return render(
            request,
            "overview.html",
            ov=ov,
            next=next_of(ov),
            verified_pct=(100.0 * ov.records_verified / ov.records) if ov.records else 0.0,
            charted=chart_key(ov),
            **self._live(ov.generated_at, needs_you(len(ov.attention), ov.batches)),
        )

    def sets_page(self, request: Request) -> Response:
        rows = overview.set_rows(self.ctx)
        state = request.query_params.get("state", "")
        query = request.query_params.get("q", "").strip()
        sort = request.query_params.get("sort", "")
        descending = request.query_params.get("desc", "") in ("1", "true", "yes")
        if sort in SORT_KEYS:
            rows.sort(key=lambda r: _sort_value(r, sort), reverse=descending)
        # Every row is sent (the filter hides the others), so the page's own filter can show them again.
        shown = {r.summary.set for r in rows if _matches(r, state, query)}
        attention = sum(1 for r in rows if r.summary.attention)
        return render(
            request,
            "sets.html",
            rows=rows,
            nexts={r.summary.set: next_of(r, r.summary) for r in rows},
            shown=shown,
            total=len(rows),
            states=list(charts.STATE_COLOURS),
            state=state,
            query=query,
            sort=sort,
            descending=descending,
            **self._live(self.ctx.clock(), needs_you(attention, overview.batches(self.ctx))),
        )

    def set_page(self, request: Request) -> Response:
        detail = self._detail(request)
        if isinstance(detail, Response):
            return detail
        everyone = views.status(self.ctx)
        return render(
            request,
            "set.html",
            d=detail,
            s=detail.summary,
            next=next_of(detail, detail.summary),
            **self._live(
                self.ctx.clock(), needs_you(sum(1 for s in everyone if s.attention), overview.batches(self.ctx))
            ),
        )

    def report_csv(self, request: Request) -> Response:
        set_id = request.path_params["set_id"]
        problems = request.query_params.get("problems", "") in ("1", "true", "yes")
        try:
            alma_id = views.status(self.ctx, set_id)[0].set
        except BadInputError as exc:
            return error_page(request, 404, str(exc))
        # The same CSV as `hwf report SET` (one rule for spreadsheet safety: service/report.csv_safe).
        chunks = report.report_chunks(self.ctx, alma_id, format="csv", problems_only=problems)

        name = f"hwf-report-{_filename(alma_id)}{'-problems' if problems else ''}.csv"
        return StreamingResponse(
            chunks,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def evidence_zip(self, request: Request) -> Response:
        """The set's support-case bundle (what `hwf evidence SET -o FILE.zip` writes), made in memory."""
        set_id = request.path_params["set_id"]
        try:
            bundle, data = evidence.zip_bytes(self.ctx, set_id)
        except BadInputError as exc:
            return error_page(request, 404, str(exc))
        name = f"hwf-evidence-{_filename(bundle.set)}.zip"
        return Response(
            data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    # -- charts -----------------------------------------------------------------------------------

    def verified_svg(self, request: Request) -> Response:
        ov = overview.overview(self.ctx)
        zone = zone_of(request.query_params.get("tz"))
        return _svg(charts.verified_over_time(ov.verified_over_time, ov.records - ov.records_excluded, zone))

    def states_svg(self, request: Request) -> Response:
        ov = overview.overview(self.ctx)
        return _svg(charts.bars(ov.sets_by_state, title="Sets per state", colours=charts.STATE_COLOURS, width=440))

    def verdicts_svg(self, request: Request) -> Response:
        detail = self._detail(request)
        if isinstance(detail, Response):
            return detail
        return _svg(
            charts.bars(
                detail.verdicts,
                title=f"Verdicts of set {detail.summary.set}",
                colours=charts.VERDICT_COLOURS,
            )
        )

    def timeline_svg(self, request: Request) -> Response:
        detail = self._detail(request)
        if isinstance(detail, Response):
            return detail
        zone = zone_of(request.query_params.get("tz"))
        return _svg(charts.timeline(detail.jobs, detail.milestones, self.ctx.clock(), zone))

    # -- JSON -------------------------------------------------------------------------------------

    def api_overview(self, request: Request) -> Response:
        return JSONResponse(overview.overview(self.ctx).as_json())

    def api_sets(self, request: Request) -> Response:
        return JSONResponse([r.as_json() for r in overview.set_rows(self.ctx)])

    def api_set(self, request: Request) -> Response:
        detail = self._detail(request)
        if isinstance(detail, Response):
            return detail
        return JSONResponse(detail.as_json())

    # -- helpers ----------------------------------------------------------------------------------

    def _live(self, now: datetime, waiting_for_you: int) -> dict[str, Any]:
        """What every page carries for its live update: the server's clock (relative times count from it), how
        often to poll, and how many things wait for a person (the tab's title shows it)."""
        return {"now": iso_z(now), "poll_ms": int(self.poll_seconds * 1000), "needs_you": waiting_for_you}

    def _detail(self, request: Request) -> setdetail.SetDetail | Response:
        try:
            return setdetail.set_detail(self.ctx, request.path_params["set_id"])
        except BadInputError as exc:
            return error_page(request, 404, str(exc))


def _svg(text: str) -> Response:
    return Response(text, media_type="image/svg+xml")


def _matches(row: overview.SetRow, state: str, query: str) -> bool:
    s = row.summary
    if state == "attention":
        if not s.attention:
            return False
    elif state == "waiting":
        if not s.waiting or s.attention:
            return False
    elif state and s.state != state:
        return False
    if not query:
        return True
    q = query.casefold()
    return q in s.name.casefold() or q in s.set or q in row.note.casefold()


def _sort_value(row: overview.SetRow, key: str) -> Any:
    s = row.summary
    values: dict[str, Any] = {
        "set": s.set,
        "name": natural_key(s.name),
        "state": STATE_ORDER.get(s.state, 99),
        "records": s.records,
        "verified": row.verified,
        "excluded": s.excluded,
        "note": natural_key(row.note),
        "updated": row.updated_at,
        "checked": (row.last_checked is not None, row.last_checked or row.updated_at),
    }
    return values[key]
