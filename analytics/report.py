"""`flowtel analyze`: the report request for the last N days, and the compute_report dict rendered as text or HTML."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from analytics.query import Scope
from analytics.stats import ReportRequest, default_interval, local_midnight, previous_range

SPARK = "▁▂▃▄▅▆▇█"
MAX_SPARK = 90  # wider series are summed into this many columns
LABELS = {
    "events": "Events", "pageViews": "Page views", "sessions": "Sessions", "visitors": "Visitors",
    "bounceRate": "Bounce rate", "avgSessionDuration": "Avg. session", "viewsPerSession": "Views / session",
    "orders": "Orders", "revenue": "Revenue", "averageOrderValue": "Avg. order value",
    "conversionRate": "Conversion rate",
}
RATES = ("bounceRate", "conversionRate")
MONEY = ("revenue", "averageOrderValue")
MEANS = ("avgSessionDuration", "viewsPerSession")
# Bounce rate going up is bad news: its arrow is marked so, in the HTML colours.
LOWER_IS_BETTER = ("bounceRate",)


def report_request(shop_id: str, days: int, timezone: str, now: datetime) -> ReportRequest:
    """The last `days` local days ending with today (like the API's 7d/30d), compared with the days before."""
    if days < 1:
        raise ValueError("days must be at least 1")
    tz = ZoneInfo(timezone)
    today = now.astimezone(tz).date()
    start = local_midnight(today - timedelta(days=days - 1), tz)
    end = local_midnight(today + timedelta(days=1), tz)
    return ReportRequest(
        scope=Scope(shop_id, start, end, timezone),
        interval=default_interval(start, end),
        compare="previous",
        previous=previous_range(start, end, "previous", None, tz),
    )


# ---- formatting helpers (pure) ---------------------------------------------------------------------------------


def clean(value: Any, width: int | None = None) -> str:
    """Event data made safe for a terminal: control characters (escape sequences) become '?'; long text is cut."""
    text = "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if width is not None and len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return text


def number(value: float | int | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def money(lines: Sequence[dict[str, Any]] | None) -> str:
    if not lines:
        return "–"
    return ", ".join(f"{clean(m['currency'])} {m['amount']:,.2f}" for m in lines)


def metric_value(name: str, value: Any) -> str:
    if name in MONEY:
        return money(value)
    if name in RATES:
        return percent(value)
    if name == "avgSessionDuration":
        return duration(value)
    if name == "viewsPerSession":
        return "–" if value is None else f"{value:.2f}"
    return number(value)


def _arrow(delta: float) -> str:
    return "▲" if delta > 0.05 else "▼" if delta < -0.05 else "="


def change_text(name: str, change: Any, current: Any = None) -> str:
    """The change vs the previous period: percent for totals, percentage points for rates, per currency for money.

    No change (null) reads "new" when a count or an amount grew from nothing, else "–".
    """
    if name in MONEY:
        if not change:
            return "–"
        now = {m["currency"]: m["amount"] for m in current or []}
        return ", ".join(
            f"{clean(cur)} {('new' if now.get(cur) else '–') if pct is None else f'{_arrow(pct)} {pct:+.1f}%'}"
            for cur, pct in change.items()
        )
    if change is None:
        return "new" if name not in RATES and name not in MEANS and current else "–"
    if name in RATES:
        return f"{_arrow(change)} {change:+.1f} pp"
    return f"{_arrow(change)} {change:+.1f}%"


def sparkline(values: Sequence[float | int]) -> str:
    """▁▂▃▄▅▆▇█ scaled from zero to the maximum (zero stays the lowest bar)."""
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(round(v / top * (len(SPARK) - 1))))] for v in values)


def squeeze(values: Sequence[float | int], columns: int = MAX_SPARK) -> list[float]:
    """Sum neighbouring buckets so a long series fits in `columns` characters."""
    if len(values) <= columns:
        return [float(v) for v in values]
    per = math.ceil(len(values) / columns)
    return [float(sum(values[i:i + per])) for i in range(0, len(values), per)]


def _series(report: dict[str, Any], key: str) -> list[float]:
    if key == "revenue":
        return [sum(m["amount"] for m in row["revenue"]) for row in report["timeseries"]]
    return [float(row[key] or 0) for row in report["timeseries"]]


def _period(report: dict[str, Any]) -> tuple[str, str, int]:
    start = date.fromisoformat(report["range"]["start"][:10])
    end = date.fromisoformat(report["range"]["end"][:10])
    return start.isoformat(), (end - timedelta(days=1)).isoformat(), (end - start).days


# ---- terminal --------------------------------------------------------------------------------------------------


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], first_width: int = 34) -> list[str]:
    lines = [title]
    if not rows:
        return [*lines, "  (none in this period)", ""]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    widths[0] = min(max(widths[0], 8), first_width)
    lines.append("  " + headers[0].ljust(widths[0]) + "".join(f"  {h:>{w}}" for h, w in zip(headers[1:], widths[1:],
                                                                                          strict=True)))
    for row in rows:
        lines.append("  " + clean(row[0], widths[0]).ljust(widths[0])
                     + "".join(f"  {c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True)))
    lines.append("")
    return lines


def render_text(report: dict[str, Any]) -> str:
    """The terminal report: totals with change, daily sparklines, top pages, sources, funnel, top products."""
    first, last, days = _period(report)
    tz = report["range"]["timezone"]
    previous = report["range"].get("previous")
    head = f"Flowtel report · {clean(report['shopId'])} · {first} → {last} ({days} day{'s' * (days != 1)}, {tz})"
    lines = [head, "═" * min(len(head), 100)]
    if previous:
        prev_last = (date.fromisoformat(previous["end"][:10]) - timedelta(days=1)).isoformat()
        lines.append(f"compared with {previous['start'][:10]} → {prev_last}")
    lines.append("")

    totals, prev, change = report["totals"], report.get("previous") or {}, report.get("change") or {}
    rows = [[LABELS[name], metric_value(name, totals[name]),
             metric_value(name, prev.get(name)) if prev else "",
             change_text(name, change.get(name), totals[name]) if change else ""]
            for name in LABELS]
    lines += _table("Totals", ["", "this period", "previous", "change"], rows, first_width=18)

    series = report["timeseries"]
    if series:
        unit = report["range"]["interval"]
        cut = 16 if unit == "hour" else 10
        lines.append(f"By {unit} ({series[0]['date'][:cut]} → {series[-1]['date'][:cut]})")
        for key, label in (("pageViews", "Page views"), ("sessions", "Sessions"), ("orders", "Orders"),
                           ("revenue", "Revenue")):
            values = _series(report, key)
            top = max(values) if values else 0
            peak = series[values.index(top)]["date"][:cut] if top > 0 else "–"
            lines.append(f"  {label:<11}{sparkline(squeeze(values))}  max {number(top)} ({peak})")
        lines.append("")

    lines += _table("Top pages", ["path", "page views", "sessions"],
                    [[p["value"], number(p["pageViews"]), number(p["sessions"])] for p in report["topPages"]])
    lines += _table("Sources", ["source", "sessions", "page views"],
                    [[s["value"], number(s["sessions"]), number(s["pageViews"])] for s in report["sources"]])
    if report.get("utmCampaigns"):
        lines += _table("UTM campaigns", ["campaign", "sessions", "page views"],
                        [[s["value"], number(s["sessions"]), number(s["pageViews"])] for s in report["utmCampaigns"]])
    lines += _table("Devices", ["device", "sessions", "page views"],
                    [[s["value"], number(s["sessions"]), number(s["pageViews"])] for s in report["devices"]])

    funnel = report["funnel"]
    lines.append("Funnel")
    start = funnel[0]["sessions"] if funnel else 0
    width = max((len(clean(step["step"])) for step in funnel), default=8)
    for step in funnel:
        bar = "█" * (int(round(step["sessions"] / start * 30)) if start else 0)
        lines.append(f"  {clean(step['step']):<{width}}  {step['sessions']:>8,}  {percent(step['rateFromStart']):>6} "
                     f"of start  {percent(step['rateFromPrevious']):>6} of previous  {bar}")
    lines.append("")

    lines += _table("Top products", ["product", "name", "views", "carts", "units", "revenue"],
                    [[p["productId"], clean(p["name"], 28), number(p["views"]), number(p["addToCarts"]),
                      number(p["purchases"]), money(p["revenue"])] for p in report["topProducts"]], first_width=20)
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML ------------------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px}
.sub{color:#5b6475;margin:0 0 20px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}
.card{background:#fff;border:1px solid #e3e6ec;border-radius:10px;padding:12px 14px}
.card .label{color:#5b6475;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:20px;font-weight:600;margin:2px 0}
.card .prev{color:#5b6475;font-size:12px}
.up{color:#0a7f43}.down{color:#c0392b}.flat{color:#5b6475}
.panel{background:#fff;border:1px solid #e3e6ec;border-radius:10px;padding:14px;overflow-x:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:16px}
table{border-collapse:collapse;width:100%}th,td{padding:5px 8px;border-bottom:1px solid #eef0f4;text-align:right}
th:first-child,td:first-child{text-align:left;word-break:break-all}th{color:#5b6475;font-weight:500;font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:#5b6475}
.legend span{display:inline-block;margin-right:14px;font-size:12px;color:#5b6475}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:middle}
footer{color:#8a93a3;font-size:12px;margin-top:28px}
"""
COLORS = {"pageViews": "#3b6fd8", "sessions": "#16a394", "orders": "#e08a1e"}


def esc(value: Any) -> str:
    """Every value from the report goes through here: HTML-escaped, quotes included."""
    return html.escape("" if value is None else str(value), quote=True)


def _change_class(name: str, change: Any) -> str:
    if not isinstance(change, int | float) or abs(change) <= 0.05:
        return "flat"
    good = change > 0 if name not in LOWER_IS_BETTER else change < 0
    return "up" if good else "down"


def _cards(report: dict[str, Any]) -> str:
    totals, prev, change = report["totals"], report.get("previous") or {}, report.get("change") or {}
    cards = []
    for name, label in LABELS.items():
        delta = change.get(name)
        if name in MONEY and isinstance(delta, dict):
            values = [v for v in delta.values() if v is not None]
            css = _change_class(name, sum(values) / len(values)) if values else "flat"
        else:
            css = _change_class(name, delta)
        cards.append(
            f'<div class="card"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(metric_value(name, totals[name]))}</div>'
            + (f'<div class="{css}">{esc(change_text(name, delta, totals[name]))}</div>'
               f'<div class="prev">previous: {esc(metric_value(name, prev.get(name)))}</div>' if prev else "")
            + "</div>"
        )
    return '<div class="cards">' + "".join(cards) + "</div>"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def svg_timeseries(report: dict[str, Any], width: int = 1000, height: int = 260) -> str:
    """Page views and sessions as lines, orders as bars on their own scale: inline SVG, no script, no fonts."""
    series = report["timeseries"]
    if not series:
        return "<p>No buckets in this range.</p>"
    left, right, top, bottom = 48, 48, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(series)
    step = plot_w / n
    y_max = _nice_max(max(max(_series(report, "pageViews")), max(_series(report, "sessions"))))
    o_max = _nice_max(max(_series(report, "orders")))

    def x(i: int) -> float:
        return left + step * (i + 0.5)

    def y(v: float, scale: float) -> float:
        return top + plot_h - v / scale * plot_h

    label = esc(f"Traffic by {report['range']['interval']}")
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{label}">']
    for k in range(5):
        gy = top + plot_h * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="#eef0f4"/>')
        parts.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">'
                     f'{esc(number(y_max * (4 - k) / 4))}</text>')
        parts.append(f'<text x="{width - right + 6}" y="{gy + 4:.1f}">{esc(number(o_max * (4 - k) / 4))}</text>')
    bar_w = max(1.0, step * 0.6)
    for i, v in enumerate(_series(report, "orders")):
        if v > 0:
            parts.append(f'<rect x="{x(i) - bar_w / 2:.1f}" y="{y(v, o_max):.1f}" width="{bar_w:.1f}" '
                         f'height="{top + plot_h - y(v, o_max):.1f}" fill="{COLORS["orders"]}" opacity="0.55">'
                         f'<title>{esc(series[i]["date"])}: {esc(number(v))} orders</title></rect>')
    for key in ("pageViews", "sessions"):
        points = " ".join(f"{x(i):.1f},{y(v, y_max):.1f}" for i, v in enumerate(_series(report, key)))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{COLORS[key]}" stroke-width="2"/>')
    label_every = max(1, math.ceil(n / 10))
    for i in range(0, n, label_every):
        parts.append(f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle">'
                     f'{esc(series[i]["date"][5:10] if len(series[i]["date"]) >= 10 else series[i]["date"])}</text>')
    parts.append("</svg>")
    legend = ('<div class="legend"><span><i style="background:#3b6fd8"></i>page views</span>'
              '<span><i style="background:#16a394"></i>sessions</span>'
              '<span><i style="background:#e08a1e"></i>orders (right axis)</span></div>')
    return "".join(parts) + legend


def svg_funnel(funnel: Sequence[dict[str, Any]], width: int = 1000) -> str:
    """Horizontal bars, one per step, with the rate from the start and from the previous step."""
    if not funnel:
        return "<p>No funnel steps.</p>"
    row_h, label_w = 34, 170
    height = row_h * len(funnel) + 8
    start = funnel[0]["sessions"] or 0
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="Funnel">']
    for i, step in enumerate(funnel):
        share = step["sessions"] / start if start else 0.0
        bar = (width - label_w - 260) * share
        yy = 4 + i * row_h
        parts.append(f'<text x="0" y="{yy + 20}">{esc(step["step"])}</text>')
        parts.append(f'<rect x="{label_w}" y="{yy + 4}" width="{max(bar, 1):.1f}" height="{row_h - 10}" rx="3" '
                     f'fill="#3b6fd8" opacity="{0.95 - i * 0.12:.2f}"/>')
        parts.append(f'<text x="{label_w + bar + 8:.1f}" y="{yy + 20}">{esc(number(step["sessions"]))} sessions · '
                     f'{esc(percent(step["rateFromStart"]))} of start · {esc(percent(step["rateFromPrevious"]))} '
                     "of previous</text>")
    parts.append("</svg>")
    return "".join(parts)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "<p>None in this period.</p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _breakdown(report: dict[str, Any], key: str, title: str, first: str) -> str:
    rows = [[r["value"], number(r["sessions"]), number(r["pageViews"])] for r in report.get(key) or []]
    return f'<div class="panel"><h2>{esc(title)}</h2>{_html_table([first, "sessions", "page views"], rows)}</div>'


def render_html(report: dict[str, Any], *, generated_at: datetime | None = None) -> str:
    """A self-contained page: inline CSS and SVG, no script, nothing fetched; a CSP forbids loading anything."""
    first, last, days = _period(report)
    previous = report["range"].get("previous")
    subtitle = f"{first} → {last} · {days} day{'s' * (days != 1)} · {report['range']['timezone']}"
    if previous:
        prev_last = (date.fromisoformat(previous["end"][:10]) - timedelta(days=1)).isoformat()
        subtitle += f" · compared with {previous['start'][:10]} → {prev_last}"
    pages = [[p["value"], number(p["pageViews"]), number(p["sessions"])] for p in report["topPages"]]
    products = [[p["productId"], p["name"] or "", number(p["views"]), number(p["addToCarts"]), number(p["purchases"]),
                 money(p["revenue"])] for p in report["topProducts"]]

    def section(title: str, body: str) -> str:
        return f'<div class="panel"><h2>{esc(title)}</h2>{body}</div>'

    stamp = f" at {esc(generated_at.isoformat(timespec='seconds'))}" if generated_at is not None else ""
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>Flowtel report · {esc(report['shopId'])}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Flowtel report · {esc(report['shopId'])}</h1><p class=\"sub\">{esc(subtitle)}</p>",
        _cards(report),
        section(f"By {report['range']['interval']}", svg_timeseries(report)),
        section("Funnel", svg_funnel(report["funnel"])),
        '<div class="grid">',
        section("Top pages", _html_table(["path", "page views", "sessions"], pages)),
        _breakdown(report, "sources", "Sources", "source"),
        _breakdown(report, "utmCampaigns", "UTM campaigns", "campaign"),
        _breakdown(report, "entryPages", "Entry pages", "path"),
        _breakdown(report, "devices", "Devices", "device"),
        _breakdown(report, "browsers", "Browsers", "browser"),
        _breakdown(report, "countries", "Countries", "country"),
        "</div>",
        section("Top products", _html_table(["product", "name", "views", "add to carts", "units", "revenue"],
                                            products)),
        f"<footer>Generated by flowtel analyze{stamp}. Bots excluded; rates are shares of sessions.</footer>",
        "</main></body></html>\n",
    ])
