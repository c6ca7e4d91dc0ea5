"""Charts drawn on the server as SVG: no script, no external library, a ``<title>`` and ``<desc>`` in each
as its text alternative. Every text that goes in is escaped; colours are presentation attributes (the
Content-Security-Policy allows no inline style)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from xml.sax.saxutils import escape

from orchestrator.service.overview import SeriesPoint
from orchestrator.service.setdetail import JobRun, Milestone
from orchestrator.web.moments import stamp
from orchestrator.web.text import clean

STATE_COLOURS = {
    "created": "#9aa5b1",
    "identifiers_copied": "#7aa2d6",
    "migrated": "#4f7fc0",
    "integrated": "#2f5fa0",
    "verified": "#2e8b57",
}
VERDICT_COLOURS = {"OK": "#2e8b57", "UNCHECKED": "#9aa5b1", "EXCLUDED": "#c7b37a"}
_PROBLEM = "#c0392b"
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _t(text: object) -> str:
    return escape(clean(str(text)), {'"': "&quot;"})


def _open(width: int, height: int, title: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="t d">',
        f'<title id="t">{_t(title)}</title>',
        f'<desc id="d">{_t(desc)}</desc>',
    ]


def bars(counts: Mapping[str, int], *, title: str, colours: Mapping[str, str] | None = None, width: int = 560) -> str:
    """A horizontal bar per category, its count written beside it."""
    colours = colours or {}
    items = list(counts.items())
    desc = ", ".join(f"{k}: {v}" for k, v in items) or "nothing to show"
    label_w, row_h = 170, 26
    height = max(row_h * len(items) + 10, 40)
    top = max((v for _, v in items), default=0) or 1
    out = _open(width, height, title, desc)
    if not items:
        out.append(f'<text x="10" y="24" {_FONT} fill="#555">nothing to show yet</text>')
    for i, (label, value) in enumerate(items):
        y = 5 + i * row_h
        length = round((width - label_w - 60) * value / top)
        colour = colours.get(label, _PROBLEM)
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" {_FONT} fill="#222">{_t(label)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(length, 1)}" height="{row_h - 8}" fill="{colour}"/>')
        out.append(f'<text x="{label_w + length + 6}" y="{y + 16}" {_FONT} fill="#222">{value:,}</text>')
    out.append("</svg>")
    return "\n".join(out)


def verified_over_time(points: Sequence[SeriesPoint], total: int, zone: tzinfo = UTC) -> str:
    """Records verified (cumulative) against time, as a step line, with the total as a dashed ceiling; its
    moments written in ``zone``."""
    width, height, left, right, top, bottom = 640, 240, 56, 16, 16, 36
    title = "Records verified over time"
    if not points:
        out = _open(width, height, title, f"no record verified yet, of {total:,}")
        out.append(f'<text x="{left}" y="{height // 2}" {_FONT} fill="#555">no record verified yet</text>')
        out.append("</svg>")
        return "\n".join(out)
    last = points[-1]
    first, latest = stamp(points[0].at, zone, seconds=False), stamp(last.at, zone, seconds=False)
    desc = f"{last.records:,} of {total:,} records verified; first at {first}, latest at {latest}"
    out = _open(width, height, title, desc)
    t0, t1 = points[0].at.timestamp(), last.at.timestamp()
    span = (t1 - t0) or 1.0
    fine = span < 3600
    ceiling = max(total, last.records, 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(at: datetime) -> float:
        return left + plot_w * (at.timestamp() - t0) / span

    def y(n: int) -> float:
        return top + plot_h * (1 - n / ceiling)

    path = [f"M{left:.1f},{y(0):.1f}"]
    previous = 0
    for p in points:
        path.append(f"L{x(p.at):.1f},{y(previous):.1f}L{x(p.at):.1f},{y(p.records):.1f}")
        previous = p.records
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>')
    out.append(
        f'<line x1="{left}" y1="{y(total):.1f}" x2="{left + plot_w}" y2="{y(total):.1f}" stroke="#2e8b57" '
        'stroke-dasharray="4 4"/>'
    )
    out.append(f'<path d="{"".join(path)}" fill="none" stroke="#2f5fa0" stroke-width="2"/>')
    out.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" {_FONT} fill="#222">{ceiling:,}</text>')
    out.append(f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" {_FONT} fill="#222">0</text>')
    out.append(
        f'<text x="{left}" y="{height - 12}" {_FONT} fill="#222">{_t(stamp(points[0].at, zone, seconds=fine))}</text>'
    )
    end = _t(stamp(last.at, zone, seconds=fine))
    out.append(f'<text x="{left + plot_w}" y="{height - 12}" text-anchor="end" {_FONT} fill="#222">{end}</text>')
    out.append("</svg>")
    return "\n".join(out)


_GOOD = ("COMPLETED_SUCCESS", "COMPLETED_WARNING")
_SKIPPED = "not_needed"  # a step hwf decided it need not run: no job was submitted


def _run_line(r: JobRun, zone: tzinfo) -> str:
    if r.state == _SKIPPED:
        return f"{r.step} attempt {r.number}: skipped, not needed (decided {stamp(r.begun_at, zone)})"
    ended = f", ended {stamp(r.ended_at, zone)}" if r.ended_at else ""
    return f"{r.step} attempt {r.number}: {r.status or r.state}, submitted {stamp(r.begun_at, zone)}{ended}"


def _run_end(r: JobRun, now: datetime) -> datetime:
    """Where a run's bar ends: its end, now while it runs; a skipped step has no length."""
    if r.state == _SKIPPED:
        return r.begun_at
    return r.ended_at or now


def _skipped_mark(x: float, mid: float, *, right_edge: float) -> list[str]:
    """A skipped step: a hollow grey diamond where hwf decided, and the word."""
    anchor, dx = ("end", -9) if x + 130 > right_edge else ("start", 9)
    return [
        f'<path d="M{x:.1f},{mid - 6}l6,6l-6,6l-6,-6z" fill="#fff" stroke="#7b8794" stroke-width="1.5"/>',
        f'<text x="{x + dx:.1f}" y="{mid + 4}" text-anchor="{anchor}" {_FONT} fill="#52606d">'
        "skipped: not needed</text>",
    ]


def _run_colour(status: str | None, state: str) -> str:
    if state in ("submitting", "submitted", "waiting_operator"):
        return "#4f7fc0"
    if status in _GOOD:
        return "#2e8b57"
    return _PROBLEM


def timeline(runs: Sequence[JobRun], milestones: Sequence[Milestone], now: datetime, zone: tzinfo = UTC) -> str:
    """The set's Alma jobs as bars on a time axis (submitted to ended, or to now while running), with its
    milestones as marks along the top; its moments written in ``zone``."""
    title = "Timeline of the set's jobs and milestones"
    lines = [_run_line(r, zone) for r in runs] + [f"{m.to_state} at {stamp(m.at, zone)}" for m in milestones]
    width, left, right, row_h, top = 720, 150, 50, 24, 46
    height = top + row_h * max(len(runs), 1) + 30
    out = _open(width, height, title, "; ".join(lines) or "no job yet")
    moments = [r.begun_at for r in runs] + [_run_end(r, now) for r in runs] + [m.at for m in milestones]
    if not moments:
        out.append(f'<text x="10" y="{top}" {_FONT} fill="#555">no job submitted yet</text>')
        out.append("</svg>")
        return "\n".join(out)
    t0, t1 = min(moments).timestamp(), max(moments).timestamp()
    span = (t1 - t0) or 1.0
    plot_w = width - left - right

    def x(at: datetime) -> float:
        return left + plot_w * (at.timestamp() - t0) / span

    previous, lift = -1000.0, False
    for m in milestones:
        mx = x(m.at)
        lift = not lift if mx - previous < 110 else False  # labels close together take turns in two rows
        previous = mx
        out.append(
            f'<line x1="{mx:.1f}" y1="{top - 6}" x2="{mx:.1f}" y2="{height - 26}" stroke="#2f5fa0" '
            'stroke-dasharray="2 3"/>'
        )
        out.append(
            f'<text x="{mx:.1f}" y="{top - (22 if lift else 9)}" text-anchor="middle" {_FONT} fill="#2f5fa0">'
            f"{_t(m.to_state or '')}</text>"
        )
    for i, r in enumerate(runs):
        y = top + i * row_h
        start, end = x(r.begun_at), x(_run_end(r, now))
        out.append(
            f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" {_FONT} fill="#222">'
            f"{_t(f'{r.step} #{r.number}')}</text>"
        )
        if r.state == _SKIPPED:
            out.extend(_skipped_mark(start, y + row_h // 2, right_edge=left + plot_w))
            continue
        out.append(
            f'<rect x="{start:.1f}" y="{y + 5}" width="{max(end - start, 2):.1f}" height="{row_h - 10}" '
            f'fill="{_run_colour(r.status, r.state)}"/>'
        )
    fine = span < 86400
    out.append(
        f'<text x="{left}" y="{height - 8}" {_FONT} fill="#222">{_t(stamp(min(moments), zone, seconds=fine))}</text>'
    )
    if t1 > t0:  # one moment (a skipped step alone): one label
        out.append(
            f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" {_FONT} fill="#222">'
            f"{_t(stamp(max(moments), zone, seconds=fine))}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)
