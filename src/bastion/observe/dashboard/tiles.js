// The tiles: one figure each, with its raw value in data-value for anyone who reads the page
// by machine (the browser tests do), and a class that colours it when it calls for attention.

import * as fmt from "./format.js";

const TILES = [
  { key: "rps", label: "requests/s", format: fmt.rate },
  { key: "requests", label: "requests", format: fmt.count },
  { key: "rate_4xx", label: "4xx rate", format: fmt.percent, level: (v) => (v > 0.25 ? "warn" : null) },
  {
    key: "rate_5xx", label: "5xx rate", format: fmt.percent,
    level: (v) => (v > 0.05 ? "bad" : v > 0.01 ? "warn" : null),
  },
  { key: "p50", label: "p50 latency", format: fmt.duration },
  { key: "p95", label: "p95 latency", format: fmt.duration },
  { key: "p99", label: "p99 latency", format: fmt.duration },
  { key: "upstream_share", label: "upstream share", format: fmt.percent },
  { key: "cache_ratio", label: "cache hit ratio", format: fmt.percent },
  {
    key: "upstreams", label: "upstreams healthy",
    format: (v, f) => (v === null ? fmt.DASH : `${v} / ${f.upstreams_total}`),
    level: (v, f) => (f.upstreams_total && v === 0 ? "bad" : v < f.upstreams_total ? "warn" : null),
  },
  {
    key: "cert_days", label: "earliest certificate expiry", format: fmt.days,
    level: (v) => (v < 3 ? "bad" : v < 14 ? "warn" : null),
  },
  { key: "in_flight", label: "in flight", format: fmt.count },
  { key: "alerts_firing", label: "alerts firing", format: fmt.count, level: (v) => (v > 0 ? "bad" : null) },
];

/** The tiles' elements, created once; their text is updated in place. */
export function buildTiles(container) {
  container.replaceChildren(...TILES.map((tile) => {
    const box = document.createElement("div");
    box.className = "tile";
    box.dataset.tile = tile.key;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = fmt.DASH;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = tile.label;
    const note = document.createElement("span");
    note.className = "note";
    box.append(value, label, note);
    return box;
  }));
}

/** Show `figures` (missing keys are left as they are); `notes` are the small print per tile. */
export function updateTiles(container, figures, notes = {}) {
  for (const tile of TILES) {
    if (!(tile.key in figures)) continue;
    const box = container.querySelector(`[data-tile="${tile.key}"]`);
    const raw = figures[tile.key];
    const value = Number.isFinite(raw) ? raw : null;
    box.querySelector(".value").textContent = tile.format(value, figures);
    if (value === null) delete box.dataset.value;
    else box.dataset.value = String(value);
    const total = figures[`${tile.key}_total`];
    if (Number.isFinite(total)) box.dataset.total = String(total);
    box.classList.remove("warn", "bad");
    const level = value !== null && tile.level ? tile.level(value, figures) : null;
    if (level) box.classList.add(level);
    if (tile.key in notes) box.querySelector(".note").textContent = notes[tile.key];
  }
}
