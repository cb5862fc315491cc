"""The console's charts: inline SVG drawn here, no script and no library.

`changes_chart` draws status changes per day as stacked bars, one colour per
status the teams changed to, with a scale, a date a week apart (ending on the
last day) and a legend.
Each bar has a `<title>` (the browser's tooltip) with that day's figures. The SVG
scales to its container's width (`viewBox`); colours come from the stylesheet's
classes (`s-valid`, ...), so the page needs no inline style.
"""

from __future__ import annotations

from collections.abc import Sequence

from models import TeamStatus
from worker.web.console.markup import Markup, html, join
from worker.web.console.queries import Day

WIDTH = 720
HEIGHT = 240
LEFT = 44
RIGHT = 8
TOP = 12
BOTTOM = 28


def _scale_top(largest: int) -> int:
    """A round number at least `largest` (1, 2, 5 times a power of ten)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= largest:
                return top * step
        top *= 10


def changes_chart(days: Sequence[Day]) -> Markup:
    """Stacked bars of each day's status changes by new status, oldest day left."""
    if not days:
        return Markup("")
    top = _scale_top(max(day.total for day in days) or 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(days)
    bar = max(slot * 0.7, 1.0)
    parts: list[Markup] = []
    for tick in (0, top // 2, top) if top % 2 == 0 else (0, top):
        y = TOP + plot_h - plot_h * tick / top
        parts.append(
            html(
                "<line class='grid' x1='{x1}' x2='{x2}' y1='{y}' y2='{y}'/>"
                "<text class='axis' x='{tx}' y='{ty}' text-anchor='end'>{label}</text>",
                x1=LEFT,
                x2=WIDTH - RIGHT,
                y=f"{y:.1f}",
                tx=LEFT - 6,
                ty=f"{y + 4:.1f}",
                label=tick,
            )
        )
    for index, day in enumerate(days):
        x = LEFT + slot * index + (slot - bar) / 2
        base = float(TOP + plot_h)
        segments = []
        for status in TeamStatus:
            count = day.changes.get(status.value, 0)
            if not count:
                continue
            height = plot_h * count / top
            base -= height
            segments.append(
                html(
                    "<rect class='s-{status}' x='{x}' y='{y}' width='{w}' height='{h}'/>",
                    status=status.value,
                    x=f"{x:.1f}",
                    y=f"{base:.1f}",
                    w=f"{bar:.1f}",
                    h=f"{height:.1f}",
                )
            )
        summary = ", ".join(f"{n} to {s}" for s, n in sorted(day.changes.items()) if n) or "none"
        parts.append(
            html(
                "<g><title>{title}</title>{segments}</g>",
                title=f"{day.day:%Y-%m-%d}: {day.total} changes ({summary})",
                segments=join(segments),
            )
        )
        if (len(days) - 1 - index) % 7 == 0:  # a date a week apart, ending today
            parts.append(
                html(
                    "<text class='axis' x='{x}' y='{y}' text-anchor='middle'>{label}</text>",
                    x=f"{x + bar / 2:.1f}",
                    y=HEIGHT - 8,
                    label=f"{day.day:%m-%d}",
                )
            )
    legend = join(
        html(
            "<li><span class='swatch s-{status}'></span>{status}</li>",
            status=status.value,
        )
        for status in TeamStatus
    )
    total = sum(day.total for day in days)
    return html(
        "<figure class='chart'>"
        "<svg viewBox='0 0 {w} {h}' role='img' aria-label='{label}' "
        "preserveAspectRatio='xMidYMid meet'>{parts}</svg>"
        "<figcaption><ul class='legend'>{legend}</ul></figcaption></figure>",
        w=WIDTH,
        h=HEIGHT,
        label=f"status changes per day over the last {len(days)} days: {total} in all",
        parts=join(parts),
        legend=legend,
    )
