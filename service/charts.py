"""Small line charts as inline SVG, for pages that must not load any script or stylesheet."""
from __future__ import annotations

import math
from html import escape
from typing import Optional, Sequence

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
MAX_POINTS = 400


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power + 1e-12:
            return step * power
    return 10 * power


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _segments(xs: Sequence[float], ys: Sequence[Optional[float]]) -> list[list[tuple[float, float]]]:
    """Points in runs without gaps (None or NaN breaks a line), at most MAX_POINTS in all."""
    stride = max(1, math.ceil(len(xs) / MAX_POINTS))
    segments: list[list[tuple[float, float]]] = [[]]
    for i in range(0, len(xs), stride):
        y = ys[i] if i < len(ys) else None
        if y is None or not math.isfinite(y):
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((xs[i], y))
    return [s for s in segments if s]


def line_chart(title: str, xs: Sequence[float], lines: Sequence[tuple[str, Sequence[Optional[float]]]], *,
               y_unit: str = "MB", x_unit: str = "s", width: int = 380, height: int = 200) -> str:
    """An SVG line chart: ``lines`` are (label, values) sharing the x values ``xs``; the y axis
    starts at 0. Returns SVG text, safe to embed in HTML."""
    left, right, top, bottom = 52, 10, 24, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    x_max = max((x for x in xs if math.isfinite(x)), default=1.0) or 1.0
    y_seen = [y for _, ys in lines for y in ys if y is not None and math.isfinite(y)]
    y_max = nice_ceiling(max(y_seen, default=0.0))

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - y / y_max)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" class="chart">',
           f"<title>{escape(title)}</title>",
           f'<text x="{left}" y="15" font-size="12" font-weight="600">{escape(title)}</text>']
    for fraction in (0, 0.5, 1):
        y = py(y_max * fraction)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                   f"{escape(_label(y_max * fraction))}</text>")
    out.append(f'<text x="{left - 4}" y="{top - 6}" font-size="9" text-anchor="end" fill="#666">'
               f"{escape(y_unit)}</text>")
    axis_y = top + plot_h
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{axis_y}" stroke="#999"/>')
    for fraction in (0, 0.5, 1):
        x = px(x_max * fraction)
        out.append(f'<text x="{x:.1f}" y="{axis_y + 13}" font-size="10" text-anchor="middle">'
                   f"{escape(_label(x_max * fraction))}{' ' + escape(x_unit) if fraction == 1 else ''}</text>")
    for k, (label, ys) in enumerate(lines):
        color = PALETTE[k % len(PALETTE)]
        for segment in _segments(xs, ys):
            points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in segment)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{points}"/>')
    legend_x, legend_y = left, height - 8
    for k, (label, _) in enumerate(lines):
        color = PALETTE[k % len(PALETTE)]
        out.append(f'<rect x="{legend_x}" y="{legend_y - 8}" width="10" height="3" fill="{color}"/>')
        out.append(f'<text x="{legend_x + 13}" y="{legend_y - 4}" font-size="10">{escape(label)}</text>')
        legend_x += 18 + 6 * len(label)
    out.append("</svg>")
    return "\n".join(out)
