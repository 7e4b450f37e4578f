// Time-series charts drawn as SVG by hand: stacked areas (requests by status class) and
// lines (latency percentiles, bytes, refusals), with axes and a hover read-out.
//
// No style attributes are written (a `default-src 'self'` policy forbids them): colours come
// from classes in dashboard.css, positions from SVG geometry attributes and, for the HTML
// read-out, from CSSOM properties, which the policy allows.

import { axisTime, timestamp } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const MARGIN = { top: 10, right: 12, bottom: 24, left: 58 };
const HEIGHT = 190;

function svg(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

/** Round steps (1, 2, 2.5, 5 × 10^n) covering 0..max in about `count` ticks. */
export function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function timeTicks(from, to, count) {
  const span = to - from;
  const steps = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
    43200, 86400, 172800, 604800];
  const step = steps.find((s) => span / s <= count) || 604800;
  // whole multiples of the step in local time, so that labels read 14:00, 14:15…
  const offset = new Date(from * 1000).getTimezoneOffset() * 60;
  const ticks = [];
  for (let t = Math.ceil((from - offset) / step) * step + offset; t <= to; t += step) ticks.push(t);
  return ticks;
}

/** Points with gaps longer than 1.5 steps closed by zeros (a stacked area), or broken by
 * nulls (a line), so that a quiet period is drawn as quiet, not as a ramp. */
function fillGaps(t, columns, step, filler) {
  if (!step || t.length < 2) return { t, columns };
  const outT = [];
  const outColumns = columns.map(() => []);
  for (let i = 0; i < t.length; i++) {
    if (i > 0 && t[i] - t[i - 1] > step * 1.5) {
      outT.push(t[i - 1] + step);
      outColumns.forEach((c) => c.push(filler));
      if (t[i] - step > t[i - 1] + step) {
        outT.push(t[i] - step);
        outColumns.forEach((c) => c.push(filler));
      }
    }
    outT.push(t[i]);
    columns.forEach((c, k) => outColumns[k].push(c[i]));
  }
  return { t: outT, columns: outColumns };
}

function nearestIndex(t, value) {
  let lo = 0;
  let hi = t.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (t[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  if (lo > 0 && value - t[lo - 1] < t[lo] - value) return lo - 1;
  return lo;
}

/**
 * Draw a chart into `figure` (its previous drawing replaced).
 * spec: {kind: "stacked" | "lines", t: [epoch], series: [{name, label, values}],
 *        domain: [from, to], step: seconds, format: value -> text, empty: text}
 */
export function drawChart(figure, spec) {
  figure.replaceChildren();
  const { t, series, format } = spec;
  const total = series.reduce(
    (sum, s) => sum + s.values.reduce((a, v) => a + (Number.isFinite(v) ? v : 0), 0), 0);
  figure.dataset.points = String(t.length);
  figure.dataset.total = String(total);
  const hasData = series.some((s) => s.values.some((v) => Number.isFinite(v) && v !== 0));
  if (!t.length || !hasData) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = spec.empty;
    figure.appendChild(empty);
    return;
  }
  const width = Math.max(figure.clientWidth, 280);
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  let [from, to] = spec.domain || [t[0], t[t.length - 1]];
  if (to <= from) to = from + (spec.step || 1);
  const x = (v) => MARGIN.left + ((v - from) / (to - from)) * plotW;

  const stacked = spec.kind === "stacked";
  const filled = fillGaps(t, series.map((s) => s.values), spec.step, stacked ? 0 : null);
  const tt = filled.t;
  const columns = filled.columns.map((c) => c.map((v) => (Number.isFinite(v) ? v : null)));
  // stacked: the top of each layer, cumulative
  const tops = [];
  if (stacked) {
    let below = tt.map(() => 0);
    for (const column of columns) {
      const top = column.map((v, i) => below[i] + (v || 0));
      tops.push({ below, top });
      below = top;
    }
  }
  const peak = stacked
    ? Math.max(...tops[tops.length - 1].top)
    : Math.max(...columns.flat().filter((v) => v !== null));
  const yTicks = niceTicks(peak);
  const yMax = yTicks[yTicks.length - 1];
  const y = (v) => MARGIN.top + plotH - (v / yMax) * plotH;

  const root = svg("svg", {
    width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img",
    "aria-label": spec.title || "",
  }, figure);
  const axes = svg("g", { class: "axis" }, root);
  for (const v of yTicks) {
    svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v),
      class: "gridline" }, axes);
    const label = svg("text", { x: MARGIN.left - 6, y: y(v) + 4, "text-anchor": "end" }, axes);
    label.textContent = format(v);
  }
  for (const v of timeTicks(from, to, Math.max(2, Math.floor(plotW / 90)))) {
    svg("line", { x1: x(v), x2: x(v), y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 4,
      class: "tick" }, axes);
    const label = svg("text", { x: x(v), y: HEIGHT - 6, "text-anchor": "middle" }, axes);
    label.textContent = axisTime(v, to - from);
  }
  svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: MARGIN.top + plotH,
    y2: MARGIN.top + plotH, class: "baseline" }, axes);

  const clipId = `clip-${figure.id || Math.random().toString(36).slice(2)}`;
  const clip = svg("clipPath", { id: clipId }, svg("defs", {}, root));
  svg("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH }, clip);
  const plot = svg("g", { "clip-path": `url(#${clipId})` }, root);
  series.forEach((s, k) => {
    let d = "";
    if (stacked) {
      const { below, top } = tops[k];
      const upper = tt.map((v, i) => `${x(v).toFixed(1)},${y(top[i]).toFixed(1)}`);
      const lower = tt.map((v, i) => `${x(v).toFixed(1)},${y(below[i]).toFixed(1)}`).reverse();
      if (tt.length === 1) {
        // one point: a bar a step wide, not an invisible line
        const half = Math.max(2, (x(tt[0] + (spec.step || 1)) - x(tt[0])) / 2);
        const [x0, x1] = [x(tt[0]) - half, x(tt[0]) + half];
        d = `M${x0},${y(top[0])}L${x1},${y(top[0])}L${x1},${y(below[0])}L${x0},${y(below[0])}Z`;
      } else {
        d = `M${upper.join("L")}L${lower.join("L")}Z`;
      }
    } else {
      let pen = "M";
      columns[k].forEach((v, i) => {
        if (v === null) {
          pen = "M";
          return;
        }
        d += `${pen}${x(tt[i]).toFixed(1)},${y(v).toFixed(1)}`;
        pen = "L";
      });
    }
    const path = svg("path", { d, class: `series ${stacked ? "area" : "line"} s-${s.name}` }, plot);
    path.dataset.series = s.name;
    path.dataset.sum = String(s.values.reduce((a, v) => a + (Number.isFinite(v) ? v : 0), 0));
    if (!stacked && tt.length === 1 && columns[k][0] !== null) {
      svg("circle", { cx: x(tt[0]), cy: y(columns[k][0]), r: 3, class: `dot s-${s.name}` }, plot);
    }
  });

  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch s-${s.name}`;
    item.append(swatch, document.createTextNode(s.label));
    legend.appendChild(item);
  }
  figure.appendChild(legend);

  attachHover(figure, root, { t, series, format, x, plotH, width, from, to });
}

function attachHover(figure, root, chart) {
  const { t, series, format, x, plotH } = chart;
  const guide = svg("line", { y1: MARGIN.top, y2: MARGIN.top + plotH, class: "guide" }, root);
  guide.setAttribute("visibility", "hidden");
  const readout = document.createElement("div");
  readout.className = "readout";
  readout.hidden = true;
  figure.appendChild(readout);
  const overlay = svg("rect", { x: MARGIN.left, y: MARGIN.top, width: chart.width - MARGIN.left
    - MARGIN.right, height: plotH, class: "overlay" }, root);
  const show = (clientX) => {
    const box = root.getBoundingClientRect();
    const px = clientX - box.left;
    const value = chart.from + ((px - MARGIN.left) / (chart.width - MARGIN.left - MARGIN.right))
      * (chart.to - chart.from);
    const i = nearestIndex(t, value);
    guide.setAttribute("x1", x(t[i]));
    guide.setAttribute("x2", x(t[i]));
    guide.setAttribute("visibility", "visible");
    const lines = [timestamp(t[i])];
    for (const s of series) lines.push(`${s.label}: ${format(s.values[i])}`);
    readout.replaceChildren(...lines.map((text, k) => {
      const line = document.createElement(k === 0 ? "strong" : "span");
      line.textContent = text;
      return line;
    }));
    readout.hidden = false;
    const left = Math.min(x(t[i]) + 12, chart.width - readout.offsetWidth - 4);
    readout.style.left = `${Math.max(0, left)}px`;
    readout.dataset.index = String(i);
  };
  overlay.addEventListener("pointermove", (event) => show(event.clientX));
  overlay.addEventListener("pointerleave", () => {
    guide.setAttribute("visibility", "hidden");
    readout.hidden = true;
  });
}
