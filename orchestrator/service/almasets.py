"""Making itemized Alma sets crash-safely: ``hwf add --from-csv`` batches, snapshots of logical sets, integration
batches.

A set is created under a name hwf recorded first, and a name Alma sets must keep unique (402263): after a crash
or a lost reply, the set is found again by that name, never created twice. Members go in at most 1000 a call and
are never re-sent blindly: after an unknown outcome the set's members are listed and only the missing ones added.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.alma.types import AlmaSetInfo
from orchestrator.errors import AlmaError, AlmaUnreachableError
from orchestrator.service.context import Context

MAX_MEMBERS_PER_CALL = 1000
_REJECTED_CODES = frozenset({"60116", "60120"})  # member not valid for the content (and identifier type)
_ALREADY_IN_SET = "60115"
_NAME_TAKEN = "402263"


def exact_sets(ctx: Context, name: str) -> list[AlmaSetInfo]:
    """Alma sets whose name is exactly ``name`` (Alma's ``q=name~`` search matches words, not names)."""
    return [s for s in ctx.alma.find_sets(name) if s.name == name]


def create_named(
    ctx: Context, name: str, *, description: str, maybe_made: bool, from_logical: str | None = None
) -> AlmaSetInfo:
    """The one Alma set named ``name``: found, when an earlier run may have made it (``maybe_made``: the name
    was recorded, after Alma was seen to have no set of that name, before a create whose outcome is unknown),
    else created now (empty, or populated by Alma from the logical set ``from_logical``).

    :raises AlmaError: Alma refused, or has several sets of that name.
    """
    found = exact_sets(ctx, name) if maybe_made else []
    if not found:
        try:
            if from_logical is not None:
                created = ctx.alma.create_set_from_logical(from_logical, name, description=description)
            else:
                created = ctx.alma.create_set(name, description=description)
        except AlmaUnreachableError:
            found = exact_sets(ctx, name)
            if not found:
                raise
        except AlmaError as exc:
            if exc.code != _NAME_TAKEN:
                raise
            found = exact_sets(ctx, name)
            if not found:
                raise
        else:
            found = [created]
    if len(found) > 1:
        raise AlmaError(f"Alma has {len(found)} sets named {name!r}; delete the extra ones and run again")
    return found[0]


def fill_set(ctx: Context, info: AlmaSetInfo, ids: Sequence[str]) -> None:
    """Add the ids that are not in the Alma set yet, ≤ 1000 a call; ids Alma rejects are left out."""
    if info.member_count:
        present = {m.id for m in ctx.alma.iter_set_members(info.id)}
        missing = [m for m in ids if m not in present]
    else:
        missing = list(ids)
    for start in range(0, len(missing), MAX_MEMBERS_PER_CALL):
        chunk = missing[start : start + MAX_MEMBERS_PER_CALL]
        try:
            _add(ctx, info, chunk)
        except AlmaUnreachableError:
            # Never re-send blindly: Alma may have added some or all of the chunk.
            present = {m.id for m in ctx.alma.iter_set_members(info.id)}
            rest = [m for m in chunk if m not in present]
            if rest:
                _add(ctx, info, rest)


def _add(ctx: Context, info: AlmaSetInfo, ids: list[str]) -> None:
    """``add_members`` ignoring invalid ids; if Alma refuses the call for an invalid id anyway, halve the
    chunk until the refused ids stand alone (and stay out)."""
    try:
        ctx.alma.add_members(info, ids, fail_on_invalid_id=False)
    except AlmaUnreachableError:
        raise
    except AlmaError as exc:
        if exc.code == _ALREADY_IN_SET:
            present = {m.id for m in ctx.alma.iter_set_members(info.id)}
            rest = [m for m in ids if m not in present]
            if len(rest) == len(ids):
                raise
            if rest:
                _add(ctx, info, rest)
            return
        if exc.code not in _REJECTED_CODES:
            raise
        if len(ids) > 1:
            half = len(ids) // 2
            _add(ctx, info, ids[:half])
            _add(ctx, info, ids[half:])
