"""Tiny inline-SVG charts.

Hand-written rather than matplotlib: a few hundred bytes per chart instead of a plotting stack, text
stays real (searchable, selectable) and every label goes through markupsafe's escape, so untrusted
class names cannot inject markup into the report.
"""

from __future__ import annotations

from markupsafe import Markup, escape

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04", "#db2777", "#65a30d"]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def line_chart(series: list[dict], *, x_label: str, y_label: str, width: int = 520, height: int = 300,
               y_range: tuple[float, float] = (0.0, 1.0)) -> Markup:
    """series: [{name, points: [(x, y, lo, hi)]}]; lo/hi (may be None) draw interval whiskers."""
    ml, mr, mt, mb = 52, 150, 12, 40
    pw, ph = width - ml - mr, height - mt - mb
    xs = sorted({p[0] for s in series for p in s["points"]}) or [0.0, 1.0]
    x_lo, x_hi = min(xs), max(xs)
    span = (x_hi - x_lo) or 1.0
    y_lo, y_hi = y_range

    def sx(x):
        return ml + (x - x_lo) / span * pw

    def sy(y):
        return mt + (1 - (y - y_lo) / ((y_hi - y_lo) or 1.0)) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" class="chart">']
    for i in range(6):
        yv = y_lo + (y_hi - y_lo) * i / 5
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{ml - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end" font-size="11">{_fmt(yv)}</text>')
    for xv in xs:
        parts.append(f'<text x="{sx(xv):.1f}" y="{mt + ph + 16}" text-anchor="middle" font-size="11">{escape(_fmt(xv))}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle" font-size="12">{escape(x_label)}</text>'
                 f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {mt + ph / 2})">{escape(y_label)}</text>')
    for k, s in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        pts = sorted(p for p in s["points"] if p[1] is not None)
        if pts:
            path = " ".join(f"{sx(p[0]):.1f},{sy(p[1]):.1f}" for p in pts)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for p in pts:
            if len(p) > 3 and p[2] is not None and p[3] is not None:
                parts.append(f'<line x1="{sx(p[0]):.1f}" x2="{sx(p[0]):.1f}" y1="{sy(p[2]):.1f}" '
                             f'y2="{sy(p[3]):.1f}" stroke="{color}" stroke-opacity="0.6"/>')
            parts.append(f'<circle cx="{sx(p[0]):.1f}" cy="{sy(p[1]):.1f}" r="3" fill="{color}">'
                         f'<title>{escape(s["name"])}: {_fmt(p[1])}</title></circle>')
        ly = mt + 14 + 18 * k
        parts.append(f'<rect x="{ml + pw + 12}" y="{ly - 9}" width="12" height="3" fill="{color}"/>'
                     f'<text x="{ml + pw + 30}" y="{ly - 4}" font-size="11">{escape(s["name"])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def reliability_diagram(bins: list[dict], width: int = 320, height: int = 290) -> Markup:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with ticks on both axes
    and each bin's image count above its bar."""
    ml, mt, size = 44, 18, min(width - 56, height - 62)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="chart">',
             f'<rect x="{ml}" y="{mt}" width="{size}" height="{size}" fill="none" stroke="#9ca3af"/>',
             f'<line x1="{ml}" y1="{mt + size}" x2="{ml + size}" y2="{mt}" stroke="#9ca3af" stroke-dasharray="4"/>']
    for i in range(6):
        t = i / 5
        parts.append(f'<line x1="{ml + t * size:.1f}" x2="{ml + t * size:.1f}" y1="{mt + size}" y2="{mt + size + 4}" '
                     f'stroke="#6b7280"/><text x="{ml + t * size:.1f}" y="{mt + size + 16}" text-anchor="middle" '
                     f'font-size="10">{_fmt(t)}</text>'
                     f'<line x1="{ml - 4}" x2="{ml}" y1="{mt + size - t * size:.1f}" y2="{mt + size - t * size:.1f}" '
                     f'stroke="#6b7280"/><text x="{ml - 6}" y="{mt + size - t * size + 3:.1f}" text-anchor="end" '
                     f'font-size="10">{_fmt(t)}</text>')
    for b in bins:
        if b["accuracy"] is None:
            continue
        x = ml + b["low"] * size
        w = size * (b["high"] - b["low"])
        h = b["accuracy"] * size
        parts.append(f'<rect x="{x:.1f}" y="{mt + size - h:.1f}" width="{w - 1:.1f}" '
                     f'height="{h:.1f}" fill="#2563eb" fill-opacity="0.75"><title>confidence {b["low"]:.1f}-'
                     f'{b["high"]:.1f}: accuracy {b["accuracy"]:.3f}, n={b["n"]}</title></rect>'
                     f'<text x="{x + w / 2:.1f}" y="{mt + size - h - 3:.1f}" text-anchor="middle" font-size="9" '
                     f'fill="#374151">{b["n"]}</text>')
    parts.append(f'<text x="{ml + size / 2}" y="{mt + size + 32}" text-anchor="middle" font-size="12">confidence '
                 f'(number above a bar: images in the bin)</text>'
                 f'<text x="12" y="{mt + size / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 12 {mt + size / 2})">accuracy</text></svg>')
    return Markup("".join(parts))


CHAR_PX = 6.5  # average glyph width at font-size 11: labels are cut to fit their slot, never overlap


def bar_chart(bars: list[dict], *, y_label: str, width: int = 520, height: int = 250) -> Markup:
    """Vertical bars with interval whiskers. bars: [{label, value, lo, hi, muted, sub}]; a muted bar (e.g.
    a group too small to rank) is drawn grey; `sub` (e.g. "n=30") is a second label line. Labels are cut
    to their slot's width (the full label is the bar's tooltip)."""
    ml, mr, mt, mb = 52, 12, 12, 52
    pw, ph = width - ml - mr, height - mt - mb
    n = max(1, len(bars))
    slot = pw / n

    def sy(y):
        return mt + (1 - y) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" class="chart">']
    for i in range(6):
        yv = i / 5
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{ml - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end" font-size="11">{_fmt(yv)}</text>')
    for k, b in enumerate(bars):
        x = ml + k * slot + slot * 0.15
        w = slot * 0.7
        v = b["value"] or 0.0
        color = "#9ca3af" if b.get("muted") else PALETTE[0]
        parts.append(f'<rect x="{x:.1f}" y="{sy(v):.1f}" width="{w:.1f}" height="{sy(0) - sy(v):.1f}" '
                     f'fill="{color}" fill-opacity="0.8"><title>{escape(b["label"])}: {_fmt(v)}</title></rect>')
        if b.get("lo") is not None and b.get("hi") is not None:
            cx = x + w / 2
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{sy(b["lo"]):.1f}" y2="{sy(b["hi"]):.1f}" '
                         f'stroke="#111" stroke-width="1.5"/>'
                         f'<line x1="{cx - 5:.1f}" x2="{cx + 5:.1f}" y1="{sy(b["lo"]):.1f}" y2="{sy(b["lo"]):.1f}" stroke="#111"/>'
                         f'<line x1="{cx - 5:.1f}" x2="{cx + 5:.1f}" y1="{sy(b["hi"]):.1f}" y2="{sy(b["hi"]):.1f}" stroke="#111"/>')
        fits = max(3, int(slot / CHAR_PX) - 1)
        label = str(b["label"])
        label = label if len(label) <= fits else label[:fits - 1] + "…"
        parts.append(f'<text x="{x + w / 2:.1f}" y="{mt + ph + 16}" text-anchor="middle" font-size="11">'
                     f'{escape(label)}</text>')
        if b.get("sub"):
            parts.append(f'<text x="{x + w / 2:.1f}" y="{mt + ph + 30}" text-anchor="middle" font-size="10" '
                         f'fill="#6b7280">{escape(str(b["sub"])[:fits])}</text>')
    parts.append(f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {mt + ph / 2})">{escape(y_label)}</text></svg>')
    return Markup("".join(parts))
