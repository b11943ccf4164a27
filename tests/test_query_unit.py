"""analytics.query as pure functions: parse_query validation (QueryError.field names the bad field) and
build_query_sql (every value bound as a parameter, never pasted into the SQL text). No database here."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from analytics.metrics import DIMENSIONS, METRICS
from analytics.query import Filter, Query, QueryError, Scope, Sql, build_count_sql, build_query_sql, parse_query

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 27, tzinfo=UTC)
SCOPE = Scope("shop1", START, END, "Europe/Berlin", False)
CONTRACT_METRICS = ("events", "pageViews", "sessions", "visitors", "bounceRate", "avgSessionDuration",
                    "viewsPerSession", "orders", "revenue", "averageOrderValue", "conversionRate")
CONTRACT_DIMENSIONS = ("eventType", "eventName", "path", "url", "source", "referrer", "utmSource", "utmMedium",
                       "utmCampaign", "device", "browser", "os", "country", "productId", "time:hour", "time:day",
                       "time:week", "time:month")
_PARAM_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def doc(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"metrics": ["events"]}
    base.update(fields)
    return base


def error_of(body: dict[str, Any]) -> QueryError:
    with pytest.raises(QueryError) as info:
        parse_query(body)
    err = info.value
    assert isinstance(err.message, str) and err.message
    return err


def bound_strings(sql: Sql) -> list[str]:
    """Every string value among the parameters, lists flattened."""
    found: list[str] = []
    for value in sql.params.values():
        items = value if isinstance(value, list | tuple) else [value]
        found.extend(item for item in items if isinstance(item, str))
    return found


def referenced_params(sql: Sql) -> set[str]:
    """Names the SQL text refers to as $name (the registry's SQL holds no '$' inside string literals)."""
    return set(_PARAM_RE.findall(sql.text))


# ---------------------------------------------------------------------------------------------- the registry


def test_registry_has_every_contract_metric_and_dimension() -> None:
    assert set(CONTRACT_METRICS) <= set(METRICS)
    assert set(CONTRACT_DIMENSIONS) <= set(DIMENSIONS)


@pytest.mark.parametrize("name", CONTRACT_METRICS)
def test_each_metric_parses_and_builds(name: str) -> None:
    query = parse_query({"metrics": [name]})
    assert query.metrics == (name,)
    sql = build_query_sql(query, SCOPE)
    assert referenced_params(sql) == set(sql.params)


@pytest.mark.parametrize("name", [*CONTRACT_DIMENSIONS, "prop:plan"])
def test_each_dimension_parses_and_builds(name: str) -> None:
    query = parse_query({"metrics": ["events", "sessions"], "dimensions": [name]})
    assert query.dimensions == (name,)
    sql = build_query_sql(query, SCOPE)
    # Every name the text uses is bound, and nothing is bound that the text does not use.
    assert referenced_params(sql) == set(sql.params)
    if name.startswith("time:"):
        assert sql.params["tz"] == "Europe/Berlin"


# ---------------------------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    query = parse_query({"metrics": ["events"]})
    assert query == Query(metrics=("events",), dimensions=(), filters=(), order_by=(), limit=100, offset=0)


def test_full_query_parses_to_its_struct() -> None:
    query = parse_query({
        "metrics": ["pageViews", "sessions"],
        "dimensions": ["path", "device"],
        "filters": [["is", "device", ["mobile", "tablet"]], ["contains", "path", "products"],
                    ["matches", "prop:plan", "^pro$"]],
        "orderBy": [["pageViews", "desc"], ["path", "asc"]],
        "limit": 25,
        "offset": 50,
        "someUnknownField": {"ignored": True},
    })
    assert query.metrics == ("pageViews", "sessions")
    assert query.dimensions == ("path", "device")
    assert query.filters == (
        Filter("is", "device", ("mobile", "tablet")),
        Filter("contains", "path", ("products",)),
        Filter("matches", "prop:plan", ("^pro$",)),
    )
    assert query.order_by == (("pageViews", "desc"), ("path", "asc"))
    assert (query.limit, query.offset) == (25, 50)


def test_numeric_filter_values_become_strings() -> None:
    query = parse_query(doc(filters=[["is", "prop:qty", [1, 2.5]]]))
    assert query.filters[0].values == ("1", "2.5")


# ---------------------------------------------------------------------------------------------- validation table

BAD_QUERIES: list[tuple[str, dict[str, Any], str]] = [
    # metrics
    ("metrics missing", {}, "metrics"),
    ("metrics empty", {"metrics": []}, "metrics"),
    ("metrics not a list", {"metrics": "events"}, "metrics"),
    ("metric not a string", {"metrics": [1]}, "metrics"),
    ("unknown metric", {"metrics": ["events", "clicks"]}, "metrics"),
    ("metric case matters", {"metrics": ["PageViews"]}, "metrics"),
    # dimensions
    ("dimensions not a list", doc(dimensions="path"), "dimensions"),
    ("dimension not a string", doc(dimensions=[3]), "dimensions"),
    ("unknown dimension", doc(dimensions=["colour"]), "dimensions"),
    ("unknown time bucket", doc(dimensions=["time:minute"]), "dimensions"),
    ("prop with a quote", doc(dimensions=['prop:a"b']), "dimensions"),
    ("prop with an empty key", doc(dimensions=["prop:"]), "dimensions"),
    ("prop key of 65 characters", doc(dimensions=["prop:" + "k" * 65]), "dimensions"),
    ("prop with a dot path", doc(dimensions=["prop:a.b"]), "dimensions"),
    ("prop with a bracket", doc(dimensions=["prop:a[0]"]), "dimensions"),
    ("prop with sql", doc(dimensions=["prop:x') OR 1=1 --"]), "dimensions"),
    ("prop with a newline", doc(dimensions=["prop:a\nb"]), "dimensions"),
    # filters: shape
    ("filters not a list", doc(filters={"device": "mobile"}), "filters"),
    ("filter not a list", doc(filters=["is device mobile"]), "filters[0]"),
    ("filter of two items", doc(filters=[["is", "device"]]), "filters[0]"),
    ("filter of four items", doc(filters=[["is", "device", "mobile", "x"]]), "filters[0]"),
    ("unknown op", doc(filters=[["equals", "device", "mobile"]]), "filters[0]"),
    ("op case matters", doc(filters=[["IS", "device", "mobile"]]), "filters[0]"),
    ("unknown filter dimension", doc(filters=[["is", "colour", "red"]]), "filters[0]"),
    ("filter dimension not a string", doc(filters=[["is", 5, "red"]]), "filters[0]"),
    ("bad prop key in a filter", doc(filters=[["is", 'prop:a"b', "x"]]), "filters[0]"),
    ("empty prop key in a filter", doc(filters=[["is", "prop:", "x"]]), "filters[0]"),
    ("empty values", doc(filters=[["is", "device", []]]), "filters[0]"),
    ("null value", doc(filters=[["is", "device", None]]), "filters[0]"),
    ("boolean value", doc(filters=[["is", "device", True]]), "filters[0]"),
    ("object value", doc(filters=[["is", "device", {"v": 1}]]), "filters[0]"),
    ("nested list value", doc(filters=[["is", "device", [["mobile"]]]]), "filters[0]"),
    ("too many values", doc(filters=[["is", "path", [f"/p{i}" for i in range(101)]]]), "filters[0]"),
    ("bad regex", doc(filters=[["matches", "path", "(unclosed"]]), "filters[0]"),
    ("second filter is the bad one",
     doc(filters=[["is", "device", "mobile"], ["nope", "path", "/"]]), "filters[1]"),
    # orderBy
    ("orderBy not a list", doc(orderBy="events"), "orderBy"),
    ("orderBy item not a pair", doc(orderBy=[["events"]]), "orderBy[0]"),
    ("orderBy bad direction", doc(orderBy=[["events", "down"]]), "orderBy[0]"),
    ("orderBy direction case", doc(orderBy=[["events", "DESC"]]), "orderBy[0]"),
    ("orderBy a metric not in the query", doc(orderBy=[["sessions", "desc"]]), "orderBy[0]"),
    ("orderBy a dimension not in the query", doc(orderBy=[["path", "asc"]]), "orderBy[0]"),
    ("orderBy an unknown name", doc(orderBy=[["clicks", "asc"]]), "orderBy[0]"),
    ("second orderBy is the bad one",
     doc(dimensions=["path"], orderBy=[["path", "asc"], ["device", "asc"]]), "orderBy[1]"),
    # limit / offset
    ("limit zero", doc(limit=0), "limit"),
    ("limit negative", doc(limit=-5), "limit"),
    ("limit above 10000", doc(limit=10_001), "limit"),
    ("limit a string", doc(limit="10"), "limit"),
    ("limit a float", doc(limit=10.5), "limit"),
    ("limit a boolean", doc(limit=True), "limit"),
    ("limit null", doc(limit=None), "limit"),
    ("offset negative", doc(offset=-1), "offset"),
    ("offset a string", doc(offset="0"), "offset"),
    ("offset a float", doc(offset=1.5), "offset"),
    ("offset a boolean", doc(offset=False), "offset"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in BAD_QUERIES], ids=[n for n, _, _ in BAD_QUERIES])
def test_bad_query_names_the_field(body: dict[str, Any], field: str) -> None:
    assert error_of(body).field == field


def test_unknown_names_are_quoted_in_the_message() -> None:
    assert "clicks" in error_of({"metrics": ["clicks"]}).message
    assert "colour" in error_of(doc(dimensions=["colour"])).message
    assert "equals" in error_of(doc(filters=[["equals", "device", "x"]])).message


@pytest.mark.parametrize("key", ["a", "k" * 64, "snake_case", "kebab-case", "with space", "$price", "A1"])
def test_allowed_prop_keys(key: str) -> None:
    query = parse_query(doc(dimensions=[f"prop:{key}"], filters=[["is", f"prop:{key}", "x"]]))
    assert query.dimensions == (f"prop:{key}",)


@pytest.mark.parametrize("limit", [1, 100, 10_000])
def test_limit_bounds_accepted(limit: int) -> None:
    assert parse_query(doc(limit=limit)).limit == limit


@pytest.mark.parametrize("offset", [0, 1, 10**6])
def test_offset_accepted(offset: int) -> None:
    assert parse_query(doc(offset=offset)).offset == offset


def test_order_by_may_name_a_metric_or_a_dimension_of_the_query() -> None:
    query = parse_query({"metrics": ["events", "revenue"], "dimensions": ["prop:plan", "time:day"],
                         "orderBy": [["revenue", "desc"], ["prop:plan", "asc"], ["time:day", "desc"]]})
    assert query.order_by == (("revenue", "desc"), ("prop:plan", "asc"), ("time:day", "desc"))
    sql = build_query_sql(query, SCOPE)
    assert referenced_params(sql) == set(sql.params)


# ---------------------------------------------------------------------------------------------- bound values

INJECTIONS = [
    "x'; DROP TABLE events; --",
    "') OR 1=1 --",
    "\" OR \"\"=\"",
    "$p0 OR TRUE",
    "1; SELECT * FROM mirror_state",
    "robert'); DELETE FROM events WHERE ('a'='a",
]


@pytest.mark.parametrize("op", ["is", "is_not", "contains", "not_contains", "matches"])
@pytest.mark.parametrize("dimension", ["path", "device", "prop:plan"])
def test_filter_values_are_bound_never_pasted(op: str, dimension: str) -> None:
    values = INJECTIONS if op != "matches" else [re.escape(v) for v in INJECTIONS]
    query = parse_query({"metrics": ["events"], "dimensions": [dimension],
                         "filters": [[op, dimension, values]]})
    sql = build_query_sql(query, SCOPE)
    bound = bound_strings(sql)
    for value in values:
        assert value not in sql.text
        assert value in bound
    assert referenced_params(sql) == set(sql.params)


def test_prop_key_is_bound_as_a_json_path_not_pasted() -> None:
    query = parse_query({"metrics": ["events"], "dimensions": ["prop:my key$"],
                         "filters": [["is", "prop:other-key", "v"]]})
    sql = build_query_sql(query, SCOPE)
    assert "my key$" not in sql.text
    assert "other-key" not in sql.text
    paths = [v for v in bound_strings(sql) if v.startswith("$")]
    assert any("my key$" in p for p in paths)
    assert any("other-key" in p for p in paths)


def test_scope_values_are_bound() -> None:
    shop = "shop'; DROP TABLE events; --"
    sql = build_query_sql(parse_query({"metrics": ["events"], "dimensions": ["time:day"]}),
                          Scope(shop, START, END, "America/New_York", False))
    assert shop not in sql.text
    assert "America/New_York" not in sql.text
    assert shop in bound_strings(sql)
    assert "America/New_York" in bound_strings(sql)
    assert START in sql.params.values() and END in sql.params.values()
    assert referenced_params(sql) == set(sql.params)


def test_limit_and_offset_are_bound() -> None:
    sql = build_query_sql(parse_query(doc(limit=4321, offset=8765)), SCOPE)
    assert "4321" not in sql.text and "8765" not in sql.text
    assert 4321 in sql.params.values() and 8765 in sql.params.values()


def test_all_shops_scope_has_no_shop_parameter() -> None:
    sql = build_query_sql(parse_query(doc()), Scope(None, START, END))
    assert "shop" not in sql.params
    assert referenced_params(sql) == set(sql.params)


def test_build_is_deterministic() -> None:
    query = parse_query({"metrics": ["sessions"], "dimensions": ["source", "prop:plan"],
                         "filters": [["contains", "path", "a"], ["is_not", "device", ["bot", "other"]]]})
    first, second = build_query_sql(query, SCOPE), build_query_sql(query, SCOPE)
    assert first.text == second.text and first.params == second.params


def test_count_sql_binds_everything_and_ignores_paging() -> None:
    query = parse_query({"metrics": ["sessions"], "dimensions": ["time:day", "prop:plan"],
                         "filters": [["contains", "path", "x'--"]], "limit": 5, "offset": 4321})
    sql = build_count_sql(query, SCOPE)
    assert referenced_params(sql) == set(sql.params)
    assert "x'--" not in sql.text and "x'--" in bound_strings(sql)
    assert 4321 not in sql.params.values()


# ---------------------------------------------------------------------------------------------- the stats report


def test_report_sql_is_one_statement_binding_every_placeholder_once() -> None:
    from analytics.stats import ReportRequest, previous_totals_sql, report_sql

    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    request = ReportRequest(scope=Scope("shop-1", start, end, "Europe/Berlin", False), interval="day",
                            funnel=("page_view", "purchase"))
    sql = report_sql(request)
    assert sql.text.startswith("WITH report_base AS MATERIALIZED (")
    assert sql.text.count("report_sessions AS MATERIALIZED (") == 1
    assert sql.text.count("row_number() OVER ()") == 7  # totals, series, types, pages, sessions, funnel, products
    assert {"start": start, "end": end, "shop": "shop-1", "tz": "Europe/Berlin", "step0": "page_view",
            "step1": "purchase"}.items() <= sql.params.items()
    assert set(re.findall(r"\$(\w+)", sql.text)) == set(sql.params)
    assert "AND NOT is_bot" in sql.text

    everyone = report_sql(ReportRequest(scope=Scope(None, start, end, "UTC", True), interval="day"))
    assert "shop" not in everyone.params and "$shop" not in everyone.text and "is_bot" not in everyone.text

    previous = previous_totals_sql(request.scope)
    assert set(re.findall(r"\$(\w+)", previous.text)) == set(previous.params) == {"start", "end", "shop"}
    assert "row_number()" not in previous.text


def test_totals_count_visitors_from_the_events_and_groups_list_them_per_session() -> None:
    total = build_query_sql(parse_query({"metrics": ["visitors", "sessions"]}), SCOPE).text
    assert "count(DISTINCT visitor_hash) AS m0" in total
    assert "l_visitors" not in total  # no list of hashes per session without dimensions
    by_day = build_query_sql(parse_query({"metrics": ["visitors"], "dimensions": ["time:day"]}), SCOPE).text
    assert "l_visitors" in by_day and "count(DISTINCT" not in by_day
    # Days group as DATEs; only the result rows are printed as text.
    assert "timezone($tz, ts)::DATE) AS d0" in by_day
    assert "(l2.d0)::VARCHAR AS d0" in by_day
