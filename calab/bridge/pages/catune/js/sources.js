// Where the dashboard gets its data.  Both sources answer the same three questions:
// overview (variance ranking), minimap (min/max envelope of one whole trace) and solve
// (visible window of some cells, decimated).  BridgeSource asks calab's server, whose
// solves run on calab's backend; LocalSource serves a file opened in the page with a
// small in-page FISTA (a preview: no band-pass filter, scalar baseline).

import { ar2 } from "./kernel.js";

const COMPUTE = "/calab/v1/catune";

export class BridgeSource {
  constructor(client, meta) {
    this.client = client;
    this.numCells = meta.num_cells;
    this.numTimepoints = meta.num_timepoints;
    this.fs = meta.sampling_rate_hz;
    this.filterAvailable = true;
  }

  async overview() {
    return this.client.getJSON(`${COMPUTE}/overview`);
  }

  async minimap(cell, bins) {
    return this.client.getJSON(`${COMPUTE}/minimap?cell=${cell}&bins=${bins}`);
  }

  async solve(request, signal) {
    return this.client.postJSON(`${COMPUTE}/solve`, request, { signal });
  }

  async spectrum(cells) {
    return this.client.getJSON(`${COMPUTE}/spectrum?cells=${cells.join(",")}`);
  }
}

function minmax(values, points) {
  const n = values.length;
  if (n <= points) return { index: values.map((_, i) => i), values: Array.from(values) };
  const bins = Math.max(1, Math.floor(points / 2));
  const size = Math.ceil(n / bins);
  const index = [];
  const out = [];
  for (let s = 0; s < n; s += size) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = s; i < Math.min(n, s + size); i++) {
      lo = Math.min(lo, values[i]);
      hi = Math.max(hi, values[i]);
    }
    index.push(s, s + size / 2);
    out.push(lo, hi);
  }
  return { index, values: out };
}

export class LocalSource {
  constructor(data, numCells, numTimepoints, fs) {
    this.data = data;
    this.numCells = numCells;
    this.numTimepoints = numTimepoints;
    this.fs = fs;
    this.filterAvailable = false;
  }

  row(cell, a = 0, b = this.numTimepoints) {
    const base = cell * this.numTimepoints;
    return this.data.subarray(base + a, base + b);
  }

  async overview() {
    const variance = [];
    for (let c = 0; c < this.numCells; c++) {
      const r = this.row(c);
      let m = 0;
      for (const v of r) m += v;
      m /= r.length;
      let s = 0;
      for (const v of r) s += (v - m) * (v - m);
      variance.push(s / r.length);
    }
    const ranking = variance.map((_, i) => i).sort((a, b) => variance[b] - variance[a]);
    return { num_cells: this.numCells, num_timepoints: this.numTimepoints, ranking };
  }

  async minimap(cell, bins) {
    const { index, values } = minmax(this.row(cell), 2 * bins);
    return { cell, index, values };
  }

  async solve(req) {
    const T = this.numTimepoints;
    const pad = Math.min(Math.max(req.stop - req.start, Math.ceil(5 * req.tau_decay * this.fs)),
      Math.ceil(300 * this.fs));
    const a = Math.max(0, req.start - pad);
    const b = Math.min(T, req.stop + pad);
    const { g1, g2 } = ar2(req.tau_rise, req.tau_decay, this.fs);
    const cells = req.cells.map((cell) => {
      const y = this.row(cell, a, b);
      const { s, fit } = fista(y, g1, g2, req.lambda, Math.min(req.max_iters, 500));
      const vis = (arr) => Array.from(arr.subarray(req.start - a, req.stop - a));
      const raw = vis(y);
      const fitV = vis(fit);
      const deconv = vis(s);
      const resid = raw.map((v, i) => v - fitV[i]);
      const mean = raw.reduce((p, v) => p + v, 0) / raw.length;
      const std = Math.sqrt(raw.reduce((p, v) => p + (v - mean) ** 2, 0) / raw.length);
      const ssRes = resid.reduce((p, v) => p + v * v, 0);
      const ssTot = raw.reduce((p, v) => p + (v - mean) ** 2, 0);
      const dec = (arr) => minmax(arr, req.points).values;
      return {
        cell, raw: dec(raw), filtered: null, fit: dec(fitV), deconv: dec(deconv), resid: dec(resid),
        raw_mean: mean, raw_std: std, snr: snr(y), r2: ssTot > 0 ? 1 - ssRes / ssTot : 0, sparsity: deconv.filter((v) => Math.abs(v) < 1e-6).length / deconv.length,
        iterations: Math.min(req.max_iters, 500), converged: true,
      };
    });
    const index = minmax(new Array(req.stop - req.start).fill(0), req.points).index.map((i) => i + req.start);
    return { start: req.start, stop: req.stop, index, cells, request_id: req.request_id };
  }
}

function snr(y) {
  const sorted = Float64Array.from(y).sort();
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))];
  const low = sorted.subarray(0, Math.max(1, Math.floor(0.25 * sorted.length)));
  const m = low.reduce((p, v) => p + v, 0) / low.length;
  const sd = Math.sqrt(low.reduce((p, v) => p + (v - m) ** 2, 0) / low.length);
  return sd > 0 ? (q(0.95) - m) / sd : 0;
}

// Non-negative FISTA with the AR(2) kernel as a recursion (forward) and its reverse
// (adjoint); the scalar baseline is re-fitted exactly each iteration.
function fista(y, g1, g2, lam, iters) {
  const n = y.length;
  const gain = 1 / (1 - g1 - g2);
  const L = gain * gain;
  const forward = (s, out) => {
    for (let t = 0; t < n; t++) out[t] = s[t] + (t > 0 ? g1 * out[t - 1] : 0) + (t > 1 ? g2 * out[t - 2] : 0);
  };
  const adjoint = (r, out) => {
    for (let t = n - 1; t >= 0; t--) out[t] = r[t] + (t < n - 1 ? g1 * out[t + 1] : 0) + (t < n - 2 ? g2 * out[t + 2] : 0);
  };
  let x = new Float64Array(n);
  let z = new Float64Array(n);
  const c = new Float64Array(n);
  const g = new Float64Array(n);
  const r = new Float64Array(n);
  let tk = 1;
  let base = 0;
  for (let k = 0; k < iters; k++) {
    forward(z, c);
    let m = 0;
    for (let t = 0; t < n; t++) m += y[t] - c[t];
    base = m / n;
    for (let t = 0; t < n; t++) r[t] = c[t] + base - y[t];
    adjoint(r, g);
    const next = new Float64Array(n);
    for (let t = 0; t < n; t++) next[t] = Math.max(0, z[t] - (g[t] + lam * gain) / L);
    const tn = (1 + Math.sqrt(1 + 4 * tk * tk)) / 2;
    for (let t = 0; t < n; t++) z[t] = next[t] + ((tk - 1) / tn) * (next[t] - x[t]);
    x = next;
    tk = tn;
  }
  const fit = new Float64Array(n);
  forward(x, fit);
  for (let t = 0; t < n; t++) fit[t] += base;
  return { s: x, fit };
}
