"""Charts for the console's rates page, drawn on the server as SVG (no script, no front-end build).

Each function returns SVG markup safe to put in a page (the template marks it `| safe`): every label
and number is escaped or formatted here, and the numbers
drawn are also given as text (a `<title>` per bar, which browsers show on hover, and the tables
beside the charts), so the page reads the same without the pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BAR_COLOUR = "#1f5fbf"
ERROR_COLOUR = "#b3261e"


def columns(values: Sequence[float], labels: Sequence[str], *, width: int = 480, height: int = 40,
            colour: str = BAR_COLOUR, unit: str = "", name: str = "") -> str:
    """A column per value (e.g. per minute), scaled to the largest; empty columns leave a baseline only."""
    count = max(1, len(values))
    top = max((v for v in values), default=0) or 1
    step = width / count
    bars = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        tall = 0 if value <= 0 else max(1.0, (height - 2) * value / top)
        bars.append(f'<rect x="{i * step:.1f}" y="{height - tall:.1f}" width="{max(1.0, step - 1):.1f}" '
                    f'height="{tall:.1f}" fill="{escape(colour)}" data-value="{value:g}">'
                    f"<title>{escape(label)}: {value:g}{escape(unit)}</title></rect>")
    return (f'<svg class="chart" role="img" aria-label="{escape(name)}" viewBox="0 0 {width} {height}" '
                  f'width="{width}" height="{height}"><line x1="0" y1="{height - 0.5}" x2="{width}" '
                  f'y2="{height - 0.5}" stroke="#d9dee5"/>{"".join(bars)}</svg>')


def bars(items: Sequence[tuple[str, float]], *, width: int = 420, unit: str = "", colour: str = BAR_COLOUR,
         name: str = "") -> str:
    """Horizontal bars, one per (label, value), scaled to the largest, each labelled with its value."""
    row, label_width = 22, 170
    top = max((v for _, v in items), default=0) or 1
    height = max(row, row * len(items))
    drawn = []
    for i, (label, value) in enumerate(items):
        y = i * row
        length = 0 if value <= 0 else max(1.0, (width - label_width - 70) * value / top)
        drawn.append(f'<text x="0" y="{y + 15}" font-size="12" fill="#1d2430">{escape(label)}</text>'
                     f'<rect x="{label_width}" y="{y + 4}" width="{length:.1f}" height="14" fill="{escape(colour)}" '
                     f'data-value="{value:g}"><title>{escape(label)}: {value:g}{escape(unit)}</title></rect>'
                     f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" font-size="12" fill="#5f6b7a">'
                     f"{value:g}{escape(unit)}</text>")
    return (f'<svg class="chart" role="img" aria-label="{escape(name)}" viewBox="0 0 {width} {height}" '
                  f'width="{width}" height="{height}">{"".join(drawn)}</svg>')
