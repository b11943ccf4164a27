// The live view: the latest events for the dashboard's shop, period and filters, polled while the tab is visible.

import { clear, el, notice, table } from "./dom.js";
import { formatTime } from "./format.js";

const POLL_MS = 5000;
// Filters the events API cannot apply are applied here to each event's derived context.
const CONTEXT_FIELDS = { path: "path", device: "device", browser: "browser", os: "os", country: "country" };

function matches(event, filters) {
  return filters.every((f) => {
    if (f.dimension === "eventType") return event.eventType === f.value;
    const field = CONTEXT_FIELDS[f.dimension];
    return field ? (event.context || {})[field] === f.value : true;
  });
}

export function createLive({ api, container, toggle, state, onAuthError }) {
  let timer = null;
  let paused = false;

  async function load() {
    const s = state();
    if (!s.signedIn) return;
    const eventType = s.filters.find((f) => f.dimension === "eventType");
    const params = { limit: 50, shopId: s.shopId, timezone: s.timezone, eventType: eventType && eventType.value };
    if (s.range) {
      params.startDate = s.range.start;
      params.endDate = s.range.end;
    }
    try {
      const page = await api.get("/api/events", params);
      const events = (page.data || []).filter((e) => matches(e, s.filters)).slice(0, 20);
      clear(container);
      const unsupported = s.filters.filter((f) => f.dimension !== "eventType" && !CONTEXT_FIELDS[f.dimension]);
      if (unsupported.length) container.append(el("p", { className: "muted small", text: `Not filtered by ${unsupported.map((f) => f.dimension).join(", ")}: a session attribute the event list does not carry.` }));
      if (events.length === 0) {
        container.append(notice("empty", "No events in this period yet."));
        return;
      }
      container.append(
        table(
          [
            { label: "Time", value: (e) => formatTime(e.timestamp, s.timezone) },
            { label: "Type", value: (e) => e.eventType },
            { label: "Name", value: (e) => e.eventName },
            { label: "Path", value: (e) => (e.context || {}).path || "" },
            { label: "Device", value: (e) => (e.context || {}).device || "" },
            { label: "Country", value: (e) => (e.context || {}).country || "" },
            { label: "Properties", value: (e) => JSON.stringify(e.properties || {}) },
          ],
          events,
          { caption: "Latest events" },
        ),
      );
    } catch (err) {
      if (err.status === 401) return onAuthError(err);
      clear(container).append(notice("error", err.message));
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (!paused && !document.hidden) timer = setTimeout(async () => { await load(); schedule(); }, POLL_MS);
  }

  toggle.addEventListener("click", () => {
    paused = !paused;
    toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
    toggle.setAttribute("aria-pressed", String(paused));
    if (!paused) load();
    schedule();
  });
  document.addEventListener("visibilitychange", schedule);

  return {
    async refresh() {
      await load();
      schedule();
    },
    stop() {
      clearTimeout(timer);
    },
  };
}
