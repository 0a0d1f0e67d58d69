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


def text_width(text: str, font_size: float = 10) -> float:
    """A generous estimate of the width of ``text`` in a sans-serif font: no SVG measuring without
    a script, and a label cut at the edge is worse than some slack."""
    wide = sum(1 for c in text if c.isupper() or c in "mwMW%@")
    return font_size * (0.6 * len(text) + 0.25 * wide)


def _legend_rows(labels: Sequence[str], left: int, right_edge: int) -> list[list[tuple[int, str, float]]]:
    """Legend items (index, label, x) laid out left to right, wrapping to a new row instead of
    running past the right edge."""
    rows: list[list[tuple[int, str, float]]] = [[]]
    x = float(left)
    for k, label in enumerate(labels):
        item = 13 + text_width(label) + 10
        if rows[-1] and x + item > right_edge:
            rows.append([])
            x = float(left)
        rows[-1].append((k, label, x))
        x += item
    return rows


def line_chart(title: str, xs: Sequence[float], lines: Sequence[tuple[str, Sequence[Optional[float]]]], *,
               y_unit: str = "MB", x_unit: str = "s", width: int = 380, height: int = 200,
               reference: Optional[tuple[str, float]] = None, sparse: bool = False) -> str:
    """An SVG line chart: ``lines`` are (label, values) sharing the x values ``xs``; the y axis
    starts at 0. ``reference`` draws a dashed horizontal line (label, y), such as an SLA or the
    host's memory; ``sparse`` marks each point and joins a line's points across missing values
    (lines measured at different x). The legend wraps onto more rows (the chart grows) rather
    than being cut. Returns SVG text, safe to embed in HTML."""
    left, right, top, bottom = 52, 14, 24, 30
    legend = _legend_rows([label for label, _ in lines], left, width - 4)
    height += 13 * (len(legend) - 1)
    plot_w, plot_h = width - left - right, height - top - bottom - 13 * len(legend)
    x_max = max((x for x in xs if math.isfinite(x)), default=1.0) or 1.0
    y_seen = [y for _, ys in lines for y in ys if y is not None and math.isfinite(y)]
    if reference is not None:
        y_seen.append(reference[1])
    y_max = nice_ceiling(max(y_seen, default=0.0))

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - y / y_max)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" class="chart">',
           f"<title>{escape(title)} ({escape(y_unit)} over {escape(x_unit)})</title>",
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
    # the last label ends at the plot's edge rather than centring on it, so "120 s" is never cut
    for fraction, anchor in ((0, "middle"), (0.5, "middle"), (1, "end")):
        x = px(x_max * fraction)
        out.append(f'<text x="{x:.1f}" y="{axis_y + 13}" font-size="10" text-anchor="{anchor}">'
                   f"{escape(_label(x_max * fraction))}{' ' + escape(x_unit) if fraction == 1 else ''}</text>")
    for k, (label, ys) in enumerate(lines):
        color = PALETTE[k % len(PALETTE)]
        segments = _segments(xs, ys)
        if sparse:
            segments = [[point for segment in segments for point in segment]]
        for segment in segments:
            points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in segment)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{points}"/>')
            if sparse:
                out.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>' for x, y in segment)
    if reference is not None:
        y = py(reference[1])
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#444" '
                   f'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{width - right}" y="{y - 3:.1f}" font-size="10" text-anchor="end">'
                   f"{escape(reference[0])}</text>")
    for row, items in enumerate(legend):
        legend_y = axis_y + 30 + 13 * row
        for k, label, x in items:
            color = PALETTE[k % len(PALETTE)]
            out.append(f'<rect x="{x:.1f}" y="{legend_y - 8}" width="10" height="3" fill="{color}"/>')
            out.append(f'<text x="{x + 13:.1f}" y="{legend_y - 4}" font-size="10">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title: str, bars: Sequence[tuple[str, Optional[float]]], *, unit: str = "", width: int = 380) -> str:
    """An SVG chart of horizontal bars, one per (label, value), the value written at its end; a
    bar without a value says so."""
    # the labels are right-aligned before the bars: the widest one sets where the bars start
    left = max(120, 12 + math.ceil(max((text_width(label, 11) for label, _ in bars), default=0.0)))
    right, row = 60, 22
    width = max(width, left + right + 120)
    height = 28 + row * len(bars)
    top_value = nice_ceiling(max((v for _, v in bars if v is not None and math.isfinite(v)), default=0.0))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" class="chart">',
           f"<title>{escape(title)}</title>",
           f'<text x="4" y="15" font-size="12" font-weight="600">{escape(title)}</text>']
    for k, (label, value) in enumerate(bars):
        y = 24 + k * row
        out.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">{escape(label)}</text>')
        if value is None or not math.isfinite(value):
            out.append(f'<text x="{left}" y="{y + 13}" font-size="11" fill="#666">no answer</text>')
            continue
        length = (width - left - right) * value / top_value
        out.append(f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" '
                   f'fill="{PALETTE[k % len(PALETTE)]}"/>')
        out.append(f'<text x="{left + length + 4:.1f}" y="{y + 13}" font-size="11">'
                   f"{escape(_label(value))}{' ' + escape(unit) if unit else ''}</text>")
    out.append("</svg>")
    return "\n".join(out)
