// The page's tables: traffic by route and top-K dimension (from a stats summary), the last
// 5xx answers, upstream pools, certificates with their renew action, and alerts.

import * as fmt from "./format.js";
import { el, emptyState, renderTable, topColumns } from "./tables.js";

const byKey = (row) => row.key;

// top-K dimensions of the summary: [key in "top", first column's label, what an empty table
// says when the window had traffic]
const TOP_TABLES = [
  ["paths", "path", "no paths in this window"],
  ["not_found", "404 path", "no 404 answers in this window"],
  ["clients", "client", "no clients in this window"],
  ["browsers", "browser", "no browsers in this window"],
  ["os", "operating system", "no operating systems in this window"],
  ["devices", "device", "no devices in this window"],
  ["bots", "bot", "no bots in this window"],
  ["referrers", "referrer", "no referrers in this window"],
  ["countries", "country", "no countries: set stats.geoip to a MaxMind database"],
];

function statusClass(status) {
  return status >= 500 ? "s5" : status >= 400 ? "s4" : null;
}

/** Every traffic table of a summary, or the reason there is none. */
export function renderTrafficTables(root, summary, emptyText) {
  const total = summary ? summary.totals.requests : 0;
  const quiet = emptyText || "no traffic in this window";
  renderTable(root.querySelector("#routes"), {
    name: "routes",
    rows: summary ? summary.routes : [],
    keyOf: (row) => row.route,
    empty: quiet,
    columns: [
      { key: "route", label: "route", title: true },
      { key: "requests", label: "requests", numeric: true, format: fmt.count },
      {
        key: "error_rate", label: "error rate", numeric: true, format: fmt.percent,
        className: (row) => (row.error_rate > 0.05 ? "bad" : null),
      },
      { key: "p95", label: "p95", numeric: true, format: fmt.duration },
    ],
  });
  renderTable(root.querySelector("#consumers"), {
    name: "consumers",
    rows: summary ? summary.top.consumers : [],
    keyOf: byKey,
    empty: summary && total ? "no consumers identified in this window" : quiet,
    columns: topColumns("consumer", total, [
      {
        key: "limited", label: "429s", numeric: true, format: fmt.count,
        className: (row) => (row.limited > 0 ? "warn" : null),
      },
      {
        // the consumer's fullest quota in its current day or month
        key: "quota", label: "quota use", numeric: true,
        format: (q) => (q ? `${fmt.count(q.used)} / ${fmt.count(q.limit)} (${fmt.percent(q.used / q.limit)})` : "–"),
        className: (row) => (row.quota && row.quota.used >= 0.8 * row.quota.limit ? "warn" : null),
      },
    ]),
  });
  for (const [key, label, emptyWithTraffic] of TOP_TABLES) {
    renderTable(root.querySelector(`#top-${key}`), {
      name: key,
      rows: summary && summary.top[key] ? summary.top[key] : [],
      keyOf: byKey,
      empty: summary && total ? emptyWithTraffic : quiet,
      columns: topColumns(label, total),
    });
  }
  renderTable(root.querySelector("#recent-errors"), {
    name: "recent_errors",
    rows: summary ? [...summary.recent_errors].sort((a, b) => b.time - a.time) : [],
    keyOf: (row) => row.request_id || "",
    empty: summary && total ? "no 5xx answers in this window" : quiet,
    columns: [
      { key: "time", label: "time", format: fmt.timestamp },
      { key: "status", label: "status", numeric: true, className: (row) => statusClass(row.status) },
      { key: "method", label: "method" },
      { key: "route", label: "route" },
      { key: "path", label: "path", title: true },
      { key: "upstream", label: "upstream" },
      { key: "request_id", label: "request id", className: () => "mono" },
    ],
  });
}

/** One table per upstream pool. */
export function renderUpstreams(container, data) {
  const pools = data ? data.pools : [];
  if (!pools.length) {
    container.replaceChildren(emptyState("no upstream pools"));
    return;
  }
  container.replaceChildren(...pools.map((pool) => {
    const healthy = pool.endpoints.filter((e) => e.state === "up").length;
    const section = el("section", { className: "pool", data: { pool: pool.name } }, [
      el("h3", {}, [
        el("span", { text: pool.name }),
        el("span", { className: "muted", text: ` ${pool.policy || ""} · ${healthy} / ${pool.endpoints.length} up` }),
      ]),
      el("div"),
    ]);
    renderTable(section.lastChild, {
      name: "endpoints",
      rows: pool.endpoints,
      keyOf: (row) => row.address,
      empty: "no endpoints",
      columns: [
        { key: "address", label: "endpoint", className: () => "mono" },
        {
          key: "state", label: "state",
          cell: (row) => el("span", { text: row.state, className: `badge state-${row.state}` }),
        },
        { key: "last_check", label: "last check", format: (v) => fmt.relative(v) },
        { key: "ejections", label: "ejections", numeric: true, format: fmt.count },
        { key: "latency", label: "latency", numeric: true, format: fmt.duration },
        { key: "last_error", label: "last error", title: true },
      ],
    });
    return section;
  }));
}

/**
 * The certificates, each with a "Renew now" button calling `onRenew(name)`; `results` maps a
 * name to the outcome of its last renewal asked from this page ({ok, text}).
 */
export function renderCertificates(container, data, results, onRenew) {
  const certificates = data ? data.certificates : [];
  renderTable(container, {
    name: "certificates",
    rows: [...certificates].sort((a, b) => a.not_after - b.not_after),
    keyOf: (row) => row.names[0] || "",
    empty: "no certificates",
    columns: [
      { key: "names", label: "names", format: (v) => v.join(", ") },
      { key: "issuer", label: "issuer", title: true },
      { key: "not_after", label: "expires", format: fmt.date },
      {
        key: "days_left", label: "days left", numeric: true, format: fmt.days,
        className: (row) => (row.days_left < 3 ? "bad" : row.days_left < 14 ? "warn" : null),
      },
      { key: "next_renewal", label: "next renewal", format: (v) => (v ? fmt.timestamp(v) : "–") },
      { key: "last_error", label: "last error", title: true, className: (r) => (r.last_error ? "bad" : null) },
      { key: "source", label: "source" },
      {
        key: "renew", label: "",
        cell: (row) => {
          const name = row.names[0] || "";
          const result = results.get(name);
          const output = el("output", {
            text: result ? result.text : "",
            className: result && !result.pending ? (result.ok ? "ok" : "bad") : null,
            data: { renewResult: name },
          });
          output.setAttribute("aria-live", "polite");
          if (row.source === "file") {
            // certificate files are renewed by whoever writes them
            return el("span", { className: "muted", text: "from files" });
          }
          const button = el("button", { text: "Renew now", className: "renew", data: { renew: name } });
          button.type = "button";
          button.disabled = Boolean(result && result.pending);
          button.setAttribute("aria-label", `Renew the certificate of ${name} now`);
          button.addEventListener("click", () => onRenew(name, button));
          return el("span", { className: "renew-cell" }, [button, output]);
        },
      },
    ],
  });
}

/** Alert rules, firing ones first. */
export function renderAlerts(container, data) {
  const order = { FIRING: 0, INSUFFICIENT_DATA: 1, OK: 2 };
  const alerts = data ? [...data.alerts] : [];
  alerts.sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3));
  renderTable(container, {
    name: "alerts",
    rows: alerts,
    keyOf: (row) => row.name,
    empty: "no alert rules configured",
    columns: [
      { key: "name", label: "rule" },
      {
        key: "state", label: "state",
        cell: (row) => el("span", { text: row.state, className: `badge alert-${row.state}` }),
      },
      { key: "since", label: "since", format: (v) => fmt.relative(v) },
      { key: "value", label: "value", numeric: true, format: (v) => (v === null ? "–" : String(v)) },
      { key: "threshold", label: "threshold", numeric: true, format: (v) => (v === null ? "–" : String(v)) },
      { key: "summary", label: "summary" },
    ],
  });
}
