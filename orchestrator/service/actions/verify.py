"""Verifying a set once its integration run has settled: every included record's handle asked of the handle
proxy and compared with the record's own Primo page; when every one resolves, the ``verify`` transition."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from orchestrator.domain.handles import Verdict
from orchestrator.domain.steps import Step
from orchestrator.domain.wording import plural, verb
from orchestrator.resolver import Verifier
from orchestrator.service import verification
from orchestrator.service.actions.base import Plan, PlannedAction, PlannedRequest, Preview, Scene, arrow
from orchestrator.service.actions.fire import fire_step
from orchestrator.store.models import Record

if TYPE_CHECKING:
    from orchestrator.service.context import Context


class Verify:
    """Resolve the handles not yet OK; move to verified when all are."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        if verification.run(ctx, set_id, only_problems=True):
            fire_step(ctx, set_id, Step.VERIFY)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        cfg = scene.ctx.config
        stmt = (
            select(Record.handle)
            .where(Record.set_id == scene.row.id, Record.excluded.is_(False))
            .where((Record.verdict.is_(None)) | (Record.verdict != Verdict.OK.value))
            .order_by(Record.id)
        )
        handles = list(scene.session.scalars(stmt))
        with_handle = [h for h in handles if h]
        requests: tuple[PlannedRequest, ...] = ()
        if with_handle:
            # The first request of each handle: the public proxy's answer, unless configured to ask the primary.
            primary_first = cfg.handles.authoritative or not cfg.handles.public_cache_check
            with Verifier(cfg.handles.resolver_url, cfg.primo) as verifier:
                request = verifier.api_request(with_handle[0], authoritative=primary_first)
            second = (
                ""
                if primary_first
                else "; a handle the public proxy does not answer with its own record is asked again at the "
                "primary server (auth=true)"
            )
            requests = (
                PlannedRequest.of(
                    request,
                    full_url=True,
                    count=len(with_handle),
                    note=f"no API key is sent to the handle proxy; at most {cfg.handles.concurrency} at "
                    f"a time, {cfg.handles.requests_per_second:g} per second{second}",
                ),
            )
        notes = []
        if len(handles) > len(with_handle):
            missing = len(handles) - len(with_handle)
            notes.append(f"{plural(missing, 'record')} {verb(missing, 'has')} no handle: NO_HANDLE, no request")
        summary = f"verify: resolve the handles of {plural(len(handles), 'record')} not yet OK at the handle proxy"
        transition = (
            f"{arrow(Step.VERIFY)} (verify) once every included record's handle resolves to its own Primo record; "
            "otherwise attention (verify)"
        )
        return Preview((PlannedAction(when, "verify", summary, requests, tuple(notes)),), transition)
