"""Insight detectors: daily series per shop from the metric registry, and the summary, anomaly and trend statistics.

The statistics are pure functions over lists of daily values (unit-tested without DuckDB); `compute_findings` runs
the registry's SQL on the warehouse connection and feeds them. Every number in a Finding comes from SQL or from
these functions; narration (analytics/narration.py) only phrases them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import duckdb

from analytics.metrics import METRICS, finish_metric
from analytics.query import Filter, Query, Scope, Sql, build_query_sql
from analytics.timerange import resolve_timezone

# Bumped whenever a detector's maths or thresholds change, so stored insights say which rules made them.
METHOD_VERSION = "1"
ANOMALY_METHOD = "same-weekday-median+log-mad"
TREND_METHOD = "log-ratio-vs-wow-spread"
RATE_TREND_METHOD = "two-proportion-z"
SUMMARY_METHOD = "window-totals"

COUNT_METRICS = ("events", "pageViews", "sessions", "visitors", "orders")
SERIES_METRICS = (*COUNT_METRICS, "revenue", "conversionRate")
# Days of history read per run: 17 whole weeks, enough for the 28-vs-28 trend and its week-over-week spread.
HISTORY_DAYS = 119

# Anomaly thresholds (issue 5): robust score, absolute change floor and share of baseline, volume, history.
ANOMALY_SCORE = 3.5
ANOMALY_MIN_CHANGE = 10.0
ANOMALY_MIN_CHANGE_SHARE = 0.20
ANOMALY_MIN_VOLUME = 20.0
ANOMALY_MIN_HISTORY = 35
ANOMALY_WEEKS = 4
RESIDUAL_DAYS = 28
MIN_RESIDUALS = 14
# Trend thresholds: score against the week-over-week spread, relative change, volume, spread samples.
TREND_SCORE = 3.0
TREND_MIN_CHANGE = 0.10
TREND_MIN_VOLUME = 100.0
TREND_WINDOWS = (7, 28)
# Historical ratios are taken at every day (overlapping windows): weekly strides gave too few samples for a stable
# MAD, and an unstable scale is what turns noise into false trends.
MIN_SPREAD_SAMPLES = 14
# Summary: below this many sessions in the window the summary carries a low-volume caveat.
SUMMARY_LOW_VOLUME = 100
SUMMARY_DAYS = 7
TOP_N = 5
# MAD → standard deviation for normal data.
MAD_SCALE = 1.4826
# Variance of log(median of 4 Poisson draws) relative to one draw's: the baseline's own noise (pi/2 / 4 weeks).
_BASELINE_NOISE = math.pi / (2 * ANOMALY_WEEKS)

ROOT_CAUSE_DIMENSIONS = ("device", "source", "country", "path", "productId")


# -- pure statistics ------------------------------------------------------------------------------------------


def weekday_baseline(values: Sequence[float], index: int, weeks: int = ANOMALY_WEEKS) -> float | None:
    """Median of the same weekday over the previous `weeks` weeks that exist in the series; None when none do."""
    same = [values[index - 7 * k] for k in range(1, weeks + 1) if index - 7 * k >= 0]
    return statistics.median(same) if same else None


def mad(values: Sequence[float]) -> float:
    """Median absolute deviation from the median (unscaled)."""
    centre = statistics.median(values)
    return statistics.median(abs(v - centre) for v in values)


def log_residual(value: float, baseline: float) -> float:
    return math.log1p(value) - math.log1p(baseline)


def poisson_log_sd(baseline: float) -> float:
    """Smallest credible spread of log(1+x) around a baseline of Poisson counts (the baseline median's noise too)."""
    return math.sqrt((1.0 + _BASELINE_NOISE) / (baseline + 1.0))


def severity_of(score: float, threshold: float) -> str:
    magnitude = abs(score)
    if magnitude >= 2 * threshold:
        return "high"
    if magnitude >= 1.4 * threshold:
        return "medium"
    return "low"


def change_pct(value: float, baseline: float) -> float | None:
    return None if baseline == 0 else round((value - baseline) / baseline * 100, 1)


@dataclass(frozen=True, slots=True)
class AnomalyStat:
    value: float
    baseline: float
    score: float
    scale: float
    flagged: bool


def anomaly_stat(values: Sequence[float], *, volume: Sequence[float] | None = None) -> AnomalyStat | None:
    """The last day of `values` against its same-weekday median baseline; None without 35 days of history.

    Score = (log residual of the day − median residual of the previous 28 days) / max(1.4826·MAD of those
    residuals, Poisson floor). Flagged when |score| >= 3.5, |change| >= max(10, 20% of baseline) and volume >= 20.
    `volume` is the count series that carries the noise (orders for revenue); by default the values themselves.
    """
    counts = volume if volume is not None else values
    if len(values) < ANOMALY_MIN_HISTORY:
        return None
    t = len(values) - 1
    baseline = weekday_baseline(values, t)
    count_baseline = weekday_baseline(counts, t)
    assert baseline is not None and count_baseline is not None  # 35 days always hold four earlier weeks
    residuals = []
    for d in range(t - RESIDUAL_DAYS, t):
        b = weekday_baseline(values, d)
        if b is not None:
            residuals.append(log_residual(values[d], b))
    if len(residuals) < MIN_RESIDUALS:
        return None
    value = values[t]
    scale = max(MAD_SCALE * mad(residuals), poisson_log_sd(count_baseline))
    score = (log_residual(value, baseline) - statistics.median(residuals)) / scale
    change = abs(value - baseline)
    flagged = (abs(score) >= ANOMALY_SCORE
               and change >= max(ANOMALY_MIN_CHANGE, ANOMALY_MIN_CHANGE_SHARE * baseline)
               and max(counts[t], count_baseline) >= ANOMALY_MIN_VOLUME)
    return AnomalyStat(value, baseline, score, scale, flagged)


def _day_noise(values: Sequence[float], end: int) -> float:
    """Robust sd of one day's log value around its same-weekday median, from the days before `end` with four
    earlier weeks (the baseline median's own noise taken out). Overlapping window ratios alone have few
    independent samples, so their spread is noisy; this second estimate keeps a lucky-quiet history from
    turning noise into a trend."""
    residuals = []
    for d in range(7 * ANOMALY_WEEKS, end):
        baseline = weekday_baseline(values, d)
        if baseline is not None:
            residuals.append(log_residual(values[d], baseline))
    if len(residuals) < MIN_RESIDUALS:
        return 0.0
    return MAD_SCALE * mad(residuals) / math.sqrt(1 + _BASELINE_NOISE)


@dataclass(frozen=True, slots=True)
class TrendStat:
    window: int
    value: float
    baseline: float
    score: float
    flagged: bool


def _window_sums(values: Sequence[float], end: int, window: int) -> tuple[float, float]:
    """Sums of the `window` days ending at index `end` (inclusive) and of the `window` days before them."""
    return sum(values[end - window + 1:end + 1]), sum(values[end - 2 * window + 1:end - window + 1])


def trend_stat(values: Sequence[float], window: int, *, volume: Sequence[float] | None = None) -> TrendStat | None:
    """Last `window` days vs the `window` before: log ratio scored against the spread of the same ratio at every
    earlier day whose windows end before the current one (1.4826·MAD, with a Poisson floor). None without
    MIN_SPREAD_SAMPLES such ratios."""
    counts = volume if volume is not None else values
    t = len(values) - 1
    if t - 2 * window + 1 < 0:
        return None
    history = []
    for end in range(t - window, 2 * window - 2, -1):
        current, previous = _window_sums(values, end, window)
        history.append(math.log1p(current) - math.log1p(previous))
    if len(history) < MIN_SPREAD_SAMPLES:
        return None
    current, previous = _window_sums(values, t, window)
    count_current, count_previous = _window_sums(counts, t, window)
    floor = math.sqrt(1 / (count_current + 1) + 1 / (count_previous + 1))
    scale = max(MAD_SCALE * mad(history), _day_noise(values, t) * math.sqrt(2 / window), floor)
    score = (math.log1p(current) - math.log1p(previous)) / scale
    relative = abs(current - previous) / previous if previous else math.inf
    flagged = (abs(score) >= TREND_SCORE and relative >= TREND_MIN_CHANGE
               and max(count_current, count_previous) >= TREND_MIN_VOLUME)
    return TrendStat(window, current, previous, score, flagged)


@dataclass(frozen=True, slots=True)
class RateTrendStat:
    window: int
    value: float | None
    baseline: float | None
    successes: tuple[float, float]
    trials: tuple[float, float]
    score: float
    flagged: bool


def two_proportion_z(x1: float, n1: float, x0: float, n0: float) -> float:
    """z of p1 − p0 with the pooled standard error; 0 when either side has no trials or the pool is degenerate."""
    if n1 <= 0 or n0 <= 0:
        return 0.0
    pooled = (x1 + x0) / (n1 + n0)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n0)
    return 0.0 if variance <= 0 else (x1 / n1 - x0 / n0) / math.sqrt(variance)


def rate_trend_stat(successes: Sequence[float], trials: Sequence[float], window: int) -> RateTrendStat | None:
    """A rate over the last `window` days vs the `window` before, compared with a two-proportion z-test."""
    t = len(trials) - 1
    if t - 2 * window + 1 < 0:
        return None
    x1, x0 = _window_sums(successes, t, window)
    n1, n0 = _window_sums(trials, t, window)
    p1 = x1 / n1 if n1 else None
    p0 = x0 / n0 if n0 else None
    z = two_proportion_z(x1, n1, x0, n0)
    relative = abs(p1 - p0) / p0 if p1 is not None and p0 else math.inf
    flagged = abs(z) >= TREND_SCORE and relative >= TREND_MIN_CHANGE and min(n1, n0) >= TREND_MIN_VOLUME
    return RateTrendStat(window, p1, p0, (x1, x0), (n1, n0), z, flagged)


@dataclass(frozen=True, slots=True)
class Contribution:
    dimension: str
    value: str
    current: float
    baseline: float
    change: float
    share: float | None  # of the total change
    baseline_share: float  # of the dimension's usual total

    @property
    def surprise(self) -> float:
        """Share of the change beyond the value's usual share: a segment that is always 100% explains nothing."""
        return (self.share or 0.0) - self.baseline_share


def contributions(dimension: str, current: dict[str, float], baselines: Sequence[dict[str, float]],
                  total_change: float, top: int = 3) -> list[Contribution]:
    """Which values of one dimension moved with the total: each value's change against its own same-weekday
    median (a value absent on a day counts 0), only those moving in the total's direction, most surprising first
    (share of the change minus usual share, then size of the change)."""
    names = set(current).union(*baselines)
    usual = {name: statistics.median([b.get(name, 0.0) for b in baselines]) if baselines else 0.0 for name in names}
    usual_total = sum(usual.values())
    result = []
    for name in names:
        change = current.get(name, 0.0) - usual[name]
        if change * total_change > 0:
            share = change / total_change if total_change else None
            result.append(Contribution(dimension, name, current.get(name, 0.0), usual[name], change, share,
                                       usual[name] / usual_total if usual_total else 0.0))
    result.sort(key=lambda c: (-c.surprise, -abs(c.change), c.value))
    return result[:top]


# -- findings -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One computed insight: its evidence, before any wording."""

    type: str  # summary | anomaly | trend
    metric: str
    window: str
    value: Any
    baseline: Any
    change_pct: float | None
    score: float | None
    severity: str
    method: str
    sql: str
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self, day: date, timezone: str) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "window": self.window,
            "date": day.isoformat(),
            "timezone": timezone,
            "value": _round(self.value),
            "baseline": _round(self.baseline),
            "changePct": self.change_pct,
            "score": None if self.score is None else round(self.score, 2),
            "severity": self.severity,
            "method": self.method,
            "methodVersion": METHOD_VERSION,
            **self.extra,
            "sql": self.sql,
        }


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if abs(value) < 1 else round(value, 2)
    return value


@dataclass(frozen=True)
class DailySeries:
    """Zero-filled daily values from the shop's first event (at most HISTORY_DAYS back) to the analysed day."""

    days: tuple[date, ...]
    counts: dict[str, list[float]]  # COUNT_METRICS and "conversions" (sessions with a purchase)
    revenue: dict[str, list[float]]  # by currency
    sql: str


def anomaly_findings(series: DailySeries) -> list[Finding]:
    """Anomalies on the last day for every count metric and every currency's revenue."""
    found = []
    candidates: list[tuple[str, list[float], list[float] | None, dict[str, Any]]] = [
        (name, series.counts[name], None, {}) for name in COUNT_METRICS]
    candidates += [("revenue", values, series.counts["orders"], {"currency": currency})
                   for currency, values in sorted(series.revenue.items())]
    for metric, values, volume, extra in candidates:
        stat = anomaly_stat(values, volume=volume)
        if stat is None or not stat.flagged:
            continue
        found.append(Finding("anomaly", metric, "day", stat.value, stat.baseline, change_pct(stat.value, stat.baseline),
                             stat.score, severity_of(stat.score, ANOMALY_SCORE), ANOMALY_METHOD, series.sql,
                             {**extra, "direction": "up" if stat.value > stat.baseline else "down"}))
    return found


def trend_findings(series: DailySeries) -> list[Finding]:
    """7-vs-7 and 28-vs-28 day trends for counts, revenue per currency and the conversion rate."""
    found = []
    candidates: list[tuple[str, list[float], list[float] | None, dict[str, Any]]] = [
        (name, series.counts[name], None, {}) for name in COUNT_METRICS]
    candidates += [("revenue", values, series.counts["orders"], {"currency": currency})
                   for currency, values in sorted(series.revenue.items())]
    for window in TREND_WINDOWS:
        for metric, values, volume, extra in candidates:
            stat = trend_stat(values, window, volume=volume)
            if stat is None or not stat.flagged:
                continue
            found.append(Finding("trend", metric, f"{window}d", stat.value, stat.baseline,
                                 change_pct(stat.value, stat.baseline), stat.score,
                                 severity_of(stat.score, TREND_SCORE), TREND_METHOD, series.sql,
                                 {**extra, "direction": "up" if stat.value > stat.baseline else "down"}))
        rate = rate_trend_stat(series.counts["conversions"], series.counts["sessions"], window)
        if rate is not None and rate.flagged and rate.value is not None and rate.baseline is not None:
            found.append(Finding("trend", "conversionRate", f"{window}d", rate.value, rate.baseline,
                                 change_pct(rate.value, rate.baseline), rate.score,
                                 severity_of(rate.score, TREND_SCORE), RATE_TREND_METHOD, series.sql,
                                 {"direction": "up" if rate.value > rate.baseline else "down",
                                  "changePp": round((rate.value - rate.baseline) * 100, 2),
                                  "sessions": [int(n) for n in rate.trials],
                                  "conversions": [int(x) for x in rate.successes]}))
    return found


# -- DuckDB ---------------------------------------------------------------------------------------------------

# The registry queries insights run (dimensions and metrics are allow-listed names, so the SQL is the registry's).
DAILY_QUERY = Query(metrics=SERIES_METRICS, dimensions=("time:day",), limit=HISTORY_DAYS + 1)
SUMMARY_TOTALS_QUERY = Query(metrics=SERIES_METRICS)
SUMMARY_TOPS = {
    "pages": Query(metrics=("pageViews",), dimensions=("path",), order_by=(("pageViews", "desc"),), limit=TOP_N),
    "sources": Query(metrics=("sessions",), dimensions=("source",), order_by=(("sessions", "desc"),), limit=TOP_N),
    "products": Query(metrics=("events",), dimensions=("productId",),
                      filters=(Filter("is", "eventType", ("product_view",)),), order_by=(("events", "desc"),),
                      limit=TOP_N),
}
_TOP_METRIC = {"pages": "pageViews", "sources": "sessions", "products": "productViews"}


def _local_midnight(day: date, timezone: str) -> datetime:
    tz = resolve_timezone(timezone)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _scope(shop_id: str, first: date, last: date, timezone: str) -> Scope:
    """[first, last] whole local days."""
    return Scope(shop_id, _local_midnight(first, timezone), _local_midnight(last + timedelta(days=1), timezone),
                 timezone)


def _run(conn: duckdb.DuckDBPyConnection, sql: Sql) -> list[tuple[Any, ...]]:
    return conn.execute(sql.text, sql.params).fetchall()


def daily_series(conn: duckdb.DuckDBPyConnection, shop_id: str, day: date, timezone: str) -> DailySeries:
    """The shop's daily values up to `day`, zero-filled from its first event within HISTORY_DAYS."""
    first = day - timedelta(days=HISTORY_DAYS - 1)
    sql = build_query_sql(DAILY_QUERY, _scope(shop_id, first, day, timezone))
    rows = {row[0]: row[1:1 + len(SERIES_METRICS)] for row in _run(conn, sql)}
    start = min((date.fromisoformat(d) for d in rows), default=day)
    days = tuple(start + timedelta(days=i) for i in range((day - start).days + 1))
    counts: dict[str, list[float]] = {name: [] for name in (*COUNT_METRICS, "conversions")}
    revenue: dict[str, list[float]] = {}
    for index, current in enumerate(days):
        row = rows.get(current.isoformat())
        values = dict(zip(SERIES_METRICS, row, strict=True)) if row else {}
        for name in COUNT_METRICS:
            counts[name].append(float(finish_metric(METRICS[name], values.get(name))))
        rate = values.get("conversionRate")
        counts["conversions"].append(float(round(rate * counts["sessions"][-1])) if rate is not None else 0.0)
        for line in finish_metric(METRICS["revenue"], values.get("revenue")):
            revenue.setdefault(line["currency"], [0.0] * len(days))[index] = float(line["amount"])
    return DailySeries(days, counts, revenue, sql.text)


def _totals(conn: duckdb.DuckDBPyConnection, scope: Scope) -> tuple[dict[str, Any], str]:
    sql = build_query_sql(SUMMARY_TOTALS_QUERY, scope)
    rows = _run(conn, sql)
    row = rows[0] if rows else (None,) * (len(SERIES_METRICS) + 1)
    return {name: finish_metric(METRICS[name], value) for name, value in zip(SERIES_METRICS, row, strict=False)}, \
        sql.text


def _tops(conn: duckdb.DuckDBPyConnection, query: Query, scope: Scope) -> dict[str, float]:
    return {str(row[0]) if row[0] is not None else "(none)": float(row[1] or 0) for row in
            _run(conn, build_query_sql(query, scope))}


def summary_finding(conn: duckdb.DuckDBPyConnection, shop_id: str, day: date, timezone: str) -> Finding:
    """The last SUMMARY_DAYS days' totals vs the SUMMARY_DAYS before, with the top pages, sources and products."""
    current_scope = _scope(shop_id, day - timedelta(days=SUMMARY_DAYS - 1), day, timezone)
    previous_scope = _scope(shop_id, day - timedelta(days=2 * SUMMARY_DAYS - 1), day - timedelta(days=SUMMARY_DAYS),
                            timezone)
    current, sql = _totals(conn, current_scope)
    previous, _ = _totals(conn, previous_scope)
    totals: dict[str, Any] = {}
    for name in COUNT_METRICS:
        totals[name] = {"value": current[name], "previous": previous[name],
                        "changePct": change_pct(current[name], previous[name])}
    rate_now, rate_before = current["conversionRate"], previous["conversionRate"]
    totals["conversionRate"] = {
        "value": None if rate_now is None else round(rate_now, 4),
        "previous": None if rate_before is None else round(rate_before, 4),
        "changePp": None if rate_now is None or rate_before is None else round((rate_now - rate_before) * 100, 2)}
    before = {line["currency"]: line["amount"] for line in previous["revenue"]}
    now = {line["currency"]: line["amount"] for line in current["revenue"]}
    totals["revenue"] = [{"currency": c, "value": round(now.get(c, 0.0), 2), "previous": round(before.get(c, 0.0), 2),
                          "changePct": change_pct(now.get(c, 0.0), before.get(c, 0.0))}
                         for c in sorted(set(now) | set(before))]
    tops: dict[str, Any] = {}
    for name, query in SUMMARY_TOPS.items():
        cur, prev = _tops(conn, query, current_scope), _tops(conn, query, previous_scope)
        tops[name] = top_shares(cur, prev, _TOP_METRIC[name])
    sessions = current["sessions"]
    extra: dict[str, Any] = {"totals": totals, "top": tops, "lowVolume": sessions < SUMMARY_LOW_VOLUME}
    return Finding("summary", "sessions", f"{SUMMARY_DAYS}d", sessions, previous["sessions"],
                   change_pct(sessions, previous["sessions"]), None, "info", SUMMARY_METHOD, sql, extra)


def top_shares(current: dict[str, float], previous: dict[str, float], metric: str) -> list[dict[str, Any]]:
    """Top values with their share of the top-N total now and before, and the change in percentage points."""
    total_now, total_before = sum(current.values()), sum(previous.values())
    result = []
    for name, value in sorted(current.items(), key=lambda kv: (-kv[1], kv[0])):
        share = value / total_now if total_now else 0.0
        share_before = previous.get(name, 0.0) / total_before if total_before else 0.0
        result.append({"name": name, metric: int(value), "share": round(share, 4),
                       "shareChangePp": round((share - share_before) * 100, 1)})
    return result


def root_cause(conn: duckdb.DuckDBPyConnection, shop_id: str, day: date, timezone: str, metric: str,
               total_change: float) -> list[Contribution]:
    """For a count anomaly: the value of each root-cause dimension that contributed most, best first."""
    days = [day - timedelta(days=7 * k) for k in range(ANOMALY_WEEKS + 1)]
    scope = _scope(shop_id, days[-1], day, timezone)
    found = []
    for dimension in ROOT_CAUSE_DIMENSIONS:
        query = Query(metrics=(metric,), dimensions=("time:day", dimension),
                      filters=(Filter("is", "time:day", tuple(d.isoformat() for d in days)),), limit=10_000)
        by_day: dict[str, dict[str, float]] = {d.isoformat(): {} for d in days}
        for row in _run(conn, build_query_sql(query, scope)):
            name = str(row[1]) if row[1] is not None else "(none)"
            by_day[row[0]][name] = float(row[2] or 0)
        baselines = [by_day[d.isoformat()] for d in days[1:]]
        found.extend(contributions(dimension, by_day[day.isoformat()], baselines, total_change, top=1))
    found.sort(key=lambda c: (-c.surprise, c.dimension))
    return found


def compute_findings(conn: duckdb.DuckDBPyConnection, shop_id: str, day: date, timezone: str) -> list[Finding]:
    """Every finding for one shop on one (complete) local day: the summary first, then anomalies, then trends."""
    series = daily_series(conn, shop_id, day, timezone)
    findings = [summary_finding(conn, shop_id, day, timezone)]
    for finding in anomaly_findings(series):
        if finding.metric in COUNT_METRICS:
            causes = root_cause(conn, shop_id, day, timezone, finding.metric, finding.value - finding.baseline)
            finding.extra["rootCause"] = [
                {"dimension": c.dimension, "value": c.value, "current": c.current, "baseline": c.baseline,
                 "change": c.change, "share": None if c.share is None else round(c.share, 3),
                 "baselineShare": round(c.baseline_share, 3)} for c in causes]
        findings.append(finding)
    findings.extend(trend_findings(series))
    return findings
