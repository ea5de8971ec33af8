"""Sparklines drawn on the server: an SVG polyline from a series of numbers, no script."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

WIDTH, HEIGHT = 160, 32


def sparkline(
    series: Sequence[float], label: str, width: int = WIDTH, height: int = HEIGHT
) -> Markup:
    """An inline SVG of ``series`` scaled to its maximum (a flat line at the bottom when it
    is all zeros or empty). Only numbers go into the markup; the label is escaped."""
    values = list(series) or [0.0]
    if len(values) == 1:
        values = values * 2
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return Markup(
        '<svg class="spark" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="{label}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" '
        'points="{points}"/></svg>'
    ).format(w=width, h=height, label=label, points=points)
