// The report panels: KPI cards, the time series, breakdown tables, funnel and top products.

import { barList, lineChart } from "./charts.js";
import { clear, el, table } from "./dom.js";
import { formatChange, formatCount, formatDuration, formatMoney, formatNumber, formatRate } from "./format.js";

export const KPIS = [
  { key: "visitors", label: "Visitors", format: formatCount },
  { key: "sessions", label: "Sessions", format: formatCount },
  { key: "pageViews", label: "Page views", format: formatCount },
  { key: "bounceRate", label: "Bounce rate", format: formatRate, rate: true, lowerIsBetter: true },
  { key: "avgSessionDuration", label: "Session duration", format: formatDuration },
  { key: "orders", label: "Orders", format: formatCount },
  { key: "revenue", label: "Revenue", format: formatMoney, money: true },
  { key: "conversionRate", label: "Conversion rate", format: formatRate, rate: true },
];

export const SERIES = [
  { key: "pageViews", label: "Page views" },
  { key: "visitors", label: "Visitors" },
  { key: "sessions", label: "Sessions" },
  { key: "events", label: "Events" },
  { key: "orders", label: "Orders" },
  { key: "revenue", label: "Revenue" },
];

// Report key, heading, the query dimension a click filters on (null: not filterable), and the columns.
export const BREAKDOWNS = [
  { key: "topPages", title: "Pages", dimension: "path", first: "pageViews" },
  { key: "entryPages", title: "Entry pages", dimension: null, first: "sessions" },
  { key: "exitPages", title: "Exit pages", dimension: null, first: "sessions" },
  { key: "sources", title: "Sources", dimension: "source", first: "sessions" },
  { key: "utmCampaigns", title: "UTM campaigns", dimension: "utmCampaign", first: "sessions" },
  { key: "devices", title: "Devices", dimension: "device", first: "sessions" },
  { key: "browsers", title: "Browsers", dimension: "browser", first: "sessions" },
  { key: "os", title: "Operating systems", dimension: "os", first: "sessions" },
  { key: "countries", title: "Countries", dimension: "country", first: "sessions" },
  { key: "eventTypes", title: "Event types", dimension: "eventType", first: "events" },
];

function changeOf(kpi, change) {
  if (!change) return null;
  const value = change[kpi.key];
  if (kpi.money) {
    const parts = Object.entries(value || {}).filter(([, pct]) => pct !== null).map(([currency, pct]) => `${currency} ${formatChange(pct, false)}`);
    return parts.length ? `${parts.join(" · ")} vs previous period` : "no data in the previous period";
  }
  return value === null || value === undefined ? "no data in the previous period" : `${formatChange(value, kpi.rate)} vs previous period`;
}

function trendClass(kpi, change) {
  const value = change && !kpi.money ? change[kpi.key] : null;
  if (value === null || value === undefined || value === 0) return "flat";
  return (value > 0) !== Boolean(kpi.lowerIsBetter) ? "up" : "down";
}

export function renderKpis(container, totals, change) {
  clear(container);
  for (const kpi of KPIS) {
    const value = totals[kpi.key];
    container.append(
      el("article", { className: "kpi", dataset: { metric: kpi.key, raw: JSON.stringify(value ?? null) } }, [
        el("h3", { text: kpi.label }),
        el("p", { className: "kpi-value", text: kpi.format(value) }),
        change ? el("p", { className: `kpi-change ${trendClass(kpi, change)}`, text: changeOf(kpi, change) }) : null,
      ]),
    );
  }
}

/** The series values for one metric; revenue charts the first currency. */
export function seriesValues(timeseries, metric) {
  if (metric !== "revenue") return timeseries.map((row) => row[metric] ?? 0);
  const currency = timeseries.flatMap((row) => row.revenue || []).map((m) => m.currency)[0];
  return timeseries.map((row) => ((row.revenue || []).find((m) => m.currency === currency) || { amount: 0 }).amount);
}

export function renderTimeseries(container, timeseries, metric) {
  const spec = SERIES.find((s) => s.key === metric) || SERIES[0];
  lineChart(container, timeseries.map((row) => row.date), seriesValues(timeseries, spec.key), spec.label);
}

export function renderBreakdowns(container, report, { onFilter, unfiltered }) {
  clear(container);
  for (const spec of BREAKDOWNS) {
    const rows = report[spec.key] || [];
    const columns = [{ label: spec.title, value: (r) => (r.value === null || r.value === undefined ? "(none)" : r.value) }];
    if (spec.first === "events") columns.push({ label: "Events", numeric: true, value: (r) => formatCount(r.events) });
    else if (spec.first === "pageViews") {
      columns.push({ label: "Page views", numeric: true, value: (r) => formatCount(r.pageViews) });
      columns.push({ label: "Sessions", numeric: true, value: (r) => formatCount(r.sessions) });
    } else {
      columns.push({ label: "Sessions", numeric: true, value: (r) => formatCount(r.sessions) });
      columns.push({ label: "Page views", numeric: true, value: (r) => formatCount(r.pageViews) });
    }
    const clickable = spec.dimension && onFilter;
    const body = rows.length
      ? table(columns, rows, {
          caption: spec.title,
          onRow: clickable ? (row) => onFilter(spec.dimension, row.value, spec.title) : null,
          rowLabel: (row) => `Filter by ${spec.title}: ${row.value}`,
        })
      : el("p", { className: "muted", text: "Nothing in this period." });
    const note = unfiltered.has(spec.key) ? el("p", { className: "muted small", text: "Shown without the filter: the stats API computes this list for the whole shop." }) : null;
    container.append(
      el("section", { className: "card breakdown", id: `breakdown-${spec.key}`, "aria-labelledby": `h-${spec.key}` }, [
        el("h2", { id: `h-${spec.key}`, text: spec.title }),
        clickable ? el("p", { className: "muted small", text: "Select a row to filter the dashboard." }) : null,
        note,
        body,
      ]),
    );
  }
}

export function renderFunnel(container, funnel) {
  if (!funnel || funnel.length === 0 || funnel[0].sessions === 0) {
    clear(container).append(el("p", { className: "muted", text: "No sessions reached the first step in this period." }));
    return;
  }
  barList(
    container,
    funnel.map((step, i) => ({
      label: step.step,
      value: step.sessions,
      note: i === 0 ? "start" : `${formatRate(step.rateFromPrevious)} of previous · ${formatRate(step.rateFromStart)} of start`,
    })),
    { format: formatCount },
  );
}

export function renderProducts(container, products) {
  clear(container);
  if (!products || products.length === 0) {
    container.append(el("p", { className: "muted", text: "No product views or purchases in this period." }));
    return;
  }
  container.append(
    table(
      [
        { label: "Product", value: (p) => (p.name ? `${p.name} (${p.productId})` : p.productId) },
        { label: "Views", numeric: true, value: (p) => formatCount(p.views) },
        { label: "Add to carts", numeric: true, value: (p) => formatCount(p.addToCarts) },
        { label: "Purchases", numeric: true, value: (p) => formatNumber(p.purchases) },
        { label: "Revenue", numeric: true, value: (p) => formatMoney(p.revenue) },
      ],
      products,
      { caption: "Top products" },
    ),
  );
}
