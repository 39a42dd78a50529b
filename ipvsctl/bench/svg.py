"""Pure: a small log-log line chart as SVG text (no plotting library)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

FONT = "font-family='Helvetica, Arial, sans-serif'"


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[tuple[float, float], ...]  # (x, y), both > 0
    color: str
    dash: str = ""  # SVG stroke-dasharray, "" for a solid line
    marker: str = "circle"  # circle, square or triangle


@dataclass(frozen=True)
class LogAxis:
    """A base-10 logarithmic axis from ``low`` to ``high`` (whole decades) over ``length`` pixels."""

    low: float
    high: float
    start: float
    length: float
    inverted: bool = False  # True for a y axis: larger values higher up

    def position(self, value: float) -> float:
        span = math.log10(self.high) - math.log10(self.low)
        fraction = (math.log10(value) - math.log10(self.low)) / span
        return self.start + (1.0 - fraction if self.inverted else fraction) * self.length

    def decades(self) -> list[float]:
        first, last = round(math.log10(self.low)), round(math.log10(self.high))
        return [10.0**e for e in range(first, last + 1)]

    def minor(self) -> list[float]:
        return [d * k for d in self.decades()[:-1] for k in range(2, 10)]


def decade_range(values: Sequence[float]) -> tuple[float, float]:
    """The whole decades enclosing ``values`` (at least one decade wide)."""
    low = 10.0 ** math.floor(math.log10(min(values)))
    high = 10.0 ** math.ceil(math.log10(max(values)))
    if high <= low:
        high = low * 10.0
    return low, high


def _marker(kind: str, x: float, y: float, color: str) -> str:
    if kind == "square":
        return f"<rect x='{x - 3.5:.1f}' y='{y - 3.5:.1f}' width='7' height='7' fill='{color}'/>"
    if kind == "triangle":
        pts = f"{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y + 3.5:.1f} {x - 4.5:.1f},{y + 3.5:.1f}"
        return f"<polygon points='{pts}' fill='{color}'/>"
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{color}'/>"


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 12, extra: str = "") -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size}' {FONT}{extra}>{escape(text)}</text>"
    )


def log_log_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_format: Callable[[float], str] = lambda v: f"{v:,.0f}",
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    width: int = 860,
    height: int = 500,
) -> str:
    """Every series with at least one point, drawn as markers joined by a line, with a legend."""
    drawn = [s for s in series if s.points]
    if not drawn:
        raise ValueError("nothing to plot: no series has a point")
    legend_width = 250
    left, right, top, bottom = 78, legend_width + 20, 44, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x_axis = LogAxis(*decade_range(xs), left, plot_w)
    y_axis = LogAxis(*decade_range(ys), top, plot_h, inverted=True)

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>",
        f"<title>{escape(title)}</title>",
        f"<rect x='0' y='0' width='{width}' height='{height}' fill='white'/>",
        _text(left, 26, title, size=15, extra=" font-weight='bold'"),
    ]
    for v in x_axis.minor():
        x = x_axis.position(v)
        out.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + plot_h}' stroke='#f0f0f0'/>")
    for v in y_axis.minor():
        y = y_axis.position(v)
        out.append(f"<line x1='{left}' y1='{y:.1f}' x2='{left + plot_w}' y2='{y:.1f}' stroke='#f0f0f0'/>")
    for v in x_axis.decades():
        x = x_axis.position(v)
        out.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + plot_h}' stroke='#d0d0d0'/>")
        out.append(_text(x, top + plot_h + 18, x_format(v), anchor="middle"))
    for v in y_axis.decades():
        y = y_axis.position(v)
        out.append(f"<line x1='{left}' y1='{y:.1f}' x2='{left + plot_w}' y2='{y:.1f}' stroke='#d0d0d0'/>")
        out.append(_text(left - 8, y + 4, y_format(v), anchor="end"))
    out.append(f"<rect x='{left}' y='{top}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#333'/>")
    out.append(_text(left + plot_w / 2, height - 16, x_label, anchor="middle", size=13))
    cy = top + plot_h / 2
    out.append(_text(20, cy, y_label, anchor="middle", size=13, extra=f" transform='rotate(-90 20 {cy:.1f})'"))

    for s in drawn:
        points = sorted(s.points)
        coords = [(x_axis.position(x), y_axis.position(y)) for x, y in points]
        dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
        out.append(f"<g class='series'><title>{escape(s.label)}</title>")
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f"<polyline points='{path}' fill='none' stroke={quoteattr(s.color)} stroke-width='2'{dash}/>")
        out.extend(_marker(s.marker, x, y, s.color) for x, y in coords)
        out.append("</g>")

    lx, ly = width - legend_width, top + 6
    for i, s in enumerate(drawn):
        y = ly + i * 22
        dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
        out.append(
            f"<line x1='{lx:.1f}' y1='{y:.1f}' x2='{lx + 30:.1f}' y2='{y:.1f}' "
            f"stroke={quoteattr(s.color)} stroke-width='2'{dash}/>"
        )
        out.append(_marker(s.marker, lx + 15, y, s.color))
        out.append(_text(lx + 38, y + 4, s.label))
    out.append("</svg>")
    return "\n".join(out) + "\n"
