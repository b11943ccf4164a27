/* Flowtel tracker (docs/tracker.md). No cookies, no fingerprinting. Every event gets a UUIDv7 id and waits in a
   localStorage outbox until the server confirms it; sends are text/plain JSON, so no CORS preflight is needed. */
(() => {
  "use strict";
  const w = window, d = document, nav = navigator, loc = location;
  // currentScript is null when a loader runs this code later; then the tag is found by its attribute.
  const script = d.currentScript || d.querySelector("script[data-shop-id]");
  const attr = (name) => script && script.getAttribute("data-" + name);
  // A present attribute is on unless it says false/0/off/no; an absent one takes the default.
  const flag = (name, fallback) => {
    const value = attr(name);
    return value == null ? fallback : !/^(false|0|off|no)$/i.test(value);
  };

  if (w.flowtel && w.flowtel.pageview) return; // a second tag on the page would count everything twice
  const queued = (w.flowtel && w.flowtel.q) || [];
  const shopId = attr("shop-id");
  const endpoint = (attr("api") || new URL(script ? script.src : loc.href).origin).replace(/\/+$/, "") + "/api/events";
  const flushMs = +attr("flush-ms") || 2000;
  const hashRouting = flag("hash", false);
  const SESSION_MS = 30 * 60 * 1000, BATCH = 10, PER_REQUEST = 25, OUTBOX_MAX = 500, BACKOFF_MAX = 300000;
  const OUTBOX = "flowtel_outbox", SESSION = "flowtel_session";

  // Storage can be missing or full (private modes, quotas); then this page keeps the value in memory.
  const memory = {};
  const get = (area, key) => {
    if (area + key in memory) return memory[area + key];
    try { return w[area].getItem(key); } catch { return null; }
  };
  const put = (area, key, value) => {
    try { w[area].setItem(key, value); delete memory[area + key]; } catch { memory[area + key] = value; }
  };
  const parse = (text) => { try { return JSON.parse(text); } catch { return null; } };

  const noop = () => {};
  const dnt = flag("respect-dnt", false) &&
    (nav.doNotTrack === "1" || w.doNotTrack === "1" || nav.globalPrivacyControl === true);
  const local = loc.protocol === "file:" ||
    /^(localhost|127(\.\d+){3}|\[::1\]|0\.0\.0\.0)$|\.localhost$/.test(loc.hostname);
  if (!shopId || get("localStorage", "flowtel_ignore") === "true" || dnt || (local && !flag("allow-localhost", false))) {
    if (!shopId) console.warn("flowtel: data-shop-id is missing on the tracker's script tag; nothing is sent.");
    w.flowtel = { track: noop, pageview: noop, flush: noop };
    return;
  }
  // Automated browsers are sent, marked, so the server flags them as bots instead of counting shoppers.
  const userAgent = nav.webdriver ? nav.userAgent.slice(0, 1000) + " (webdriver)" : undefined;

  // UUIDv7: 48 bits of milliseconds, then random bits; time order keeps the server's id index append-only.
  const uuid7 = (now) => {
    const b = crypto.getRandomValues(new Uint8Array(16));
    for (let i = 5, t = now; i >= 0; i--, t = Math.floor(t / 256)) b[i] = t % 256;
    b[6] = (b[6] & 15) | 0x70;
    b[8] = (b[8] & 63) | 0x80;
    const hex = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  };

  const sessionId = (now) => {
    let session = parse(get("sessionStorage", SESSION));
    if (!session || !session.id || now - session.at > SESSION_MS) session = { id: uuid7(now) };
    session.at = now;
    put("sessionStorage", SESSION, JSON.stringify(session));
    return session.id;
  };

  const outbox = () => {
    const events = parse(get("localStorage", OUTBOX));
    return Array.isArray(events) ? events : [];
  };
  // Capped so a dead server cannot fill the shop's storage: the oldest events give way.
  const save = (events) => put("localStorage", OUTBOX, JSON.stringify(events.slice(-OUTBOX_MAX)));
  const forget = (ids) => save(outbox().filter((e) => !ids.has(e.id)));
  const envelope = (events) => JSON.stringify({ events, sentAt: new Date().toISOString() });

  const inflight = new Set();
  let timer = 0, dueAt = 0, retryAt = 0, failures = 0;

  // Never earlier than the back-off allows; an earlier request replaces a later timer.
  const schedule = (ms) => {
    const at = Math.max(Date.now() + ms, retryAt);
    if (timer && dueAt <= at) return;
    clearTimeout(timer);
    dueAt = at;
    timer = setTimeout(flush, at - Date.now());
  };

  const flush = () => {
    clearTimeout(timer);
    timer = 0;
    if (inflight.size) return;
    const batch = outbox().slice(0, PER_REQUEST);
    if (!batch.length) return;
    batch.forEach((e) => inflight.add(e.id));
    const body = envelope(batch);
    // keepalive lets the request outlive the page, within the browser's 64 KiB budget.
    fetch(endpoint, { method: "POST", body, keepalive: body.length < 20000, credentials: "omit" })
      .then(async (res) => {
        if (res.status >= 500 || res.status === 408 || res.status === 429) throw res.status;
        let settled = batch;
        if (res.status === 400) {
          // The server stores nothing from a batch with a bad event: drop the bad ones, resend the rest.
          const details = ((await res.json().catch(noop)) || {}).error?.details || [];
          const bad = details.map((detail) => batch[detail.index]).filter(Boolean);
          if (bad.length) settled = bad;
        }
        forget(new Set(settled.map((e) => e.id)));
        failures = retryAt = 0;
      })
      .catch(() => {
        // Exponential back-off with jitter; the same ids are sent again and the server de-duplicates them.
        failures++;
        retryAt = Date.now() + Math.min(flushMs * 2 ** (failures - 1), BACKOFF_MAX) * (0.5 + Math.random());
      })
      .finally(() => {
        inflight.clear();
        const left = outbox().length;
        if (left) schedule(left >= BATCH ? 0 : flushMs);
      });
  };

  // The page is going away (or may be killed while hidden): hand what is left to sendBeacon. The events stay in the
  // outbox until a confirmed send, so a beacon that never arrives is retried by the next page on this origin.
  const beacon = () => {
    const pending = outbox().filter((e) => !inflight.has(e.id));
    while (pending.length && nav.sendBeacon && nav.sendBeacon(endpoint, envelope(pending.splice(0, PER_REQUEST))));
  };

  const pageUrl = () => (hashRouting ? loc.href : loc.href.split("#")[0]);
  let lastUrl = "", referrer = d.referrer;

  const copy = (properties) => {
    const value = properties && typeof properties === "object" ? parse(JSON.stringify(properties)) : null;
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  };

  const track = (eventType, properties) => {
    const now = Date.now();
    const event = {
      id: uuid7(now),
      shopId,
      sessionId: sessionId(now),
      eventType: String(eventType).slice(0, 100),
      properties: copy(properties),
      timestamp: new Date(now).toISOString(),
      url: pageUrl().slice(0, 2048),
      referrer: referrer ? referrer.slice(0, 2048) : undefined,
      userAgent,
    };
    const events = outbox();
    events.push(event);
    save(events);
    schedule(events.length >= BATCH ? 0 : flushMs);
    return event.id;
  };

  // One page view per distinct URL: a replaceState that keeps the URL, or a re-render, sends nothing.
  const pageview = () => {
    const url = pageUrl();
    if (url === lastUrl) return;
    if (lastUrl) referrer = lastUrl;
    lastUrl = url;
    track("page_view", { title: d.title });
  };

  const click = (e) => {
    const target = e.target instanceof Element ? e.target : null;
    const tagged = target && target.closest("[data-flowtel-event]");
    if (tagged) {
      const properties = {};
      for (const key in tagged.dataset) {
        // data-flowtel-prop-product-id → dataset.flowtelPropProductId → productId
        if (key.startsWith("flowtelProp") && key.length > 11) {
          properties[key[11].toLowerCase() + key.slice(12)] = tagged.dataset[key];
        }
      }
      track(tagged.dataset.flowtelEvent, properties);
    }
    const link = target && target.closest("a[href]");
    if (link instanceof HTMLAnchorElement && /^https?:$/.test(link.protocol) && link.host !== loc.host) {
      track("outbound_click", { url: link.href.slice(0, 2048) });
    }
  };

  d.addEventListener("click", click, true);
  d.addEventListener("auxclick", (e) => e.button === 1 && click(e), true);
  addEventListener("pagehide", beacon);
  d.addEventListener("visibilitychange", () => (d.visibilityState === "hidden" ? beacon() : schedule(flushMs)));
  addEventListener("online", () => { failures = retryAt = 0; schedule(0); });

  if (flag("auto", true)) {
    for (const name of ["pushState", "replaceState"]) {
      const original = history[name];
      history[name] = function (...args) {
        const result = original.apply(this, args);
        pageview();
        return result;
      };
    }
    addEventListener("popstate", pageview);
    if (hashRouting) addEventListener("hashchange", pageview);
    // A page restored from the back/forward cache is a new view of it.
    addEventListener("pageshow", (e) => { if (e.persisted) { lastUrl = ""; pageview(); } });
    pageview();
  }

  w.flowtel = { track, pageview, flush };
  for (const args of queued) track(...args);
  // Events left by earlier pages (or a server that was down) go out with this page's first batch.
  if (outbox().length) schedule(flushMs);
})();
