"""Line charts as inline SVG for the HTML reports (no plotting library, nothing fetched): axes with ticks, a legend,
one line per series, smoothed over a faint raw line where a series is long and noisy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

#: a series' colours in turn (Tableau 10: distinct, readable on white)
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")

#: at most this many points of a series are drawn (a long log is thinned evenly; its last point always kept)
MAX_POINTS = 1200


@dataclass
class Series:
    """One line: ``name`` (the legend's), points ``xs``/``ys``; ``dashed`` (e.g. a baseline), ``markers`` (a dot per
    point, for short series such as validations), ``smooth`` (an exponential moving average over the faint raw
    line)."""

    name: str
    xs: list[float]
    ys: list[float]
    color: str | None = None
    dashed: bool = False
    markers: bool = False
    smooth: bool = False


def fmt_number(v: float) -> str:
    """A tick or value label: 3 significant digits, k/M for large round numbers, exponents for tiny ones."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1:
        return str(int(v)) if v == int(v) else f"{v:.4g}"
    if a < 1e-3:
        mantissa, exp = f"{v:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exp)}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def smoothed(ys: list[float]) -> list[float]:
    """An exponential moving average over about a thirtieth of the series (debiased at its start)."""
    alpha = min(1.0, 30 / max(1, len(ys)))
    out, avg, weight = [], 0.0, 0.0
    for y in ys:
        avg = (1 - alpha) * avg + alpha * y
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def _finite(s: Series, log_y: bool) -> list[tuple[float, float]]:
    """The series' drawable points, in step order, thinned to :data:`MAX_POINTS`."""
    pts = sorted((float(x), float(y)) for x, y in zip(s.xs, s.ys, strict=False)
                 if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y))
    if len(pts) > MAX_POINTS:
        stride = len(pts) / MAX_POINTS
        pts = [pts[int(i * stride)] for i in range(MAX_POINTS - 1)] + [pts[-1]]
    return pts


def _span(values: list[float], pad: float = 0.05) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:  # a flat line: a range around it
        d = abs(lo) * 0.1 or 1.0
        return lo - d, hi + d
    d = (hi - lo) * pad
    return lo - d, hi + d


@dataclass
class _Frame:
    """Where the plot area lies in the SVG and how data maps into it."""

    left: float
    top: float
    width: float
    height: float
    x: tuple[float, float]
    y: tuple[float, float]
    log_y: bool

    def px(self, x: float) -> float:
        return self.left + (x - self.x[0]) / (self.x[1] - self.x[0]) * self.width

    def py(self, y: float) -> float:
        lo, hi = self.y
        if self.log_y:
            y, lo, hi = math.log10(y), math.log10(lo), math.log10(hi)
        frac = (y - lo) / (hi - lo)
        return self.top + (1 - min(1.0, max(0.0, frac))) * self.height  # clipped to the plot area

    def path(self, pts: list[tuple[float, float]]) -> str:
        return "M" + " L".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in pts)


def _legend(series: list[Series], width: float) -> tuple[list[str], float]:
    """The legend's entries laid out in rows across the top, and the height they take."""
    parts, x, y = [], 8.0, 14.0
    for s in series:
        w = 40 + 7.0 * len(s.name)
        if x + w > width and x > 8:
            x, y = 8.0, y + 18
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(f'<line x1="{x:.0f}" y1="{y - 4:.0f}" x2="{x + 18:.0f}" y2="{y - 4:.0f}" stroke="{s.color}" '
                     f'stroke-width="2.5"{dash}/><text x="{x + 23:.0f}" y="{y:.0f}">{escape(s.name)}</text>')
        x += w
    return parts, y + 10


def _axes(f: _Frame, x_label: str, y_label: str) -> list[str]:
    """Grid lines, tick labels and axis titles."""
    parts = []
    if f.log_y:
        lo, hi = math.floor(math.log10(f.y[0])), math.ceil(math.log10(f.y[1]))
        yticks = [10.0**k for k in range(lo, hi + 1) if f.y[0] <= 10.0**k <= f.y[1]] or [f.y[0], f.y[1]]
    else:
        yticks = nice_ticks(*f.y)
    for t in yticks:
        y = f.py(t)
        parts.append(f'<line class="grid" x1="{f.left:.1f}" y1="{y:.1f}" x2="{f.left + f.width:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{f.left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{fmt_number(t)}'
                     f'</text>')
    for t in nice_ticks(*f.x, count=6):
        if t != int(t):  # steps are whole numbers
            continue
        x = f.px(t)
        bottom = f.top + f.height
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 5:.1f}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{bottom + 18:.1f}" text-anchor="middle">{fmt_number(t)}'
                     f'</text>')
    bottom = f.top + f.height
    parts.append(f'<path class="axis" d="M{f.left:.1f},{f.top:.1f} V{bottom:.1f} H{f.left + f.width:.1f}"/>')
    parts.append(f'<text class="label" x="{f.left + f.width / 2:.1f}" y="{bottom + 34:.1f}" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text class="label" transform="translate(14 {f.top + f.height / 2:.1f}) rotate(-90)" '
                     f'text-anchor="middle">{escape(y_label)}</text>')
    return parts


def _lines(f: _Frame, s: Series, pts: list[tuple[float, float]]) -> list[str]:
    """A series' raw line (faint under a smoothed one), its markers, and a hover title with its last value."""
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    title = f"<title>{escape(s.name)}: {fmt_number(pts[-1][1])} at {fmt_number(pts[-1][0])}</title>"
    smooth = s.smooth and len(pts) >= 8
    parts = []
    if len(pts) > 1:
        parts.append(f'<path class="series{" raw" if smooth else ""}" d="{f.path(pts)}" stroke="{s.color}"{dash}>'
                     f'{title}</path>')
    if smooth:
        line = list(zip([x for x, _ in pts], smoothed([y for _, y in pts]), strict=True))
        parts.append(f'<path class="series" d="{f.path(line)}" stroke="{s.color}">{title}</path>')
    if s.markers or len(pts) == 1:
        parts += [f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3" fill="{s.color}"><title>{escape(s.name)}: '
                  f'{fmt_number(y)} at {fmt_number(x)}</title></circle>' for x, y in pts]
    return parts


def line_chart(series: list[Series], x_label: str = "step", y_label: str = "", width: int = 1100, height: int = 320,
               log_y: bool = False, y_range: tuple[float, float] | None = None) -> str:
    """An ``<svg>`` line chart of ``series`` (those without a finite point left out; "" when none has one).
    ``y_range`` fixes the value axis (points beyond it are drawn at its edge), e.g. to keep outliers from flattening
    the rest."""
    drawn = [(s, pts) for s in series if (pts := _finite(s, log_y))]
    if not drawn:
        return ""
    for i, (s, _) in enumerate(drawn):
        s.color = s.color or PALETTE[i % len(PALETTE)]
    legend, legend_h = _legend([s for s, _ in drawn], width)
    xs = [x for _, pts in drawn for x, _ in pts]
    ys = [y for _, pts in drawn for _, y in pts]
    x_span = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, max(xs) + 1)
    if log_y:
        y_span = (min(ys) / 1.3, max(ys) * 1.3) if max(ys) > min(ys) else (min(ys) / 2, max(ys) * 2)
    else:
        y_span = y_range or _span(ys)
    left = 62.0 if y_label else 50.0
    f = _Frame(left, legend_h + 6, width - left - 18, height - legend_h - 52, x_span, y_span, log_y)
    body = [*legend, *_axes(f, x_label, y_label)]
    for s, pts in drawn:
        body += _lines(f, s, pts)
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
            + "".join(body) + "</svg>")
