// Number formatting for the page: counts with separators, rates as percent, durations, money by currency.

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

export function formatCount(value) {
  return value === null || value === undefined ? "–" : integer.format(value);
}

export function formatNumber(value) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" ? decimal.format(value) : String(value);
}

/** Rates are fractions 0..1 in the API; shown as percent with one decimal. */
export function formatRate(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function money(amount, currency) {
  try {
    return new Intl.NumberFormat("en-US", { style: "currency", currency }).format(amount);
  } catch {
    return `${amount.toFixed(2)} ${currency}`;
  }
}

/** [{currency, amount}] → "12.50 EUR · 3.00 USD"; an empty list is 0. */
export function formatMoney(list) {
  if (!Array.isArray(list) || list.length === 0) return "0";
  return list.map((m) => money(m.amount, m.currency)).join(" · ");
}

/** The change from the API: percent for totals, percentage points for rates. */
export function formatChange(value, isRate) {
  if (value === null || value === undefined) return "no previous data";
  const sign = value > 0 ? "+" : value < 0 ? "−" : "±";
  const abs = Math.abs(value).toFixed(1);
  return isRate ? `${sign}${abs} pp` : `${sign}${abs}%`;
}

export function formatTime(iso, timeZone) {
  try {
    return new Intl.DateTimeFormat("en-GB", { timeZone, dateStyle: "short", timeStyle: "medium" }).format(new Date(iso));
  } catch {
    return iso;
  }
}
