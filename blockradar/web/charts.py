"""Charts for the status page as inline SVG, drawn on the server.

Why SVG from Python and not a charting library: the page must work offline and behind a PBX's
firewall (no CDN), ship inside the wheel, and show the same thing to a browser and to a test that
reads the HTML. A stacked bar per time bucket is all the page needs; a vendored JavaScript library
would be larger than this module and would need a build, a licence file and a CSP exception.
Every text drawn is escaped; colours follow the categories so a chart and its legend agree.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

# one colour per kind of result, readable on white and for common colour blindness (Okabe-Ito)
COLOURS = {
    "answered": "#009E73",
    "analytics_block": "#D55E00",
    "provider_block": "#CC79A7",
    "unwanted": "#E69F00",
    "other": "#999999",
}
ORDER = ("analytics_block", "provider_block", "unwanted", "other", "answered")
LABELS = {"answered": "answered", "analytics_block": "analytics block", "provider_block": "provider block",
          "unwanted": "unwanted (607)", "other": "other failures"}


def _parts(bucket: dict[str, Any]) -> dict[str, int]:
    cats = bucket.get("categories", {})
    parts = {k: int(cats.get(k, 0)) for k in ("answered", "analytics_block", "provider_block", "unwanted")}
    parts["other"] = int(bucket.get("attempts", 0)) - sum(parts.values())
    return parts


def stacked_bars(buckets: Sequence[dict[str, Any]], *, title: str, label_every: int = 1, hours: bool = True,
                 width: int = 480, height: int = 140) -> str:
    """Attempts per bucket, stacked by result (blocked at the bottom, answered on top)."""
    e = html.escape
    n = max(len(buckets), 1)
    top = max((int(b.get("attempts", 0)) for b in buckets), default=0) or 1
    plot_h, base_y, left = height - 34, height - 20, 34
    bar_w = (width - left - 4) / n
    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{e(title)}</title>',
           f'<text x="{left}" y="10" class="axis">{top} calls</text>',
           f'<line x1="{left}" y1="{base_y}" x2="{width - 2}" y2="{base_y}" stroke="#bbb"/>']
    for i, bucket in enumerate(buckets):
        x = left + i * bar_w
        y = float(base_y)
        parts = _parts(bucket)
        tip = ", ".join(f"{LABELS[k]} {parts[k]}" for k in ORDER if parts[k])
        out.append(f'<g><title>{e(_when(bucket.get("start"), hours))}: {e(tip or "no calls")}</title>')
        for key in ORDER:
            value = parts[key]
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            out.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
                       f'fill="{COLOURS[key]}" data-series="{key}" data-value="{value}"/>')
        out.append("</g>")
        if i % label_every == 0:
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" class="axis" text-anchor="middle">'
                       f'{e(_when(bucket.get("start"), hours, short=True))}</text>')
    out.append("</svg>")
    return "".join(out)


def legend() -> str:
    items = "".join(f'<span class="key"><span class="swatch" style="background:{COLOURS[k]}"></span>'
                    f'{html.escape(LABELS[k])}</span>' for k in ORDER)
    return f'<div class="legend">{items}</div>'


def _when(start: Any, hours: bool, short: bool = False) -> str:
    if not isinstance(start, int | float):
        return ""
    if hours:
        return time.strftime("%H:%M" if short else "%Y-%m-%d %H:%M UTC", time.gmtime(start))
    return time.strftime("%m-%d" if short else "%Y-%m-%d UTC", time.gmtime(start))
