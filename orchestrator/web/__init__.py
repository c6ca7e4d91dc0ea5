"""``hwf serve``: the read-only web dashboard (overview, sets, one set, JSON under ``/api/``)."""

from __future__ import annotations

from orchestrator.web.app import TOKEN_COOKIE, create_app
from orchestrator.web.server import bind, serve, server_config

__all__ = ["TOKEN_COOKIE", "bind", "create_app", "serve", "server_config"]
