"""Bar charts as data for server-rendered inline SVG (no JavaScript, no inline styles).

The template draws what these functions compute: each bar's rectangle in a fixed viewBox, its
label and value, and a few gridlines. SVG scales with its container, so one layout serves
desktop and phone widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 220
PAD_LEFT = 56
PAD_RIGHT = 8
PAD_TOP = 12
PAD_BOTTOM = 40


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float
    shown: str  # the value as text (e.g. "$0.078")


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True, slots=True)
class BarChart:
    title: str
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    total: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    right: int = WIDTH - PAD_RIGHT
    # Every how many bars an x label is drawn (so 30 days of labels do not collide).
    label_every: int = 1

    @property
    def empty(self) -> bool:
        return not any(bar.value for bar in self.bars)


def nice_max(value: float) -> float:
    """The smallest 1/2/4 x 10^n at or above `value` (at least 1): a readable axis top whose
    half, the middle gridline, is a round number too."""
    if value <= 1:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 4, 10):
        top = step * 10**exponent
        if top >= value:
            return float(top)
    return float(10 ** (exponent + 1))


def bar_chart(
    title: str,
    points: Sequence[tuple[str, float]],
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
    total: str | None = None,
) -> BarChart:
    """Vertical bars for (label, value) points, left to right."""
    top = nice_max(max((v for _, v in points), default=0.0))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(len(points), 1)
    gap = min(slot * 0.2, 8)
    bars = []
    for index, (label, value) in enumerate(points):
        h = plot_h * (value / top) if top else 0.0
        bars.append(
            Bar(
                x=round(PAD_LEFT + index * slot + gap / 2, 2),
                y=round(PAD_TOP + plot_h - h, 2),
                width=round(max(slot - gap, 1), 2),
                height=round(h, 2),
                label=label,
                value=value,
                shown=fmt(value),
            )
        )
    ticks = tuple(Tick(round(PAD_TOP + plot_h * (1 - f), 2), fmt(top * f)) for f in (0, 0.5, 1))
    shown_total = total if total is not None else fmt(sum(v for _, v in points))
    every = max(1, math.ceil(len(points) / 10))
    return BarChart(title, tuple(bars), ticks, shown_total, label_every=every)
