// The cluster scope: every instance's figures from Redis (the admin API's scope=cluster),
// and a table of the instances with the ones that stopped writing marked missing.
// The cluster view has the windows 5m, 1h and 24h (Redis keeps 48 hours of minutes); live,
// 7d and 30d stay per instance.

import * as fmt from "./format.js";
import { el, emptyState, renderTable } from "./tables.js";

export const CLUSTER_WINDOWS = ["5m", "1h", "24h"];

/** The per-instance breakdown of a cluster summary into `container`. */
export function renderInstances(container, summary, emptyText) {
  const rows = summary ? summary.instances : [];
  renderTable(container, {
    name: "instances",
    rows,
    keyOf: (row) => row.instance,
    empty: emptyText || "no instance wrote figures in this window",
    columns: [
      {
        key: "instance", label: "instance", title: true,
        format: (name) => (summary && name === summary.instance ? `${name} (this one)` : name),
      },
      { key: "requests", label: "requests", numeric: true, format: fmt.count },
      { key: "rps", label: "req/s", numeric: true, format: fmt.rate },
      {
        key: "rate_5xx", label: "5xx", numeric: true, format: fmt.percent,
        className: (row) => (row.rate_5xx > 0.05 ? "bad" : null),
      },
      { key: "p95", label: "p95", numeric: true, format: fmt.duration },
      {
        key: "last_seen", label: "last seen", format: (t) => fmt.relative(t),
        className: (row) => (row.missing ? "bad" : null),
      },
      {
        key: "missing", label: "state", format: (missing) => (missing ? "missing" : "writing"),
        className: (row) => (row.missing ? "bad" : null),
      },
    ],
  });
  if (summary && summary.missing.length) {
    container.appendChild(el("p", {
      className: "bad", data: { missing: summary.missing.join(",") },
      text: `missing: ${summary.missing.join(", ")} (no figures for over two write intervals: `
        + "their recent minutes are not in the totals)",
    }));
  }
  if (summary && summary.top_error > 0) {
    container.appendChild(el("p", {
      className: "muted",
      text: `top lists are merged from every instance: each count may be short by up to `
        + `${fmt.count(summary.top_error)}`,
    }));
  }
}

/** Why the cluster scope has nothing to show (Redis unreachable, no state.redis). */
export function instancesUnavailable(container, message) {
  container.replaceChildren(emptyState(message));
}
