// The chat panel: a question in, the answer, the SQL, the rows as a table and the chart out — all as text.

import { barList, lineChart } from "./charts.js";
import { clear, el, notice, table } from "./dom.js";
import { formatNumber } from "./format.js";

const PROVIDER_HELP =
  "To answer any question, configure an LLM provider: set OPENAI_API_KEY (optionally OPENAI_MODEL, OPENAI_BASE_URL) or " +
  "ANTHROPIC_API_KEY (optionally ANTHROPIC_MODEL), or FLOWTEL_LLM_PROVIDER, then restart the server.";

function cell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return formatNumber(value);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function renderChart(container, result) {
  const chart = result.chart || { type: "table" };
  const columns = result.columns || [];
  const rows = result.rows || [];
  const x = columns.indexOf(chart.x);
  const yName = Array.isArray(chart.y) ? chart.y[0] : chart.y;
  const y = columns.indexOf(yName);
  if (chart.type === "number" && rows.length) {
    const value = rows[0][y >= 0 ? y : 0];
    container.append(el("p", { className: "chat-number", text: cell(value) }));
  } else if (chart.type === "line" && x >= 0 && y >= 0 && rows.length) {
    const box = el("div", { className: "chart" });
    container.append(box);
    lineChart(box, rows.map((r) => String(r[x])), rows.map((r) => Number(r[y]) || 0), String(yName));
  } else if (chart.type === "bar" && x >= 0 && y >= 0 && rows.length) {
    const box = el("div");
    container.append(box);
    barList(box, rows.slice(0, 20).map((r) => ({ label: cell(r[x]), value: Number(r[y]) || 0 })), { format: formatNumber });
  }
}

export function createChat({ api, form, input, output, state, onAuthError }) {
  let conversationId = null;
  let lastShop = null;

  async function ask(message) {
    const { shopId } = state();
    if (!shopId) {
      clear(output).append(notice("empty", "Pick a shop first: chat answers about one shop."));
      return;
    }
    if (shopId !== lastShop) conversationId = null;
    lastShop = shopId;
    clear(output).append(notice("loading", "Thinking…"));
    output.setAttribute("aria-busy", "true");
    try {
      const body = { shopId, message };
      if (conversationId) body.conversationId = conversationId;
      const result = await api.post("/api/chat", body);
      conversationId = result.conversationId || conversationId;
      clear(output);
      output.append(el("p", { className: "chat-answer", text: result.answer }));
      renderChart(output, result);
      if ((result.columns || []).length) {
        output.append(table(result.columns.map((name, i) => ({ label: name, value: (row) => cell(row[i]) })), result.rows || [], { caption: "Rows" }));
      }
      for (const query of result.queries || []) {
        output.append(el("details", {}, [el("summary", { text: `SQL (${query.rowCount} rows, ${query.ms} ms)` }), el("pre", { className: "sql", text: query.sql })]));
      }
      for (const warning of result.warnings || []) output.append(el("p", { className: "muted small", text: String(warning) }));
      output.append(el("p", { className: "muted small", text: `Answered by ${result.provider}${result.model ? ` (${result.model})` : ""}` }));
    } catch (err) {
      if (err.status === 401) return onAuthError(err);
      clear(output);
      if (err.code === "llm_unavailable") {
        const examples = (err.details || []).map((d) => d.example || d.message || d.question).filter(Boolean);
        output.append(notice("error", err.message, [el("p", { text: PROVIDER_HELP }), examples.length ? el("ul", {}, examples.map((e) => el("li", { text: e }))) : null]));
      } else if (err.code === "llm_upstream") {
        output.append(notice("error", `${err.message} The LLM provider failed; try again, or check its key and model.`));
      } else if (err.status === 404) {
        output.append(notice("error", "This server has no chat API yet (POST /api/chat answered 404)."));
      } else {
        output.append(notice("error", err.message));
      }
    } finally {
      output.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = input.value.trim();
    if (message) ask(message);
  });
  return { reset: () => { conversationId = null; clear(output); } };
}
