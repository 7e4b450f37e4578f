// The dashboard page: picks the window, polls the admin API, follows the live stream and
// hands the figures to the tiles, charts and tables.
//
// State the page exposes for machines (the browser tests read it): body[data-window],
// body[data-stats] ("ready" | "off" | "error"), body[data-live] ("open" | "retrying" | "off"),
// body[data-renders] (counts the traffic renders), body[data-scope] ("instance" | "cluster"),
// [data-tile] tiles, [data-chart] charts and [data-table] tables (see tables.js).

import { follow, getJson, logout, postJson } from "./api.js";
import { drawChart } from "./charts.js";
import { CLUSTER_WINDOWS, instancesUnavailable, renderInstances } from "./cluster.js";
import * as fmt from "./format.js";
import { LiveBuffer, LIVE_SPAN } from "./live.js";
import { renderAlerts, renderCertificates, renderTrafficTables, renderUpstreams } from "./sections.js";
import { buildTiles, updateTiles } from "./tiles.js";

const WINDOWS = ["live", "5m", "1h", "24h", "7d", "30d"];
// how often a window's summary is fetched again (ms): the finer the steps, the sooner
const REFRESH = { live: 10000, "5m": 5000, "1h": 15000, "24h": 60000, "7d": 300000, "30d": 300000 };
const STATE_REFRESH = 5000; // overview, upstreams, certificates, alerts

const $ = (selector) => document.querySelector(selector);

const page = {
  window: "live",
  scope: "instance", // or "cluster": every instance's figures (with state.redis)
  summary: null,
  statsError: null,
  live: new LiveBuffer(),
  stopLive: null,
  timers: [],
  generation: 0, // a window change makes answers of the previous window's requests stale
  overview: null,
  certificates: null,
  renewResults: new Map(),
};

// ------------------------------------------------------------------ traffic (stats + live)
function stepLabel(step) {
  if (!step || step <= 1) return "per second";
  if (step % 3600 === 0) return step === 3600 ? "per hour" : `per ${step / 3600} h`;
  if (step % 60 === 0) return step === 60 ? "per minute" : `per ${step / 60} min`;
  return `per ${step} s`;
}

function drawCharts(series, domain, step, label = stepLabel(step)) {
  const t = series ? series.t : [];
  const quiet = page.statsError || "no traffic in this window";
  const traffic = series && series.requests.some((v) => v > 0);
  // the classes that occur in the window (a legend entry for nothing is noise)
  const classes = ["1xx", "2xx", "3xx", "4xx", "5xx"].filter(
    (c) => series && series.status[c] && series.status[c].some((v) => v));
  const common = { t, domain, step, empty: quiet };
  document.querySelectorAll(".step").forEach((node) => { node.textContent = label; });
  drawChart($("#chart-status"), {
    ...common, kind: "stacked", title: "requests by status class", format: fmt.count,
    series: classes.map((c) => ({ name: c, label: c, values: series.status[c] })),
  });
  drawChart($("#chart-latency"), {
    ...common, kind: "lines", title: "latency percentiles", format: fmt.duration,
    series: ["p50", "p95", "p99"].map((p) => ({ name: p, label: p, values: series ? series[p] : [] })),
  });
  drawChart($("#chart-bytes"), {
    ...common, kind: "lines", title: "bytes in and out", format: fmt.bytes,
    series: [
      { name: "in", label: "in", values: series ? series.bytes_in : [] },
      { name: "out", label: "out", values: series ? series.bytes_out : [] },
    ],
  });
  drawChart($("#chart-refusals"), {
    ...common, kind: "lines", title: "refusals", format: fmt.count,
    empty: traffic ? "no refusals in this window" : quiet,
    series: ["401", "403", "429"].map((code) => ({
      name: `r${code}`, label: code, values: series && series.refusals[code] ? series.refusals[code] : [],
    })),
  });
}

function summaryFigures(summary) {
  const totals = summary.totals;
  return {
    requests: totals.requests,
    rps: totals.rps,
    rate_4xx: totals.rate_4xx,
    rate_5xx: totals.rate_5xx,
    p50: totals.latency.p50,
    p95: totals.latency.p95,
    p99: totals.latency.p99,
    upstream_share: totals.upstream_share,
    cache_ratio: totals.cache.ratio,
  };
}

const NO_STATS = { requests: null, rps: null, rate_4xx: null, rate_5xx: null, p50: null,
  p95: null, p99: null, upstream_share: null, cache_ratio: null };

function renderTraffic() {
  const tiles = $("#tiles");
  const live = page.window === "live";
  if (page.statsError && !(live && page.live.last)) {
    updateTiles(tiles, NO_STATS);
    drawCharts(null, null, null);
  } else if (live) {
    const figures = page.live.figures(page.summary ? page.summary.totals : null);
    updateTiles(tiles, figures, { requests: "last 5 minutes", p95: "last active second",
      p50: "last active second", p99: "last active second", rps: "last second" });
    const now = page.live.now();
    drawCharts(page.live.series(), [now - LIVE_SPAN, now], page.live.step(), "per second");
  } else if (page.summary) {
    const s = page.summary;
    updateTiles(tiles, summaryFigures(s), { requests: `since ${fmt.timestamp(s.since)}`,
      p50: "", p95: "", p99: "", rps: "average" });
    drawCharts(s.series, [s.since, s.until], s.step);
  }
  if (!live || !page.stopLive) {
    // the in-flight tile follows the overview outside the live view
    updateTiles(tiles, { in_flight: page.overview ? page.overview.in_flight : null });
  }
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}

function renderTables() {
  renderTrafficTables(document, page.summary, page.statsError);
  if (page.scope !== "cluster") return;
  if (page.summary) renderInstances($("#instances"), page.summary);
  else instancesUnavailable($("#instances"), page.statsError || "loading…");
}

// ------------------------------------------------------------------ fetching
async function loadStats(generation) {
  const window = page.window === "live" ? "5m" : page.window;
  const scope = page.scope === "cluster" ? "&scope=cluster" : "";
  try {
    const summary = await getJson(`/api/stats?window=${window}${scope}`);
    if (generation !== page.generation) return;
    page.summary = summary;
    page.statsError = null;
    document.body.dataset.stats = "ready";
  } catch (error) {
    if (generation !== page.generation || error.status === 401) return;
    page.summary = null;
    if (page.scope === "cluster") {
      // Redis unreachable (503) or no state.redis (400): said as the server says it
      page.statsError = `cluster statistics unavailable: ${error.message}`;
      document.body.dataset.stats = "error";
      renderTables();
      return page.summary;
    }
    // 404: the listener has no statistics (stats.enabled: false); anything else is shown as is
    page.statsError = error.status === 404 || error.status === 503
      ? "statistics are off (stats.enabled is false)"
      : `statistics unavailable: ${error.message}`;
    document.body.dataset.stats = error.status === 404 || error.status === 503 ? "off" : "error";
  }
  renderTables();
  return page.summary;
}

async function loadState() {
  const settle = (promise) => promise.catch((error) => ({ error }));
  const [overview, upstreams, certificates, alerts] = await Promise.all([
    settle(getJson("/api/overview")),
    settle(getJson("/api/upstreams")),
    settle(getJson("/api/certificates")),
    settle(getJson("/api/alerts")),
  ]);
  if (!overview.error) {
    page.overview = overview;
    $("#scopes").hidden = !overview.cluster;
    $("#version").textContent = `bastion ${overview.version}`;
    $("#started").textContent = `up since ${fmt.timestamp(overview.started)} · ${overview.workers} `
      + (overview.workers === 1 ? "worker" : "workers");
    updateTiles($("#tiles"), {
      upstreams: overview.upstreams.total ? overview.upstreams.healthy : null,
      upstreams_total: overview.upstreams.total,
      cert_days: overview.certificates.days_left,
      alerts_firing: overview.alerts.firing,
      ...(page.window === "live" && page.stopLive ? {} : { in_flight: overview.in_flight }),
    }, {
      cert_days: overview.certificates.earliest_expiry
        ? fmt.date(overview.certificates.earliest_expiry) : "no certificates",
      upstreams: overview.upstreams.total ? "" : "no upstream pools",
    });
  }
  showSection("#upstreams", upstreams, () => renderUpstreams($("#upstreams"), upstreams));
  if (!certificates.error) page.certificates = certificates;
  showSection("#certificates", certificates, () =>
    renderCertificates($("#certificates"), certificates, page.renewResults, renew));
  showSection("#alerts", alerts, () => renderAlerts($("#alerts"), alerts));
  const firing = alerts.error ? [] : alerts.alerts.filter((a) => a.state === "FIRING");
  const banner = $("#firing");
  banner.hidden = firing.length === 0;
  banner.textContent = firing.length
    ? `${firing.length} alert${firing.length === 1 ? "" : "s"} firing: ${firing.map((a) => a.name).join(", ")}`
    : "";
}

function showSection(selector, data, render) {
  if (!data.error) {
    render();
    return;
  }
  if (data.error.status === 401) return;
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = `unavailable: ${data.error.message}`;
  $(selector).replaceChildren(p);
}

async function renew(name, button) {
  button.disabled = true;
  page.renewResults.set(name, { ok: true, pending: true, text: "renewing…" });
  const output = button.parentElement.querySelector("output");
  output.textContent = "renewing…";
  output.className = "";
  try {
    const result = await postJson("/api/certificates/renew", { name });
    const until = result && result.not_after ? ` until ${fmt.date(result.not_after)}` : "";
    const said = result && (result.detail || result.result || result.status);
    page.renewResults.set(name, { ok: true, text: `renewed${until}${said && !until ? `: ${said}` : ""}` });
  } catch (error) {
    page.renewResults.set(name, { ok: false, text: `failed: ${error.message}` });
  }
  await loadState();
}

// ------------------------------------------------------------------ windows and timers
function clearTimers() {
  page.timers.forEach((id) => clearInterval(id));
  page.timers = [];
  if (page.stopLive) page.stopLive();
  page.stopLive = null;
}

function parseHash(hash) {
  // "#5m" (this instance) or "#cluster/5m"
  const [first, second] = hash.split("/");
  return first === "cluster" ? ["cluster", second || "5m"] : ["instance", first];
}

async function selectWindow(window, scope = page.scope) {
  if (scope === "cluster") {
    if (!CLUSTER_WINDOWS.includes(window)) window = "5m";
  } else if (!WINDOWS.includes(window)) {
    window = "live";
  }
  clearTimers();
  page.generation += 1;
  const generation = page.generation;
  page.window = window;
  page.scope = scope;
  page.summary = null;
  document.body.dataset.window = window;
  document.body.dataset.scope = scope;
  for (const button of document.querySelectorAll("button[data-scope]")) {
    button.setAttribute("aria-pressed", String(button.dataset.scope === scope));
  }
  $("#cluster").hidden = scope !== "cluster";
  document.body.dataset.stats = "loading";
  document.body.dataset.live = "off";
  for (const button of document.querySelectorAll("button[data-window]")) {
    button.setAttribute("aria-pressed", String(button.dataset.window === window));
    // the cluster view has no live stream and no windows beyond Redis' 48 hours
    button.disabled = scope === "cluster" && !CLUSTER_WINDOWS.includes(button.dataset.window);
  }
  const hash = scope === "cluster" ? `#cluster/${window}` : `#${window}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  $("#live-state").hidden = window !== "live";

  if (window === "live") {
    page.live = new LiveBuffer();
    // the stream first, so that no second falls between the seed and the first event
    page.stopLive = follow((event) => {
      if (generation !== page.generation) return;
      page.live.push(event);
      updateTiles($("#tiles"), { in_flight: event.in_flight ?? null });
      renderTraffic();
    }, (state) => {
      document.body.dataset.live = state;
      $("#live-state").textContent = state === "open" ? "● live" : "○ reconnecting…";
      $("#live-state").className = state === "open" ? "live-open" : "live-retrying";
    });
    const seed = await loadStats(generation);
    if (seed && generation === page.generation) page.live.seed(seed);
    if (generation === page.generation && document.body.dataset.stats === "off" && page.stopLive) {
      // no statistics, no stream: stop asking for it every two seconds
      page.stopLive();
      page.stopLive = null;
      document.body.dataset.live = "off";
      $("#live-state").textContent = "○ statistics are off";
    }
  } else {
    await loadStats(generation);
  }
  if (generation !== page.generation) return;
  renderTraffic();
  page.timers.push(setInterval(async () => {
    await loadStats(generation);
    if (generation === page.generation && page.window !== "live") renderTraffic();
  }, REFRESH[window]));
}

function start() {
  buildTiles($("#tiles"));
  for (const button of document.querySelectorAll("button[data-window]")) {
    button.addEventListener("click", () => selectWindow(button.dataset.window));
  }
  for (const button of document.querySelectorAll("button[data-scope]")) {
    button.addEventListener("click", () => selectWindow(page.window, button.dataset.scope));
  }
  $("#logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", () => {
    const [scope, wanted] = parseHash(location.hash.slice(1));
    if (wanted !== page.window || scope !== page.scope) selectWindow(wanted, scope);
  });
  // charts are drawn to the pixel width of their box: draw again when it changes
  let lastWidth = document.documentElement.clientWidth;
  window.addEventListener("resize", () => {
    if (document.documentElement.clientWidth !== lastWidth) {
      lastWidth = document.documentElement.clientWidth;
      renderTraffic();
    }
  });
  loadState();
  setInterval(loadState, STATE_REFRESH);
  const [scope, wanted] = parseHash(location.hash.slice(1));
  selectWindow(wanted || "live", scope);
}

start();
