// DOM building without HTML strings: every value becomes a text node, so nothing from an event can run as markup.

/** el("td", {className: "num", text: 42}) or el("ul", {}, [child, "text"]). */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === "hidden" || key === "disabled" || key === "checked" || key === "selected") node[key] = Boolean(value);
    else node.setAttribute(key, String(value));
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

/** A table of columns [{label, value: row => text, numeric}] and rows; onRow makes rows buttons (Enter/Space). */
export function table(columns, rows, { caption, onRow, rowLabel } = {}) {
  const head = el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", className: c.numeric ? "num" : "", text: c.label }))));
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr", {}, columns.map((c) => el("td", { className: c.numeric ? "num" : "", text: c.value(row) })));
    if (onRow) {
      tr.tabIndex = 0;
      tr.className = "clickable";
      tr.setAttribute("role", "button");
      if (rowLabel) tr.setAttribute("aria-label", rowLabel(row));
      tr.addEventListener("click", () => onRow(row));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          onRow(row);
        }
      });
    }
    body.append(tr);
  }
  return el("table", {}, [caption ? el("caption", { className: "sr-only", text: caption }) : null, head, body]);
}

/** A short message with an optional hint, for empty, loading and error states. */
export function notice(kind, message, extra = []) {
  return el("div", { className: `notice notice-${kind}`, role: kind === "error" ? "alert" : null }, [el("p", { text: message }), ...[].concat(extra)]);
}
