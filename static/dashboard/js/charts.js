// Charts: uPlot for lines over buckets, plain elements for bar lists (funnel, chat bars) so they stay accessible.

import uPlot from "../vendor/uPlot.esm.js";
import { clear, el } from "./dom.js";

function cssColor(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

const charts = new WeakMap();

/** A line chart of one series over labelled buckets; x is the bucket index so any timezone's labels stay exact. */
export function lineChart(container, labels, values, label) {
  const previous = charts.get(container);
  if (previous) previous.destroy();
  clear(container);
  const width = Math.max(280, container.clientWidth || 600);
  const ink = cssColor("--ink", "#222");
  const grid = cssColor("--grid", "#ddd");
  const accent = cssColor("--accent", "#2563eb");
  const xs = labels.map((_, i) => i);
  const opts = {
    width,
    height: 240,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false } },
    axes: [
      {
        stroke: ink,
        grid: { stroke: grid },
        ticks: { stroke: grid },
        values: (u, splits) => splits.map((i) => (Number.isInteger(i) && labels[i] !== undefined ? shortLabel(labels[i]) : "")),
      },
      { stroke: ink, grid: { stroke: grid }, ticks: { stroke: grid } },
    ],
    series: [{}, { label, stroke: accent, width: 2, fill: cssColor("--accent-soft", "rgba(37,99,235,.15)"), points: { show: labels.length <= 60 } }],
  };
  const chart = new uPlot(opts, [xs, values], container);
  charts.set(container, chart);
  container.setAttribute("role", "img");
  container.setAttribute("aria-label", `${label} per bucket, ${labels.length} buckets, total ${values.reduce((a, b) => a + (b || 0), 0)}`);
  return chart;
}

function shortLabel(label) {
  // "2026-11-26" → "11-26"; "2026-11-26T13:00:00+01:00" → "13:00"
  if (label.length > 10 && label[10] === "T") return label.slice(11, 16);
  return label.length === 10 ? label.slice(5) : label;
}

/** Horizontal bars: rows [{label, value, note}] with widths relative to the largest value. */
export function barList(container, rows, { format = String } = {}) {
  clear(container);
  const max = Math.max(0, ...rows.map((r) => r.value || 0));
  const list = el("ol", { className: "bars" });
  for (const row of rows) {
    const bar = el("span", { className: "bar-fill" });
    // Set through the CSSOM, which the page's CSP (style-src 'self') allows, unlike a style attribute.
    bar.style.width = `${max > 0 ? ((row.value || 0) / max) * 100 : 0}%`;
    list.append(
      el("li", { className: "bar-row" }, [
        el("span", { className: "bar-label", text: row.label }),
        el("span", { className: "bar-track" }, bar),
        el("span", { className: "bar-value", text: format(row.value) }),
        row.note ? el("span", { className: "bar-note", text: row.note }) : null,
      ]),
    );
  }
  container.append(list);
}

export function resizeCharts(containers) {
  for (const container of containers) {
    const chart = charts.get(container);
    if (chart) chart.setSize({ width: Math.max(280, container.clientWidth), height: 240 });
  }
}
