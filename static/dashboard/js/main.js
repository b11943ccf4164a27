// The dashboard's state and wiring: sign-in, the controls, loading the report (filtered through the query API) and the panels.

import { ApiFailure, createApi } from "./api.js";
import { resizeCharts } from "./charts.js";
import { createChat } from "./chat.js";
import { byId, clear, el, notice } from "./dom.js";
import { createInsights } from "./insights.js";
import { createLive } from "./live.js";
import { BREAKDOWNS, KPIS, SERIES, renderBreakdowns, renderFunnel, renderKpis, renderProducts, renderTimeseries } from "./panels.js";

const TOKEN_KEY = "flowtel.token";
const SHOP_KEY = "flowtel.shop";
const RATE_KPIS = new Set(KPIS.filter((k) => k.rate).map((k) => k.key));

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  signedIn: false,
  isAdmin: false,
  shopId: "",
  period: "30d",
  start: "",
  end: "",
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  compare: true,
  metric: "pageViews",
  filters: [],
  range: null,
  report: null,
};
let loadSeq = 0;

const api = createApi(() => state.token);
const view = () => state;

function setStatus(kind, message) {
  const status = byId("status");
  clear(status);
  if (message) status.append(notice(kind, message));
}

function showSignIn(message) {
  state.signedIn = false;
  live.stop();
  byId("dashboard").hidden = true;
  byId("controls").hidden = true;
  byId("sign-out").hidden = true;
  byId("signin").hidden = false;
  clear(byId("signin-message"));
  if (message) byId("signin-message").append(notice("error", message));
  byId("token").focus();
}

function onAuthError(err) {
  localStorage.removeItem(TOKEN_KEY);
  showSignIn(`${err.message} Sign in again with a valid token.`);
}

async function discoverShops() {
  // Shops are named in three places: registered shops (GET /api/shops, on servers that have it), the admin's
  // tokens, and the latest events across all shops (shops that only ever sent events).
  const ids = new Set();
  const [shops, tokens, events] = await Promise.allSettled([api.get("/api/shops"), api.get("/api/tokens"), api.get("/api/events", { limit: 100 })]);
  if (shops.status === "fulfilled") for (const s of shops.value.data || []) ids.add(s.id);
  if (tokens.status === "fulfilled") for (const t of tokens.value.data || []) ids.add(t.shopId);
  if (events.status === "fulfilled") for (const e of events.value.data || []) ids.add(e.shopId);
  return [...ids].filter(Boolean).sort();
}

async function signIn(token) {
  state.token = token;
  setStatus("loading", "Signing in…");
  let who;
  try {
    // The shopId of an unscoped stats request says who we are: null for the admin, the token's shop otherwise.
    who = await api.get("/api/stats", { period: "today" });
    state.isAdmin = who.shopId === null;
    localStorage.setItem(TOKEN_KEY, token);
  } catch (err) {
    setStatus();
    if (err.status === 401) return showSignIn(`${err.message} Check the token and try again.`);
    return showSignIn(err.message);
  }
  state.signedIn = true;
  byId("signin").hidden = true;
  byId("controls").hidden = false;
  byId("sign-out").hidden = false;
  byId("dashboard").hidden = false;
  const shopInput = byId("shop");
  if (state.isAdmin) {
    const shops = await discoverShops();
    const list = clear(byId("shop-list"));
    for (const id of shops) list.append(el("option", { value: id }));
    const saved = localStorage.getItem(SHOP_KEY);
    state.shopId = saved !== null && (saved === "" || shops.includes(saved)) ? saved : shops[0] || "";
    shopInput.readOnly = false;
  } else {
    state.shopId = who.shopId;
    shopInput.readOnly = true;
  }
  shopInput.value = state.shopId;
  await reload();
}

function statsParams() {
  const params = { shopId: state.shopId, timezone: state.timezone };
  if (state.period === "custom") {
    params.startDate = state.start;
    params.endDate = state.end;
  } else params.period = state.period;
  if (state.compare) params.compare = "previous";
  return params;
}

function queryFilters() {
  return state.filters.map((f) => ["is", f.dimension, [f.value]]);
}

function changeBetween(current, previous) {
  const change = {};
  for (const kpi of KPIS) {
    const cur = current[kpi.key];
    const prev = previous[kpi.key];
    if (kpi.money) {
      const curBy = Object.fromEntries((cur || []).map((m) => [m.currency, m.amount]));
      const prevBy = Object.fromEntries((prev || []).map((m) => [m.currency, m.amount]));
      change[kpi.key] = {};
      for (const c of new Set([...Object.keys(curBy), ...Object.keys(prevBy)])) change[kpi.key][c] = prevBy[c] ? (((curBy[c] || 0) - prevBy[c]) / prevBy[c]) * 100 : null;
    } else if (RATE_KPIS.has(kpi.key)) change[kpi.key] = cur !== null && prev !== null ? (cur - prev) * 100 : null;
    else change[kpi.key] = prev && cur !== null ? ((cur - prev) / prev) * 100 : null;
  }
  return change;
}

function rowToObject(names, values) {
  return Object.fromEntries(names.map((name, i) => [name, values[i]]));
}

/** With filters, the panels the query API can compute are recomputed through it; the rest stay as stats gave them. */
async function applyFilters(report) {
  const base = { shopId: state.shopId || undefined, timezone: state.timezone, filters: queryFilters(), dateRange: [report.range.start, report.range.end] };
  const kpiNames = KPIS.map((k) => k.key);
  const seriesNames = SERIES.map((s) => s.key);
  const filterable = BREAKDOWNS.filter((b) => b.dimension);
  const breakdownQuery = (spec) => {
    const metrics = spec.first === "events" ? ["events"] : spec.first === "pageViews" ? ["pageViews", "sessions"] : ["sessions", "pageViews"];
    const filters = spec.key === "topPages" ? [...base.filters, ["is", "eventType", ["page_view"]]] : base.filters;
    return api.post("/api/query", { ...base, filters, metrics, dimensions: [spec.dimension], orderBy: [[metrics[0], "desc"]], limit: 10 });
  };
  const previous = report.range.previous;
  const [current, before, series, ...lists] = await Promise.all([
    api.post("/api/query", { ...base, metrics: kpiNames }),
    previous ? api.post("/api/query", { ...base, metrics: kpiNames, dateRange: [previous.start, previous.end] }) : null,
    api.post("/api/query", { ...base, metrics: seriesNames, dimensions: [`time:${report.range.interval}`], limit: 10000 }),
    ...filterable.map(breakdownQuery),
  ]);
  const out = { ...report };
  const zero = rowToObject(kpiNames, kpiNames.map(() => null));
  out.totals = current.results[0] ? rowToObject(kpiNames, current.results[0].metrics) : zero;
  if (before) {
    out.previous = before.results[0] ? rowToObject(kpiNames, before.results[0].metrics) : zero;
    out.change = changeBetween(out.totals, out.previous);
  }
  const byDate = new Map(series.results.map((r) => [String(r.dimensions[0]), rowToObject(seriesNames, r.metrics)]));
  out.timeseries = report.timeseries.map((row) => ({ date: row.date, ...(byDate.get(row.date) || { pageViews: 0, visitors: 0, sessions: 0, events: 0, orders: 0, revenue: [] }) }));
  filterable.forEach((spec, i) => {
    const metrics = spec.first === "events" ? ["events"] : spec.first === "pageViews" ? ["pageViews", "sessions"] : ["sessions", "pageViews"];
    out[spec.key] = lists[i].results.map((r) => ({ value: r.dimensions[0], ...rowToObject(metrics, r.metrics) }));
  });
  return out;
}

function renderFilters() {
  const box = clear(byId("filters"));
  if (!state.filters.length) return;
  box.append(el("span", { className: "muted", text: "Filtered by:" }));
  for (const f of state.filters) {
    box.append(
      el("button", {
        type: "button",
        className: "chip",
        "aria-label": `Remove filter ${f.label}: ${f.value}`,
        text: `${f.label}: ${f.value} ✕`,
        onClick: () => {
          state.filters = state.filters.filter((x) => x !== f);
          reload();
        },
      }),
    );
  }
}

function addFilter(dimension, value, label) {
  if (value === null || value === undefined) return;
  state.filters = [...state.filters.filter((f) => f.dimension !== dimension), { dimension, value, label }];
  reload();
}

function snippet() {
  const shop = state.shopId || "YOUR-SHOP-ID";
  return `<script defer src="${location.origin}/tracker.js" data-shop-id="${shop}"></script>`;
}

function renderSnippets() {
  for (const code of document.querySelectorAll(".snippet-code")) code.textContent = snippet();
}

function renderReport(report) {
  const empty = report.totals.events === 0 && state.filters.length === 0;
  byId("empty").hidden = !empty;
  renderKpis(byId("kpis"), report.totals, report.change);
  renderTimeseries(byId("timeseries"), report.timeseries, state.metric);
  const unfiltered = new Set(state.filters.length ? ["entryPages", "exitPages"] : []);
  renderBreakdowns(byId("breakdowns"), report, { onFilter: addFilter, unfiltered });
  renderFunnel(byId("funnel"), report.funnel);
  renderProducts(byId("products"), report.topProducts);
  byId("funnel-note").hidden = byId("products-note").hidden = state.filters.length === 0;
  const r = report.range;
  byId("range").textContent = `${r.start} → ${r.end} (${r.timezone}, by ${r.interval})${r.previous ? `, compared with ${r.previous.start} → ${r.previous.end}` : ""}`;
}

async function reload() {
  if (!state.signedIn) return;
  if (state.period === "custom" && (!state.start || !state.end)) {
    setStatus("empty", "Pick a start and an end date for the custom range.");
    return;
  }
  const seq = ++loadSeq;
  renderFilters();
  renderSnippets();
  const dashboard = byId("dashboard");
  dashboard.setAttribute("aria-busy", "true");
  setStatus("loading", "Loading…");
  try {
    let report = await api.get("/api/stats", statsParams());
    if (state.filters.length) report = await applyFilters(report);
    if (seq !== loadSeq) return;
    state.report = report;
    state.range = { start: report.range.start, end: report.range.end };
    renderReport(report);
    setStatus();
  } catch (err) {
    if (seq !== loadSeq) return;
    if (err instanceof ApiFailure && err.status === 401) return onAuthError(err);
    setStatus("error", err.status === 403 ? `${err.message} Pick the shop this token belongs to, or sign in with the admin token.` : err.message);
    return;
  } finally {
    if (seq === loadSeq) dashboard.removeAttribute("aria-busy");
  }
  insights.load();
  live.refresh();
}

const insights = createInsights({ api, list: byId("insights"), button: byId("generate"), state: view, onAuthError });
const chat = createChat({ api, form: byId("chat-form"), input: byId("chat-input"), output: byId("chat-output"), state: view, onAuthError });
const live = createLive({ api, container: byId("live"), toggle: byId("live-toggle"), state: view, onAuthError });

function fillTimezones() {
  const select = byId("timezone");
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  for (const zone of new Set(["UTC", state.timezone, ...zones])) select.append(el("option", { value: zone, text: zone }));
  select.value = state.timezone;
}

function wire() {
  byId("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = byId("token").value.trim();
    if (token) signIn(token);
  });
  byId("sign-out").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    state.token = "";
    byId("token").value = "";
    showSignIn("Signed out: the token was removed from this browser.");
  });
  byId("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    reload();
  });
  byId("shop").addEventListener("change", (event) => {
    state.shopId = event.target.value.trim();
    localStorage.setItem(SHOP_KEY, state.shopId);
    state.filters = [];
    chat.reset();
    reload();
  });
  byId("period").addEventListener("change", (event) => {
    state.period = event.target.value;
    byId("custom-range").hidden = state.period !== "custom";
    reload();
  });
  for (const id of ["start", "end"]) {
    byId(id).addEventListener("change", (event) => {
      state[id] = event.target.value;
      reload();
    });
  }
  byId("timezone").addEventListener("change", (event) => {
    state.timezone = event.target.value;
    reload();
  });
  byId("compare").addEventListener("change", (event) => {
    state.compare = event.target.checked;
    reload();
  });
  byId("metric").addEventListener("change", (event) => {
    state.metric = event.target.value;
    if (state.report) renderTimeseries(byId("timeseries"), state.report.timeseries, state.metric);
  });
  byId("copy-snippet").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(snippet());
      byId("copy-snippet").textContent = "Copied";
    } catch {
      byId("copy-snippet").textContent = "Select the text to copy it";
    }
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => resizeCharts(document.querySelectorAll(".chart")), 150);
  });
}

fillTimezones();
wire();
renderSnippets();
if (state.token) signIn(state.token);
else showSignIn();
