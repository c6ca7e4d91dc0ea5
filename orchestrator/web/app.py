"""The dashboard's ASGI application: the pages, the JSON under ``/api/``, the SVG charts, and the rules
every response follows (access token, Host check on loopback, security headers).

Read-only by construction: the handlers call the read side (``overview``, ``setdetail``, ``views``, the
report) through a ``Context`` whose sessions cannot write and which has no Alma client to call.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.config import is_loopback_host
from orchestrator.errors import HwfError
from orchestrator.service.context import Context
from orchestrator.web import routes

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "hwf_token"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

Dispatch = Callable[[Request], Awaitable[Response]]


class _Guard(BaseHTTPMiddleware):
    """Host check, access token, and the security headers on every response (errors and 401s included)."""

    def __init__(self, app: Any, *, token: str | None, loopback: bool) -> None:
        super().__init__(app)
        self.token = token
        self.loopback = loopback

    async def dispatch(self, request: Request, call_next: Dispatch) -> Response:
        response = await self._checked(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _checked(self, request: Request, call_next: Dispatch) -> Response:
        if self.loopback and not is_loopback_host(_hostname(request.headers.get("host", ""))):
            # A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) gets nothing.
            return Response("hwf serve answers on 127.0.0.1 and localhost only\n", status_code=400)
        if self.token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None and self._valid(given):
            # The token leaves the address bar (and the history) at once; the cookie carries it from here.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            # One leading slash: `//host/x` (or `/\host/x`) would send the browser to another site.
            path = "/" + request.url.path.lstrip("/\\")
            target = path + (f"?{urlencode(rest)}" if rest else "")
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return redirect
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and self._valid(bearer[7:].strip()):
            return await call_next(request)
        if self._valid(request.cookies.get(TOKEN_COOKIE, "")):
            return await call_next(request)
        return routes.unauthorized(request)

    def _valid(self, candidate: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(candidate.encode(), self.token.encode())


def _hostname(host: str) -> str:
    """The name or address in a Host header, without its port (an IPv6 address keeps its brackets)."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _not_found(request: Request, exc: Exception) -> Response:
    detail = exc.detail if isinstance(exc, HTTPException) else "not found"
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return routes.error_page(request, status, str(detail))


async def _hwf_error(request: Request, exc: Exception) -> Response:
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return routes.error_page(request, 503, line)


async def _database_error(request: Request, exc: Exception) -> Response:
    # The database went away or changed under the dashboard (deleted, downgraded): say so, no traceback.
    cause = str(getattr(exc, "orig", None) or exc).splitlines()
    return routes.error_page(request, 503, f"cannot read the database: {cause[0] if cause else type(exc).__name__}")


def create_app(
    ctx: Context, *, token: str | None = None, loopback: bool = True, poll_seconds: float = 5.0
) -> Starlette:
    """The dashboard over ``ctx`` (give it read-only sessions). ``token``: every request must carry it;
    ``loopback``: answer only requests addressed to 127.0.0.1 / localhost."""
    pages = routes.Pages(ctx, poll_seconds=poll_seconds)
    return Starlette(
        routes=[
            Route("/", pages.overview_page, name="overview"),
            Route("/sets", pages.sets_page, name="sets"),
            Route("/sets/{set_id}", pages.set_page, name="set"),
            Route("/sets/{set_id}/report.csv", pages.report_csv, name="report_csv"),
            Route("/sets/{set_id}/evidence.zip", pages.evidence_zip, name="evidence_zip"),
            Route("/sets/{set_id}/verdicts.svg", pages.verdicts_svg, name="verdicts_svg"),
            Route("/sets/{set_id}/timeline.svg", pages.timeline_svg, name="timeline_svg"),
            Route("/charts/verified.svg", pages.verified_svg, name="verified_svg"),
            Route("/charts/states.svg", pages.states_svg, name="states_svg"),
            Route("/api/overview", pages.api_overview, name="api_overview"),
            Route("/api/sets", pages.api_sets, name="api_sets"),
            Route("/api/sets/{set_id}", pages.api_set, name="api_set"),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(_Guard, token=token, loopback=loopback)],
        exception_handlers={HTTPException: _not_found, HwfError: _hwf_error, SQLAlchemyError: _database_error},
    )
