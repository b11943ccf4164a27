"""The built-in chat router: common questions recognised by keywords and answered with fixed, parameterised
queries from the metric registry, run in the same sandbox as model SQL. Used when no LLM is configured."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from analytics.chat import ChatAnswer, QueryLog
from analytics.metrics import METRICS, finish_metric
from analytics.query import Filter, Query, Scope, build_query_sql
from analytics.sandbox import Result, Sandbox
from analytics.stats import REPORT_BASE_SQL, local_midnight, period_range, top_products_sql

# Registry SQL groups by shop; the sandbox has one shop and no shop column, so it gets a constant one back.
WITH_SHOP = "WITH events AS (SELECT *, ''::VARCHAR AS shop_id FROM events) SELECT * FROM ({body}) AS q"
TOP_PRODUCTS = ("WITH events AS (SELECT *, ''::VARCHAR AS shop_id FROM events), report_base AS ("
                + REPORT_BASE_SQL.format(shop_clause="", bot_clause="AND NOT is_bot")
                + ") SELECT * FROM (" + top_products_sql("", "AND NOT is_bot") + ") AS q")

EXAMPLES = (
    "How many visitors did we have in the last 7 days?",
    "Top pages this month",
    "Top sources last 30 days",
    "Devices yesterday",
    "Countries this year",
    "Daily sessions last 14 days",
    "Compare this week with the previous period",
    "Top products last month",
    "Revenue last 30 days",
    "Top pages of all time",
)

# Longest phrases first, so "page views" wins over "views".
METRIC_WORDS: tuple[tuple[str, str], ...] = (
    ("conversion rate", "conversionRate"), ("bounce rate", "bounceRate"), ("page views", "pageViews"),
    ("pageviews", "pageViews"), ("visitors", "visitors"), ("visits", "sessions"), ("sessions", "sessions"),
    ("orders", "orders"), ("revenue", "revenue"), ("sales", "revenue"), ("events", "events"), ("views", "pageViews"),
)
TOTAL_METRICS = ("visitors", "sessions", "pageViews", "events", "orders", "bounceRate", "conversionRate")
BREAKDOWNS: tuple[tuple[str, str, str], ...] = (
    # (keyword pattern, intent, dimension)
    (r"\b(top|popular|most\s+viewed|best)\s+pages?\b|\bpages\b", "pages", "path"),
    (r"\bsources?\b|\breferr", "sources", "source"),
    (r"\bdevices?\b|\bmobile\b|\bdesktop\b", "devices", "device"),
    (r"\bcountr(y|ies)\b", "countries", "country"),
)
BREAKDOWN_LIMIT = 10
# Words that ask for a filter or an explanation the fixed queries cannot give; such questions need an LLM.
FILTER_WORDS = r"\b(campaigns?|utm|where|why|who|funnel|filter|only|except|excluding|between|browser|os)\b"
MAX_DAYS = 366


class NotUnderstood(ValueError):
    """The question is not one the built-in router answers."""


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime
    label: str


@dataclass(frozen=True, slots=True)
class Plan:
    intent: str  # totals | pages | sources | devices | countries | trend | compare | products | revenue
    period: Period
    metric: str = "sessions"


def parse_period(text: str, now: datetime, tz: ZoneInfo) -> Period:
    """The period a question names (today, yesterday, last N days, this/last week/month/year); default 30 days."""
    today = now.astimezone(tz).date()
    tomorrow = today + timedelta(days=1)

    def days(n: int, label: str) -> Period:
        return Period(local_midnight(today - timedelta(days=n - 1), tz), local_midnight(tomorrow, tz), label)

    match = re.search(r"\b(?:last|past|previous)\s+(\d{1,3})\s+days?\b", text)
    if match:
        n = int(match.group(1))
        if not 1 <= n <= MAX_DAYS:
            raise NotUnderstood(f"ask about 1 to {MAX_DAYS} days")
        return days(n, f"the last {n} days")
    named = (
        ("today", "today", "today"), ("yesterday", "yesterday", "yesterday"),
        ("this month", "month", "this month"), ("last month", "lastMonth", "last month"),
        ("this year", "year", "this year"),
    )
    for phrase, period, label in named:
        if phrase in text:
            start, end = period_range(period, now, tz)
            return Period(start, end, label)
    if re.search(r"\b(all time|ever|so far)\b", text):
        return Period(local_midnight(date(2000, 1, 1), tz), local_midnight(tomorrow, tz), "all time")
    if re.search(r"\b(this|last|past)\s+week\b", text):
        return days(7, "the last 7 days")
    if re.search(r"\b(last|past)\s+quarter\b|\b90\s+days\b", text):
        return days(90, "the last 90 days")
    return days(30, "the last 30 days")


def _metric(text: str, default: str) -> str:
    for word, name in METRIC_WORDS:
        if re.search(rf"\b{word}\b", text):
            return name
    return default


def route(question: str, now: datetime, tz: ZoneInfo) -> Plan:
    """Which fixed question this is, or NotUnderstood."""
    text = " ".join(question.lower().split())
    if re.search(FILTER_WORDS, text):
        raise NotUnderstood(question)
    families = sum(1 for pattern, _, _ in BREAKDOWNS if re.search(pattern, text))
    families += bool(re.search(r"\b(products?|best[- ]sellers?)\b", text))
    if families > 1:
        # "which products did mobile visitors buy" needs a filter the fixed queries do not have.
        raise NotUnderstood(question)
    period = parse_period(text, now, tz)
    if re.search(r"\b(compare|compared|vs\.?|versus|previous period|change)\b", text):
        return Plan("compare", period, _metric(text, "sessions"))
    if re.search(r"\b(daily|per day|by day|each day|trend|over time)\b", text):
        return Plan("trend", period, _metric(text, "sessions"))
    if re.search(r"\b(products?|best[- ]sellers?|items?)\b", text):
        return Plan("products", period)
    for pattern, intent, _dimension in BREAKDOWNS:
        if re.search(pattern, text):
            return Plan(intent, period)
    if re.search(r"\b(revenue|sales|average order value|aov)\b", text):
        return Plan("revenue", period)
    if re.search(r"\b(how many|total|totals|number of|count|overview|summary|how much)\b", text):
        metric = _metric(text, "")
        return Plan("totals", period, metric)
    metric = _metric(text, "")
    if metric:
        return Plan("totals", period, metric)
    raise NotUnderstood(question)


def _registry(sandbox: Sandbox, query: Query, period: Period, tz: str) -> tuple[Result, str]:
    sql = build_query_sql(query, Scope(None, period.start, period.end, tz))
    text = WITH_SHOP.format(body=sql.text)
    return sandbox.execute(text, sql.params, row_cap=query.limit), text


def _value(name: str, raw: Any) -> Any:
    return finish_metric(METRICS[name], raw)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, list):
        return ", ".join(f"{line['amount']:,.2f} {line['currency']}" for line in value) or "0"
    return f"{value:,}"


def _label(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r" \1", name).lower()


def _totals(sandbox: Sandbox, period: Period, tz: str, metrics: tuple[str, ...]
            ) -> tuple[dict[str, Any], Result, str]:
    result, text = _registry(sandbox, Query(metrics, limit=1), period, tz)
    row = result.rows[0] if result.rows else [None] * len(metrics)
    return {name: _value(name, row[i]) for i, name in enumerate(metrics)}, result, text


def answer(sandbox: Sandbox, plan: Plan, tz: str) -> ChatAnswer:
    """Run the plan's fixed queries in the sandbox and phrase the answer from their rows."""
    out = ChatAnswer(answer="", provider="builtin", model=None)
    period, metric = plan.period, plan.metric

    def log(result: Result, text: str) -> None:
        out.queries.append(QueryLog(text, result.row_count, result.ms))

    if plan.intent == "revenue" or (plan.intent == "totals" and metric == "revenue"):
        return _revenue(sandbox, plan, tz, out)
    if plan.intent == "totals":
        totals: tuple[str, ...] = (metric,) if metric else TOTAL_METRICS
        values, result, text = _totals(sandbox, period, tz, totals)
        log(result, text)
        out.columns = list(totals) if len(totals) == 1 else ["metric", "value"]
        out.rows = [[values[metric]]] if len(totals) == 1 else [[name, values[name]] for name in totals]
        out.answer = f"In {period.label}: " + "; ".join(f"{_label(n)} {_fmt(values[n])}" for n in totals) + "."
    elif plan.intent in ("pages", "sources", "devices", "countries"):
        dimension = {"pages": "path", "sources": "source", "devices": "device", "countries": "country"}[plan.intent]
        if dimension == "path":
            query = Query(("pageViews", "sessions"), ("path",), order_by=(("pageViews", "desc"),),
                          limit=BREAKDOWN_LIMIT)
            query = _page_views_only(query)
        else:
            query = Query(("sessions", "pageViews"), (dimension,), order_by=(("sessions", "desc"),),
                          limit=BREAKDOWN_LIMIT)
        result, text = _registry(sandbox, query, period, tz)
        log(result, text)
        names = list(query.metrics)
        out.columns = [dimension, *names]
        out.rows = [[row[0], *(_value(n, row[1 + i]) for i, n in enumerate(names))] for row in result.rows]
        if out.rows:
            listed = "; ".join(f"{row[0] if row[0] is not None else '(none)'} ({_fmt(row[1])} {_label(names[0])})"
                               for row in out.rows[:5])
            out.answer = f"Top {plan.intent} in {period.label} by {_label(names[0])}: {listed}."
        else:
            out.answer = f"No {plan.intent} in {period.label}."
    elif plan.intent == "trend":
        query = Query((metric,), ("time:day",), order_by=(("time:day", "asc"),), limit=MAX_DAYS + 1)
        result, text = _registry(sandbox, query, period, tz)
        log(result, text)
        by_day = {row[0]: _value(metric, row[1]) for row in result.rows}
        zero: Any = [] if METRICS[metric].kind == "money" else None if METRICS[metric].kind in ("rate", "mean") else 0
        out.columns = ["date", metric]
        day = period.start.date()
        while day < period.end.astimezone(period.start.tzinfo).date():
            key = day.isoformat()
            value = by_day.get(key, zero)
            out.rows.append([key, value])
            day += timedelta(days=1)
        if METRICS[metric].kind == "money":
            out.rows = [[d, sum(line["amount"] for line in v)] for d, v in out.rows]
            out.columns = ["date", "revenue (all currencies)"]
        peak = max((r for r in out.rows if r[1] is not None), key=lambda r: r[1], default=None)
        out.answer = (f"Daily {_label(metric)} for {period.label}: {len(out.rows)} days"
                      + (f", highest on {peak[0]} with {_fmt(peak[1])}." if peak else "."))
    elif plan.intent == "compare":
        compared: tuple[str, ...] = ("visitors", "sessions", "pageViews", "orders")
        metrics: tuple[str, ...] = (metric,) if metric and metric != "sessions" else compared
        span = period.end - period.start
        previous = Period(period.start - span, period.start, "the period before")
        current_values, result, text = _totals(sandbox, period, tz, metrics)
        log(result, text)
        previous_values, result, text = _totals(sandbox, previous, tz, metrics)
        log(result, text)
        out.columns = ["metric", "current", "previous", "changePct"]
        parts = []
        for name in metrics:
            now_v, before = current_values[name], previous_values[name]
            if isinstance(now_v, list) or isinstance(before, list):
                now_v = sum(line["amount"] for line in now_v or [])
                before = sum(line["amount"] for line in before or [])
            change = (round((now_v - before) / before * 100, 1) if isinstance(now_v, int | float)
                      and isinstance(before, int | float) and before else None)
            out.rows.append([name, now_v, before, change])
            parts.append(f"{_label(name)} {_fmt(now_v)} vs {_fmt(before)}"
                         + (f" ({change:+.1f}%)" if change is not None else ""))
        out.answer = f"{period.label.capitalize()} compared with the {span.days} days before: " + "; ".join(parts) + "."
    elif plan.intent == "products":
        params = {"start": period.start, "end": period.end}
        result = sandbox.execute(TOP_PRODUCTS, params, row_cap=10)
        log(result, TOP_PRODUCTS)
        out.columns = ["productId", "name", "views", "addToCarts", "purchases", "revenue"]
        for product_id, name, views, carts, units, lines in result.rows:
            revenue = sum(float(line["value"] or 0) for line in lines or [])
            out.rows.append([product_id, name, views, carts, units, round(revenue, 2)])
        if out.rows:
            listed = "; ".join(f"{row[1] or row[0]} ({_fmt(row[4])} bought, {_fmt(row[2])} views)"
                               for row in out.rows[:5])
            out.answer = f"Top products in {period.label}: {listed}."
        else:
            out.answer = f"No product views or purchases in {period.label}."
    return out


def _page_views_only(query: Query) -> Query:
    return Query(query.metrics, query.dimensions, (Filter("is", "eventType", ("page_view",)),), query.order_by,
                 query.limit)


def _revenue(sandbox: Sandbox, plan: Plan, tz: str, out: ChatAnswer) -> ChatAnswer:
    metrics = ("revenue", "orders", "averageOrderValue")
    values, result, text = _totals(sandbox, plan.period, tz, metrics)
    out.queries.append(QueryLog(text, result.row_count, result.ms))
    out.columns = ["currency", "revenue", "averageOrderValue"]
    average = {line["currency"]: line["amount"] for line in values["averageOrderValue"]}
    out.rows = [[line["currency"], line["amount"], average.get(line["currency"])] for line in values["revenue"]]
    if out.rows:
        out.answer = (f"Revenue in {plan.period.label}: {_fmt(values['revenue'])} from {_fmt(values['orders'])} "
                      f"orders (average order {_fmt(values['averageOrderValue'])}).")
    else:
        out.answer = f"No orders in {plan.period.label}."
    return out
