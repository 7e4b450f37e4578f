// The live view's last five minutes, kept in the page: seeded from /api/stats?window=5m
// (one sample per step of the summary, a few seconds) and extended by each /api/live event
// (one second each). The charts plot per-second rates, so that both kinds of sample read
// alike; the tiles add up the counts themselves.

export const LIVE_SPAN = 300;

function sampleFromSeries(series, i, span) {
  const status = {};
  for (const [cls, values] of Object.entries(series.status || {})) status[cls] = values[i] || 0;
  const refusals = {};
  for (const [code, values] of Object.entries(series.refusals || {})) refusals[code] = values[i] || 0;
  return {
    t: series.t[i],
    span,
    requests: series.requests[i] || 0,
    status,
    p50: series.p50 ? series.p50[i] : null,
    p95: series.p95 ? series.p95[i] : null,
    p99: series.p99 ? series.p99[i] : null,
    bytes_in: series.bytes_in ? series.bytes_in[i] : 0,
    bytes_out: series.bytes_out ? series.bytes_out[i] : 0,
    refusals,
    cache_hits: null,
    cache_lookups: null,
  };
}

function sampleFromEvent(event) {
  return {
    t: event.time,
    span: 1,
    requests: event.requests || 0,
    status: event.status || {},
    p50: event.p50 ?? null,
    p95: event.p95 ?? null,
    p99: event.p99 ?? null,
    bytes_in: event.bytes_in || 0,
    bytes_out: event.bytes_out || 0,
    // not in every version of the live event: shown as a gap rather than as zero
    refusals: event.refusals || null,
    cache_hits: event.cache_hits ?? null,
    cache_lookups: event.cache_lookups ?? null,
  };
}

export class LiveBuffer {
  constructor() {
    this.samples = [];
    this.seededUntil = -Infinity;
    this.last = null; // the newest event as received (rps, in_flight, upstream figures)
  }

  seed(summary) {
    const series = summary.series || { t: [] };
    const step = summary.step || 1;
    // the summary counts the seconds before `until`; the stream's events from then on
    this.seededUntil = summary.until;
    const seeded = series.t
      .map((t, i) => sampleFromSeries(series, i, Math.max(1, Math.min(step, summary.until - t))))
      .filter((sample) => sample.t < summary.until);
    this.samples = [...seeded, ...this.samples.filter((s) => s.t >= summary.until)];
    this.trim();
  }

  push(event) {
    if (!Number.isFinite(event.time)) return;
    this.last = event;
    if (event.time < this.seededUntil) return; // already counted in the seed
    const sample = sampleFromEvent(event);
    const at = this.samples.findIndex((s) => s.t >= sample.t);
    if (at === -1) this.samples.push(sample);
    else if (this.samples[at].t === sample.t) this.samples[at] = sample;
    else this.samples.splice(at, 0, sample);
    this.trim();
  }

  now() {
    if (this.last) return this.last.time;
    return this.samples.length ? this.samples[this.samples.length - 1].t : Math.floor(Date.now() / 1000);
  }

  trim() {
    const oldest = this.now() - LIVE_SPAN;
    this.samples = this.samples.filter((s) => s.t > oldest);
  }

  /** The buffer in the shape of a summary's "series", as per-second rates, for the charts. */
  series() {
    const s = this.samples;
    const perSecond = (x, value) => (value === null ? null : value / x.span);
    const classes = new Set();
    for (const sample of s) Object.keys(sample.status).forEach((c) => classes.add(c));
    const status = {};
    for (const cls of classes) status[cls] = s.map((x) => perSecond(x, x.status[cls] || 0));
    const refusals = {};
    for (const code of ["401", "403", "429"]) {
      refusals[code] = s.map((x) => (x.refusals ? perSecond(x, x.refusals[code] || 0) : null));
    }
    return {
      t: s.map((x) => x.t),
      requests: s.map((x) => perSecond(x, x.requests)),
      status,
      p50: s.map((x) => x.p50),
      p95: s.map((x) => x.p95),
      p99: s.map((x) => x.p99),
      bytes_in: s.map((x) => perSecond(x, x.bytes_in)),
      bytes_out: s.map((x) => perSecond(x, x.bytes_out)),
      refusals,
    };
  }

  /** The longest span of a sample: the chart's step, below which a gap is not quiet. */
  step() {
    return this.samples.reduce((a, x) => Math.max(a, x.span), 1);
  }

  /** The tiles' figures over the buffer; latency from the newest second with requests. */
  figures(seedTotals) {
    const s = this.samples;
    const requests = s.reduce((a, x) => a + x.requests, 0);
    const byClass = (cls) => s.reduce((a, x) => a + (x.status[cls] || 0), 0);
    const recent = [...s].reverse().find((x) => x.requests > 0 && x.p95 !== null);
    const cached = s.filter((x) => x.cache_lookups !== null);
    const hits = cached.reduce((a, x) => a + x.cache_hits, 0);
    const lookups = cached.reduce((a, x) => a + x.cache_lookups, 0);
    const seedCache = seedTotals ? seedTotals.cache : null;
    return {
      requests,
      rps: this.last ? this.last.rps : seedTotals ? seedTotals.rps : null,
      rate_4xx: requests ? byClass("4xx") / requests : null,
      rate_5xx: requests ? byClass("5xx") / requests : null,
      p50: recent ? recent.p50 : null,
      p95: recent ? recent.p95 : null,
      p99: recent ? recent.p99 : null,
      upstream_share: this.last && this.last.upstream_share !== undefined
        ? this.last.upstream_share : seedTotals ? seedTotals.upstream_share : null,
      cache_ratio: lookups ? hits / lookups : seedCache ? seedCache.ratio : null,
      in_flight: this.last ? this.last.in_flight ?? null : null,
    };
  }
}
