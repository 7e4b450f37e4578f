// Number and time formatting for the dashboard: every figure the page shows goes through
// one of these, so that a tile, a table cell and a chart axis say the same thing the same way.

const DASH = "–";

function trim(value, digits) {
  // 3 significant figures at most, without trailing zeros ("1.50" -> "1.5")
  return Number(value.toFixed(digits)).toString();
}

function digitsFor(value) {
  const a = Math.abs(value);
  return a >= 100 ? 0 : a >= 10 ? 1 : 2;
}

/** A count: 950, 1.2k, 3.4M, 5.6G. */
export function count(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  const a = Math.abs(value);
  if (a < 1000) return Number.isInteger(value) ? String(value) : trim(value, digitsFor(value));
  for (const [size, unit] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (a >= size) return trim(value / size, digitsFor(value / size)) + unit;
  }
  return String(value);
}

/** A rate per second: 0.02/s, 12.5/s, 1.2k/s. */
export function rate(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  if (value !== 0 && Math.abs(value) < 0.01) return "<0.01/s";
  return count(value) + "/s";
}

/** A share 0..1 as a percentage: 0.4 %, 12 %, 100 %. */
export function percent(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  const p = value * 100;
  if (p !== 0 && Math.abs(p) < 0.01) return "<0.01 %";
  return trim(p, digitsFor(p)) + " %";
}

/** A duration in seconds: 420 µs, 12 ms, 1.5 s, 2.5 min. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return DASH;
  const a = Math.abs(seconds);
  if (a === 0) return "0 ms";
  if (a < 0.001) return trim(seconds * 1e6, 0) + " µs";
  if (a < 1) return trim(seconds * 1e3, digitsFor(seconds * 1e3)) + " ms";
  if (a < 120) return trim(seconds, digitsFor(seconds)) + " s";
  return trim(seconds / 60, 1) + " min";
}

/** A size in bytes: 512 B, 1.5 kB, 20 MB (powers of 1000, as network rates are said). */
export function bytes(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  const a = Math.abs(value);
  for (const [size, unit] of [[1e12, "TB"], [1e9, "GB"], [1e6, "MB"], [1e3, "kB"]]) {
    if (a >= size) return trim(value / size, digitsFor(value / size)) + " " + unit;
  }
  return trim(value, 0) + " B";
}

/** Days, as certificates count them: 89 days, 12.5 days, 3 h. */
export function days(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  if (Math.abs(value) < 1) return trim(value * 24, 1) + " h";
  return trim(value, value >= 10 ? 0 : 1) + (value === 1 ? " day" : " days");
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** An epoch second as local time: "14:03:07" today, "2026-12-04 14:03" another day. */
export function timestamp(epoch) {
  if (epoch === null || epoch === undefined || !Number.isFinite(epoch)) return DASH;
  const d = new Date(epoch * 1000);
  const now = new Date();
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock.slice(0, 5)}`;
}

/** An epoch second as a date: "2026-12-04". */
export function date(epoch) {
  if (epoch === null || epoch === undefined || !Number.isFinite(epoch)) return DASH;
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** An epoch second relative to now: "4 s ago", "3 min ago", "in 2 days". */
export function relative(epoch, nowSeconds = Date.now() / 1000) {
  if (epoch === null || epoch === undefined || !Number.isFinite(epoch)) return DASH;
  const delta = nowSeconds - epoch;
  const a = Math.abs(delta);
  let text;
  if (a < 90) text = `${Math.round(a)} s`;
  else if (a < 5400) text = `${Math.round(a / 60)} min`;
  else if (a < 172800) text = `${Math.round(a / 3600)} h`;
  else text = `${Math.round(a / 86400)} days`;
  return delta >= 0 ? `${text} ago` : `in ${text}`;
}

/** A tick label on a time axis, by the span the axis covers (seconds). */
export function axisTime(epoch, span) {
  const d = new Date(epoch * 1000);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (span <= 900) return `${hm}:${pad(d.getSeconds())}`;
  if (span <= 2 * 86400) return hm;
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export { DASH };
