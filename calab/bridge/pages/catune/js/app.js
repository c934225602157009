// calab's built-in CaTune page (spec bridge-and-apps.md §1.11, §5.1).
//
// Bridge sessions read only what is on screen from the server (a variance ranking, one
// min/max minimap per card, and solves of the visible windows), so a 1,000 × 100,000
// recording loads as fast as a small one.  Every parameter change re-solves the visible
// cards on the server's backend: a quick 100-iteration pass first (badge "Iter 100"),
// then the full solve.

import { BridgeClient, getBridge } from "../../common/bridge.js";
import { ar2, cutoffs, kernelCurve, peakTime, fwhm, tausFromShape } from "./kernel.js";
import { parseNpy, parseNpz } from "./npy.js";
import { BridgeSource, LocalSource } from "./sources.js";

const $ = (id) => document.getElementById(id);
const uPlot = window.uPlot;

const COLORS = { raw: "#0072b2", filtered: "#56b4e9", fit: "#e69f00", deconv: "#009e73", resid: "#d55e00" };
const SERIES = ["raw", "filtered", "fit", "deconv", "resid"];
const LABELS = { raw: "Raw", filtered: "Filtered", fit: "Fit", deconv: "Deconv", resid: "Resid" };
const FALLBACK_TAUS = { tauRise: 0.1, tauDecay: 0.6 };
const QUICK_ITERS = 100;
const FULL_ITERS = 2000;
const ZOOM_S = 20;
const MINIMAP_ROW_S = 1200;
let chartHeight = 240; // card height 280 px minus header, minimap and footer

const state = {
  version: "dev",
  client: null,
  source: null,
  resultsPath: "/api/v1/params",
  fileName: null,
  peakMs: 8,
  fwhmMs: 2080,
  lambda: 0,
  lambdaMax: 10,
  filter: false,
  // The learned taus themselves while the sliders stay where the page opened: the
  // peak/FWHM sliders map back to taus through a lookup table, which would round them.
  exactTaus: null,
  opening: null,
  mode: "top",
  count: 5,
  cols: 2,
  manual: [],
  ranking: [],
  randomOrder: [],
  visible: { raw: true, filtered: true, fit: true, deconv: true, resid: true },
  cards: new Map(),
  active: null,
  exported: false,
  pinned: null,
  solveTimer: null,
  // instrumentation read by calab's tests and benchmarks
  stats: { paramChangeAt: 0, lastSettleMs: null, solves: 0, cacheHits: 0, errors: [] },
};
window.__catune = state;

// ------------------------------------------------------------------ parameters
function taus() {
  if (state.exactTaus) return state.exactTaus;
  return tausFromShape(state.peakMs / 1000, state.fwhmMs / 1000) ?? FALLBACK_TAUS;
}

function formatLambda(v) {
  return v.toExponential(2);
}

function syncParamInputs() {
  const peakMax = Math.min(500, Math.floor(state.fwhmMs / 2));
  $("peak-range").max = peakMax;
  $("peak-box").max = peakMax;
  $("peak-range").value = state.peakMs;
  $("peak-box").value = state.peakMs.toFixed(1);
  $("fwhm-range").value = state.fwhmMs;
  $("fwhm-box").value = state.fwhmMs.toFixed(1);
  for (const id of ["lambda-range", "lambda-box"]) {
    $(id).max = state.lambdaMax;
    $(id).step = state.lambdaMax / 1000;
  }
  $("lambda-range").value = state.lambda;
  $("lambda-box").value = state.lambda.toPrecision(3);
  $("filter-toggle").checked = state.filter;
  const { tauRise, tauDecay } = taus();
  $("taus").textContent = `τ rise ${(tauRise * 1000).toFixed(1)} ms · τ decay ${(tauDecay * 1000).toFixed(0)} ms`;
  $("summary").textContent =
    `peak: ${state.peakMs.toFixed(1)} ms, FWHM: ${state.fwhmMs.toFixed(1)} ms, lambda: ${formatLambda(state.lambda)}`;
  $("legend").querySelector('[data-series="filtered"]')?.toggleAttribute("hidden", !state.filter);
}

function setParam(name, value) {
  if (name !== "filter" && !Number.isFinite(value)) return;
  const before = [state.peakMs, state.fwhmMs, state.lambda, state.filter].join();
  const shapeBefore = [state.peakMs, state.fwhmMs].join();
  if (name === "peak") state.peakMs = clamp(value, 5, Math.min(500, state.fwhmMs / 2));
  if (name === "fwhm") {
    state.fwhmMs = clamp(value, 20, 3000);
    if (state.peakMs > state.fwhmMs / 2) state.peakMs = Math.max(5, state.fwhmMs / 2);
  }
  if (name === "lambda") state.lambda = clamp(value, 0, state.lambdaMax);
  if (name === "filter") state.filter = Boolean(value);
  if ([state.peakMs, state.fwhmMs].join() !== shapeBefore) state.exactTaus = null;
  syncParamInputs();
  // a box's "change" on blur repeats the value it already set: nothing to re-solve
  if ([state.peakMs, state.fwhmMs, state.lambda, state.filter].join() === before) return;
  drawKernel();
  spectrumPlot?.redraw(false);
  if (sidebarOpen("spectrum")) renderSpectrumStats();
  parametersChanged();
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

function wireParams() {
  for (const [name, range, box] of [["peak", "peak-range", "peak-box"], ["fwhm", "fwhm-range", "fwhm-box"],
    ["lambda", "lambda-range", "lambda-box"]]) {
    $(range).addEventListener("input", (e) => setParam(name, Number(e.target.value)));
    // typed values are in the units shown (ms, λ), unlike the reference's boxes
    $(box).addEventListener("change", (e) => setParam(name, Number(e.target.value)));
  }
  $("filter-toggle").addEventListener("change", (e) => setParam("filter", e.target.checked));
}

// ------------------------------------------------------------------ kernel chart
let kernelPlot = null;

function kernelAnnotations(u) {
  const { tauRise, tauDecay } = taus();
  const ctx = u.ctx;
  const tp = peakTime(tauRise, tauDecay);
  const width = fwhm(tauRise, tauDecay);
  const x = (v) => u.valToPos(v, "x", true);
  const y = (v) => u.valToPos(v, "y", true);
  ctx.save();
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
  ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
  ctx.strokeStyle = "#e69f00";
  ctx.lineWidth = devicePixelRatio;
  ctx.beginPath();
  ctx.moveTo(x(tp), y(0));
  ctx.lineTo(x(tp), y(1));
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = "#b77900";
  ctx.fillText(`Peak: ${(tp * 1000).toFixed(0)}ms`, x(tp) + 4 * devicePixelRatio, y(0.93));
  // half-height bracket from the analytic crossings
  let t1 = 0;
  let lo = 0;
  let hi = tp;
  const h = (t) => Math.exp(-t / tauDecay) - Math.exp(-t / tauRise);
  const half = 0.5 * h(tp);
  for (let i = 0; i < 60; i++) {
    t1 = 0.5 * (lo + hi);
    if (h(t1) < half) lo = t1; else hi = t1;
  }
  ctx.strokeStyle = "#7b3fa0";
  ctx.beginPath();
  ctx.moveTo(x(t1), y(0.5));
  ctx.lineTo(x(t1 + width), y(0.5));
  ctx.moveTo(x(t1), y(0.45));
  ctx.lineTo(x(t1), y(0.55));
  ctx.moveTo(x(t1 + width), y(0.45));
  ctx.lineTo(x(t1 + width), y(0.55));
  ctx.stroke();
  ctx.fillStyle = "#7b3fa0";
  ctx.fillText(`FWHM: ${(width * 1000).toFixed(0)}ms`, x(t1) + 6 * devicePixelRatio, y(0.5) - 5 * devicePixelRatio);
  ctx.restore();
}

function drawKernel() {
  const { tauRise, tauDecay } = taus();
  const { t, h } = kernelCurve(tauRise, tauDecay, Math.max(state.source?.fs ?? 30, 200));
  if (kernelPlot) {
    kernelPlot.setData([t, h]);
    return;
  }
  kernelPlot = new uPlot({
    width: 262, height: 180, legend: { show: false }, cursor: { show: false },
    scales: { x: { time: false }, y: { range: [0, 1.05] } },
    axes: [{ label: "Time (s)", size: 34, labelSize: 14 }, { size: 30, ticks: { show: false } }],
    series: [{}, { stroke: "#7b3fa0", fill: "rgba(123,63,160,0.12)", width: 2, points: { show: false } }],
    hooks: { draw: [kernelAnnotations] },
  }, [t, h], $("kernel-chart"));
}

// ------------------------------------------------------------------ cell selection
function selectedCells() {
  const n = state.source.numCells;
  if (state.mode === "manual") return state.manual.filter((c) => c >= 0 && c < n);
  const count = clamp(state.count, 1, Math.min(20, n));
  if (state.mode === "random") return state.randomOrder.slice(0, count);
  return state.ranking.slice(0, count);
}

function reshuffle() {
  const n = state.source.numCells;
  const picks = new Set();
  const want = Math.min(20, n);
  while (picks.size < want) picks.add(Math.floor(Math.random() * n));
  state.randomOrder = [...picks];
}

function wireSelection() {
  const n = state.source.numCells;
  $("count").max = Math.min(20, n);
  state.count = Math.min(5, n);
  $("count").value = state.count;
  $("mode").addEventListener("change", (e) => {
    state.mode = e.target.value;
    if (state.mode === "random" && state.randomOrder.length === 0) reshuffle();
    $("reshuffle").hidden = state.mode !== "random";
    $("manual").hidden = state.mode !== "manual";
    $("count-label").hidden = state.mode === "manual";
    refreshCards();
  });
  $("count").addEventListener("change", (e) => {
    state.count = clamp(Math.round(Number(e.target.value)) || 1, 1, Math.min(20, n));
    e.target.value = state.count;
    refreshCards();
  });
  $("reshuffle").addEventListener("click", () => { reshuffle(); refreshCards(); });
  const applyManual = () => {
    const cells = $("manual").value.split(/[\s,]+/).map(Number)
      .filter((v) => Number.isInteger(v) && v >= 1 && v <= n).map((v) => v - 1);
    state.manual = [...new Set(cells)];
    $("manual").value = state.manual.map((c) => c + 1).join(", ");
    refreshCards();
  };
  $("manual").addEventListener("change", applyManual);
  $("manual").addEventListener("keydown", (e) => { if (e.key === "Enter") applyManual(); });
  const setCols = (c) => {
    state.cols = clamp(c, 1, 6);
    $("cols").textContent = state.cols;
    $("cards").style.setProperty("--cols", state.cols);
    for (const card of state.cards.values()) card.resize();
  };
  $("card-height").addEventListener("change", (e) => {
    const height = clamp(Math.round(Number(e.target.value)) || 280, 160, 600);
    e.target.value = height;
    chartHeight = height - 40;
    for (const card of state.cards.values()) card.resize();
  });
  $("cols-minus").addEventListener("click", () => setCols(state.cols - 1));
  $("cols-plus").addEventListener("click", () => setCols(state.cols + 1));
  setCols(2);
  const legend = $("legend");
  for (const name of SERIES) {
    const chip = document.createElement("button");
    chip.className = "chip";
    chip.dataset.series = name;
    chip.innerHTML = `<span class="swatch" style="background:${COLORS[name]}"></span>${LABELS[name]}`;
    chip.addEventListener("click", () => {
      state.visible[name] = !state.visible[name];
      chip.classList.toggle("off", !state.visible[name]);
      for (const card of state.cards.values()) card.applyVisibility();
    });
    legend.append(chip);
  }
}

// ------------------------------------------------------------------ cell cards
class Card {
  constructor(cell) {
    this.cell = cell;
    this.token = 0;
    this.result = null;
    this.plot = null;
    this.minimapData = null;
    const T = state.source.numTimepoints;
    const fs = state.source.fs;
    const width = Math.min(T, Math.round(ZOOM_S * fs));
    const transient = Math.ceil(2 * taus().tauDecay * fs);
    const start = clamp(transient, 0, T - width);
    this.window = [start, start + width];
    this.el = document.createElement("div");
    this.el.className = "card stale";
    this.el.dataset.cell = cell;
    this.el.innerHTML = `<div class="card-head"><span class="dot"></span><span>Cell ${cell + 1}</span>
      <span class="badge stale">Stale</span></div>
      <canvas class="minimap"></canvas><div class="chart-wrap"><div class="chart"></div></div>
      <div class="card-foot"></div>`;
    this.badge = this.el.querySelector(".badge");
    this.dot = this.el.querySelector(".dot");
    this.canvas = this.el.querySelector("canvas");
    this.chartEl = this.el.querySelector(".chart");
    this.foot = this.el.querySelector(".card-foot");
    this.el.addEventListener("click", () => setActive(this));
    this.el.addEventListener("mouseenter", () => { state.hovered = this; });
    this.wireMinimap();
  }

  get chartWidth() {
    return Math.max(200, this.el.clientWidth - 16);
  }

  setBadge(kind, text) {
    this.badge.className = `badge ${kind}`;
    this.badge.textContent = text;
    this.el.classList.toggle("stale", kind === "stale");
    this.el.classList.toggle("error", kind === "error");
  }

  markStale() {
    this.token += 1;
    this.solved = null;
    this.setBadge("stale", "Stale");
  }

  async loadMinimap() {
    const rows = Math.max(1, Math.ceil(state.source.numTimepoints / state.source.fs / MINIMAP_ROW_S));
    const bins = Math.min(4000, this.chartWidth * rows);
    try {
      this.minimapData = await state.source.minimap(this.cell, bins);
      this.drawMinimap();
    } catch (err) {
      reportError(err);
    }
  }

  drawMinimap() {
    const fs = state.source.fs;
    const T = state.source.numTimepoints;
    const rowFrames = Math.round(MINIMAP_ROW_S * fs);
    const rows = Math.max(1, Math.ceil(T / rowFrames));
    const width = this.chartWidth;
    const dpr = devicePixelRatio;
    const perRow = rows === 1 ? T : rowFrames;
    this.canvas.style.height = `${24 * rows}px`;
    this.canvas.width = width * dpr;
    this.canvas.height = 24 * rows * dpr;
    const ctx = this.canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.fillStyle = "#f3f4f6";
    ctx.fillRect(0, 0, width, 24 * rows);
    const data = this.minimapData;
    if (data) {
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of data.values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      const span = hi - lo || 1;
      ctx.strokeStyle = COLORS.raw;
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let i = 0; i + 1 < data.values.length; i += 2) {
        const frame = data.index[i];
        const row = Math.floor(frame / perRow);
        const x = ((frame - row * perRow) / perRow) * width;
        const y = (v) => row * 24 + 22 - ((v - lo) / span) * 20;
        ctx.moveTo(x, y(data.values[i]));
        ctx.lineTo(x + 0.5, y(data.values[i + 1]));
      }
      ctx.stroke();
    }
    const [a, b] = this.window;
    const row = Math.floor(a / perRow);
    const x0 = ((a - row * perRow) / perRow) * width;
    const x1 = Math.max(x0 + 3, ((b - row * perRow) / perRow) * width);
    ctx.fillStyle = "rgba(37,99,235,0.18)";
    ctx.strokeStyle = "#2563eb";
    ctx.fillRect(x0, row * 24, x1 - x0, 24);
    ctx.strokeRect(x0 + 0.5, row * 24 + 0.5, x1 - x0 - 1, 23);
  }

  wireMinimap() {
    const move = (e) => {
      const rect = this.canvas.getBoundingClientRect();
      const T = state.source.numTimepoints;
      const rowFrames = Math.round(MINIMAP_ROW_S * state.source.fs);
      const rows = Math.max(1, Math.ceil(T / rowFrames));
      const perRow = rows === 1 ? T : rowFrames;
      const row = clamp(Math.floor((e.clientY - rect.top) / 24), 0, rows - 1);
      const frame = row * perRow + ((e.clientX - rect.left) / rect.width) * perRow;
      const w = this.window[1] - this.window[0];
      const start = Math.round(clamp(frame - w / 2, 0, T - w));
      this.window = [start, start + w];
      this.drawMinimap();
      if (this.plot) this.plot.setScale("x", { min: start / state.source.fs, max: (start + w) / state.source.fs });
    };
    let dragging = false;
    this.canvas.addEventListener("pointerdown", (e) => {
      dragging = true;
      this.canvas.setPointerCapture(e.pointerId);
      move(e);
    });
    this.canvas.addEventListener("pointermove", (e) => { if (dragging) move(e); });
    this.canvas.addEventListener("pointerup", () => {
      dragging = false;
      this.windowChanged();
    });
  }

  windowChanged() {
    // Pans and zooms inside the solved (padded) range are drawn from the last solve.
    const solved = this.solved;
    const [w0, w1] = this.window;
    if (solved && this.result && this.badge.classList.contains("done") && w0 >= solved.range[0]
        && w1 <= solved.range[1] && (!solved.decimated || w1 - w0 >= 0.9 * solved.width)) {
      state.stats.cacheHits += 1;
      this.show(this.result, true);
      return;
    }
    state.stats.paramChangeAt = performance.now();
    this.markStale();
    scheduleSolve(150);
  }

  seriesData(result) {
    const fs = state.source.fs;
    const x = result.index.map((i) => i / fs);
    const r = result.cell;
    const std = r.raw_std || 1;
    const z = (v) => (v - r.raw_mean) / std;
    const transientEnd = 2 * taus().tauDecay * fs;
    const raw = r.raw.map(z);
    const filtered = r.filtered ? r.filtered.map((v) => v / std) : raw.map(() => null);
    const fitScale = r.filtered ? (v) => v / std : z;
    const fit = r.fit.map((v, i) => (result.index[i] < transientEnd ? null : fitScale(v)));
    let top = -Infinity;
    let bottom = Infinity;
    const [w0, w1] = this.window;
    for (const arr of [raw, r.filtered ? filtered : [], fit]) {
      arr.forEach((v, i) => {
        if (v === null || result.index[i] < w0 || result.index[i] > w1) return;
        top = Math.max(top, v);
        bottom = Math.min(bottom, v);
      });
    }
    if (!Number.isFinite(top)) { top = 1; bottom = -1; }
    const R = Math.max(1, top - bottom);
    const dTop = bottom - 0.03 * R;
    const dBottom = dTop - 0.35 * R;
    const rTop = dBottom - 0.03 * R;
    const rBottom = rTop - 0.25 * R;
    const dMax = Math.max(...r.deconv, 1e-12);
    const deconv = r.deconv.map((v) => dBottom + (Math.max(0, v) / dMax) * (dTop - dBottom));
    const rAbs = Math.max(...r.resid.map((v) => Math.abs(fitScale(v) - (r.filtered ? 0 : fitScale(0)))), 1e-12);
    const rMid = 0.5 * (rTop + rBottom);
    const resid = r.resid.map((v) => rMid + ((v / std) / (rAbs || 1)) * 0.5 * (rTop - rBottom));
    const pinned = state.pinned && this.pinnedFor === this.windowKey && this.pinnedSeries?.fit.length === x.length
      ? this.pinnedSeries : { fit: x.map(() => null), deconv: x.map(() => null) };
    this.lastSeries = { fit, deconv };
    this.yRange = [rBottom - 0.02 * R, top + 0.05 * R];
    return [x, raw, filtered, fit, deconv, resid, pinned.fit, pinned.deconv];
  }

  get windowKey() {
    return `${this.window[0]}:${this.window[1]}`;
  }

  show(result, final) {
    this.result = result;
    const data = this.seriesData(result);
    if (!this.plot) this.createPlot(data); else {
      this.plot.setData(data, false);
      this.plot.setScale("x", { min: this.window[0] / state.source.fs, max: this.window[1] / state.source.fs });
      this.plot.setScale("y", { min: this.yRange[0], max: this.yRange[1] });
    }
    this.applyVisibility();
    const snr = result.cell.snr;
    this.dot.className = `dot ${snr >= 5 ? "good" : snr >= 2 ? "fair" : "poor"}`;
    if (final) this.setBadge("done", `SNR ${snr.toFixed(1)}`);
    else this.setBadge("solving", `Iter ${result.cell.iterations}`);
    this.foot.textContent = `R² ${result.cell.r2.toFixed(3)} · sparsity ${(100 * result.cell.sparsity).toFixed(0)}%`
      + ` · ${(this.window[0] / state.source.fs).toFixed(1)}–${(this.window[1] / state.source.fs).toFixed(1)} s`;
  }

  createPlot(data) {
    const card = this;
    const transientShade = (u) => {
      const end = 2 * taus().tauDecay;
      if (u.scales.x.min >= end) return;
      const x0 = u.bbox.left;
      const x1 = Math.min(u.valToPos(end, "x", true), u.bbox.left + u.bbox.width);
      u.ctx.save();
      u.ctx.fillStyle = "rgba(120,120,120,0.12)";
      u.ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
      u.ctx.restore();
    };
    const line = (color, width = 1, dash) => ({ stroke: color, width, points: { show: false }, dash });
    this.plot = new uPlot({
      width: this.chartWidth, height: chartHeight, legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: { x: { time: false }, y: { auto: false, range: () => card.yRange } },
      axes: [{ label: "Time (s)", size: 34, labelSize: 14 }, { show: false }],
      series: [{}, line(COLORS.raw), line(COLORS.filtered), line(COLORS.fit, 1.5), line(COLORS.deconv),
        line(COLORS.resid), { ...line(COLORS.fit, 1.2, [5, 4]), alpha: 0.65 },
        { ...line(COLORS.deconv, 1, [5, 4]), alpha: 0.65 }],
      hooks: { drawClear: [transientShade] },
    }, data, this.chartEl);
    this.plot.setScale("x", { min: this.window[0] / state.source.fs, max: this.window[1] / state.source.fs });
    this.plot.setScale("y", { min: this.yRange[0], max: this.yRange[1] });
    this.wirePanZoom();
  }

  wirePanZoom() {
    const over = this.plot.over;
    const fs = state.source.fs;
    const T = state.source.numTimepoints;
    let drag = null;
    over.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, window: [...this.window] };
      over.setPointerCapture(e.pointerId);
    });
    over.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const w = drag.window[1] - drag.window[0];
      const shift = Math.round(((drag.x - e.clientX) / over.clientWidth) * w);
      const start = clamp(drag.window[0] + shift, 0, T - w);
      this.window = [start, start + w];
      this.plot.setScale("x", { min: start / fs, max: (start + w) / fs });
      this.drawMinimap();
    });
    over.addEventListener("pointerup", () => {
      if (drag && this.windowKey !== `${drag.window[0]}:${drag.window[1]}`) this.windowChanged();
      drag = null;
    });
    let hintTimer = null;
    over.addEventListener("wheel", (e) => {
      if (!(e.ctrlKey || e.metaKey)) {
        this.showHint();
        clearTimeout(hintTimer);
        hintTimer = setTimeout(() => this.hideHint(), 1200);
        return;
      }
      e.preventDefault();
      const [a, b] = this.window;
      const w = b - a;
      const factor = e.deltaY < 0 ? 0.75 : 1 / 0.75;
      const nw = Math.round(clamp(w * factor, Math.max(2, fs), T));
      const frac = (e.clientX - over.getBoundingClientRect().left) / over.clientWidth;
      const centre = a + frac * w;
      const start = Math.round(clamp(centre - frac * nw, 0, T - nw));
      this.window = [start, start + nw];
      this.plot.setScale("x", { min: start / fs, max: (start + nw) / fs });
      this.drawMinimap();
      this.windowChanged();
    }, { passive: false });
  }

  showHint() {
    if (this.hint) return;
    this.hint = document.createElement("div");
    this.hint.className = "hint";
    this.hint.textContent = "Hold Ctrl to zoom";
    this.el.querySelector(".chart-wrap").append(this.hint);
  }

  hideHint() {
    this.hint?.remove();
    this.hint = null;
  }

  applyVisibility() {
    if (!this.plot) return;
    const show = { ...state.visible, filtered: state.visible.filtered && state.filter };
    SERIES.forEach((name, i) => this.plot.setSeries(i + 1, { show: show[name] }));
    this.plot.setSeries(6, { show: Boolean(state.pinned) && show.fit });
    this.plot.setSeries(7, { show: Boolean(state.pinned) && show.deconv });
  }

  resize() {
    requestAnimationFrame(() => {
      this.plot?.setSize({ width: this.chartWidth, height: chartHeight });
      this.drawMinimap();
    });
  }

  destroy() {
    this.plot?.destroy();
    this.el.remove();
  }
}

function setActive(card) {
  if (state.active === card) return;
  state.active?.el.classList.remove("active");
  state.active = card;
  card.el.classList.add("active");
  if (sidebarOpen("spectrum")) refreshSidebar();
}

function refreshCards() {
  const cells = selectedCells();
  const keep = new Set(cells);
  for (const [cell, card] of state.cards) {
    if (!keep.has(cell)) {
      card.destroy();
      state.cards.delete(cell);
    }
  }
  const container = $("cards");
  for (const cell of cells) {
    let card = state.cards.get(cell);
    if (!card) {
      card = new Card(cell);
      state.cards.set(cell, card);
    }
    container.append(card.el); // keeps selection order
  }
  $("empty").hidden = cells.length > 0;
  requestAnimationFrame(async () => {
    for (const card of [...state.cards.values()]) {
      if (!card.minimapData) card.loadMinimap(); else card.drawMinimap();
      if (!card.result) card.markStale();
    }
    scheduleSolve(0);
    refreshSidebar();
  });
}

/** Let the browser handle input and paint before the next chunk of work. */
function yieldToBrowser() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

// ------------------------------------------------------------------ solving
function parametersChanged() {
  state.stats.paramChangeAt = performance.now();
  for (const card of state.cards.values()) card.markStale();
  scheduleSolve(30);
}

function scheduleSolve(delayMs) {
  clearTimeout(state.solveTimer);
  state.solveTimer = setTimeout(solveStale, delayMs);
}

function reportError(err) {
  state.stats.errors.push(String(err?.message ?? err));
  $("export-error").textContent = String(err?.message ?? err);
}

async function solveStale() {
  if (!state.source || state.exported) return;
  const cards = [...state.cards.values()].filter((c) => c.badge.classList.contains("stale"));
  if (cards.length === 0) return;
  // priority: active, hovered, then the rest in grid order
  const rank = (c) => (c === state.active ? 0 : c === state.hovered ? 1 : 2);
  cards.sort((a, b) => rank(a) - rank(b));
  const groups = new Map();
  for (const card of cards) {
    const key = card.windowKey;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(card);
  }
  const { tauRise, tauDecay } = taus();
  const base = { tau_rise: tauRise, tau_decay: tauDecay, lambda: state.lambda, filter_enabled: state.filter };
  const started = state.stats.paramChangeAt || performance.now();
  await Promise.all([...groups.values()].map(async (group) => {
    const tokens = group.map((c) => c.token);
    const current = () => group.filter((c, i) => c.token === tokens[i] && state.cards.get(c.cell) === c);
    const live = current();
    if (live.length === 0) return;
    for (const c of live) c.setBadge("solving", "Solving");
    const [start, stop] = live[0].window;
    const points = Math.min(4000, Math.max(200, Math.round(live[0].chartWidth * 1.5)));
    const request = { ...base, cells: live.map((c) => c.cell), start, stop, points, padded_series: true };
    let finished = false;
    // The quick pass and the full solve run side by side on the (threaded) server; the
    // quick one lands first and is replaced when the full one arrives.
    const pass = async (iters) => {
      const reply = await state.source.solve({ ...request, max_iters: iters });
      state.stats.solves += 1;
      const final = iters === FULL_ITERS;
      if (!final && finished) return;
      if (final) finished = true;
      for (const c of current()) {
        const cellResult = reply.cells.find((r) => r.cell === c.cell);
        if (!cellResult) continue;
        if (final) c.solved = { range: reply.padded, decimated: reply.decimated, width: stop - start };
        c.show({ index: reply.index, cell: cellResult }, final);
        await yieldToBrowser(); // one card per task: input stays responsive with 20 cards
      }
    };
    try {
      await Promise.all([pass(QUICK_ITERS), pass(FULL_ITERS)]);
    } catch (err) {
      for (const c of current()) c.setBadge("error", "Error");
      reportError(err);
    }
  }));
  if (sidebarOpen("metrics")) renderMetrics();
  if ([...state.cards.values()].every((c) => c.badge.classList.contains("done"))) {
    state.stats.lastSettleMs = performance.now() - started;
    $("solve-time").textContent = `re-solved in ${state.stats.lastSettleMs.toFixed(0)} ms`;
  }
}

// ------------------------------------------------------------------ sidebar: spectrum, metrics
let spectrumPlot = null;
let spectrumTimer = null;

function sidebarOpen(tab) {
  return !$("sidebar").hidden && !$(`tab-${tab}`).hidden;
}

function toggleSidebar() {
  const open = $("sidebar").hidden;
  $("sidebar").hidden = !open;
  $("dashboard").classList.toggle("with-sidebar", open);
  for (const card of state.cards.values()) card.resize();
  refreshSidebar();
}

function refreshSidebar() {
  if (sidebarOpen("metrics")) renderMetrics();
  if (sidebarOpen("spectrum")) {
    clearTimeout(spectrumTimer);
    spectrumTimer = setTimeout(renderSpectrum, 250);
  }
}

function passBand(u) {
  if (!state.filter) return;
  const { tauRise, tauDecay } = taus();
  const { hp, lp } = cutoffs(tauRise, tauDecay, state.source.fs);
  const ctx = u.ctx;
  const x0 = u.valToPos(hp, "x", true);
  const x1 = u.valToPos(lp, "x", true);
  ctx.save();
  ctx.fillStyle = "rgba(0,158,115,0.10)";
  ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = "#009e73";
  ctx.textAlign = "left";
  ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
  ctx.fillStyle = "#007a59";
  for (const [x, label] of [[x0, "HP"], [x1, "LP"]]) {
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.fillText(label, x + 3, u.bbox.top + 12 * devicePixelRatio);
  }
  ctx.restore();
}

function renderSpectrumStats() {
  const { tauRise, tauDecay } = taus();
  const { hp, lp } = cutoffs(tauRise, tauDecay, state.source.fs);
  $("spectrum-stats").textContent = `Fs ${state.source.fs} Hz · HP ${hp.toFixed(3)} Hz · LP ${lp.toFixed(1)} Hz`;
}

async function renderSpectrum() {
  const cells = [...state.cards.keys()];
  renderSpectrumStats();
  if (!state.source.spectrum || cells.length === 0) {
    $("spectrum-chart").textContent = "The spectrum needs a bridge session.";
    return;
  }
  const active = state.active && state.cards.has(state.active.cell) ? state.active.cell : cells[0];
  try {
    const s = await state.source.spectrum([active, ...cells.filter((c) => c !== active)]);
    const data = [s.freq, s.active, s.average];
    if (spectrumPlot) {
      spectrumPlot.setData(data);
      return;
    }
    spectrumPlot = new uPlot({
      width: 306, height: 280, legend: { show: false },
      scales: { x: { time: false, distr: 3 } },
      axes: [{ label: "Frequency (Hz)", size: 34, labelSize: 14 }, { label: "Power (dB)", size: 44, labelSize: 14 }],
      series: [{ label: "Hz" }, { label: "active cell", stroke: "#2563eb", width: 1.5, points: { show: false } },
        { label: "average", stroke: "#9ca3af", width: 1.5, points: { show: false } }],
      hooks: { draw: [passBand] },
    }, data, $("spectrum-chart"));
  } catch (err) {
    reportError(err);
  }
}

function renderMetrics() {
  const rows = [...state.cards.values()].filter((c) => c.result).map((c) => c.result.cell)
    .sort((a, b) => b.snr - a.snr);
  const mean = (xs) => (xs.length ? xs.reduce((p, v) => p + v, 0) / xs.length : 0);
  $("metrics-summary").textContent =
    `Avg SNR ${mean(rows.map((r) => r.snr)).toFixed(1)} · Avg R² ${mean(rows.map((r) => r.r2)).toFixed(3)} · Cells ${rows.length}`;
  const quality = (snr) => (snr >= 5 ? "good" : snr >= 2 ? "fair" : "poor");
  $("metrics-table").querySelector("tbody").innerHTML = rows.map((r) =>
    `<tr><td><span class="dot ${quality(r.snr)}" style="display:inline-block"></span> ${r.cell + 1}</td>`
    + `<td>${r.snr.toFixed(1)}</td><td>${r.r2.toFixed(3)}</td><td>${(100 * r.sparsity).toFixed(1)}%</td></tr>`).join("");
}

function wireSidebar() {
  $("sidebar-toggle").addEventListener("click", toggleSidebar);
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("selected", t === tab);
      $("tab-spectrum").hidden = tab.dataset.tab !== "spectrum";
      $("tab-metrics").hidden = tab.dataset.tab !== "metrics";
      refreshSidebar();
    });
  }
}

// ------------------------------------------------------------------ pin, export
function togglePin() {
  if (state.pinned) {
    state.pinned = null;
    $("pin").textContent = "Pin";
    $("pinned").textContent = "";
  } else {
    state.pinned = { peakMs: state.peakMs, fwhmMs: state.fwhmMs };
    for (const card of state.cards.values()) {
      card.pinnedSeries = card.lastSeries;
      card.pinnedFor = card.windowKey;
    }
    $("pin").textContent = "Unpin";
    $("pinned").textContent = `pinned ${state.peakMs.toFixed(0)} / ${state.fwhmMs.toFixed(0)} ms`;
  }
  for (const card of state.cards.values()) if (card.result) card.show(card.result, card.badge.classList.contains("done"));
}

function buildExport() {
  const { tauRise, tauDecay } = taus();
  const fs = state.source.fs;
  const metadata = {};
  if (state.fileName) metadata.source_filename = state.fileName;
  metadata.num_cells = state.source.numCells;
  metadata.num_timepoints = state.source.numTimepoints;
  return {
    schema_version: "1.2.0",
    catune_version: `calab-${state.version}`,
    export_date: new Date().toISOString(),
    parameters: {
      tau_rise_s: tauRise, tau_decay_s: tauDecay, t_peak_s: state.peakMs / 1000, fwhm_s: state.fwhmMs / 1000,
      lambda: state.lambda, sampling_rate_hz: fs, filter_enabled: state.filter,
    },
    ar2_coefficients: ar2(tauRise, tauDecay, fs),
    formulation: {
      model: "y[t] = alpha * (K * s)[t] + b[t] + noise, with s >= 0 the deconvolved activity",
      objective: "minimise 0.5 * ||y - K s - b||^2 + lambda * G * ||s||_1 subject to s >= 0 (FISTA)",
      kernel: "K(t) = exp(-t / tau_decay) - exp(-t / tau_rise), sampled at 1 / fs",
      ar2_relation: "c[t] = g1 * c[t-1] + g2 * c[t-2] + s[t], g1 = dR + rR, g2 = -dR * rR",
      lambda_definition: "lambda is scaled by the kernel's DC gain G = sum(K)",
      convergence: "relative change of the objective below 1e-6, or the iteration cap",
    },
    metadata,
  };
}

async function exportToPython() {
  $("export-error").textContent = "";
  $("export-python").disabled = true;
  state.client.stopHeartbeat();
  try {
    await state.client.postJSON(state.resultsPath, buildExport());
    state.exported = true;
    $("export-python").hidden = true;
    $("export-local").hidden = false;
    const p = buildExport().parameters;
    $("modal-body").innerHTML = `<p>Peak ${state.peakMs.toFixed(1)} ms · FWHM ${state.fwhmMs.toFixed(1)} ms ·
      λ ${formatLambda(p.lambda)} · ${p.sampling_rate_hz} Hz · filter ${p.filter_enabled ? "on" : "off"}</p>
      <p><code>tune()</code> has returned these values. Further changes here are not sent to Python.</p>`;
    $("modal").hidden = false;
  } catch (err) {
    $("export-error").textContent = `Export failed: ${err.message}`;
    $("export-python").disabled = false;
    state.client.startHeartbeat();
  }
}

function exportLocally() {
  const text = JSON.stringify(buildExport(), null, 2);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  a.download = `catune-params-${new Date().toISOString().slice(0, 10)}.json`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ------------------------------------------------------------------ dashboard
let selectionWired = false;

function showDashboard(source) {
  state.source = source;
  if (!selectionWired) {
    selectionWired = true;
    wireSelection();
  }
  $("wizard").hidden = true;
  $("dashboard").hidden = false;
  const T = source.numTimepoints;
  const dur = T / source.fs;
  const duration = dur >= 60 ? `${(dur / 60).toFixed(1)} min` : `${dur.toFixed(1)} s`;
  $("info").textContent = [state.fileName, `${source.numCells} cells`, `${T} tp`, `${source.fs} Hz`, duration]
    .filter(Boolean).join(" · ");
  $("filter-toggle").disabled = !source.filterAvailable;
  $("export-python").hidden = !state.client;
  $("export-local").hidden = Boolean(state.client) || Boolean(state.demo); // no export of demo data
  $("change-data").hidden = Boolean(state.client);
  $("sidebar-toggle").hidden = false;
  syncParamInputs();
  drawKernel();
  return source.overview().then((overview) => {
    state.ranking = overview.ranking;
    refreshCards();
  });
}

function wireDashboard() {
  wireParams();
  wireSidebar();
  $("pin").addEventListener("click", togglePin);
  $("export-python").addEventListener("click", exportToPython);
  $("export-local").addEventListener("click", exportLocally);
  $("modal-close").addEventListener("click", () => { $("modal").hidden = true; });
  $("change-data").addEventListener("click", () => window.location.reload());
  window.addEventListener("resize", () => { for (const card of state.cards.values()) card.resize(); });
}

// ------------------------------------------------------------------ import wizard
const wizard = { arrays: [], data: null, shape: null, fs: null };

function setStep(n, label) {
  $("wizard-step").textContent = `Step ${n} of 4: ${label}`;
  ["step-load", "step-dims", "step-rate", "step-validate"].forEach((id, i) => { $(id).hidden = i !== n - 1; });
  $("start-over").hidden = n === 1;
}

async function loadFile(file) {
  $("load-error").textContent = "";
  try {
    const buffer = await file.arrayBuffer();
    const name = file.name.toLowerCase();
    const kb = file.size / 1024;
    $("load-status").textContent = `Loaded ${file.name} (${kb >= 1024 ? `${(kb / 1024).toFixed(1)} MB` : `${kb.toFixed(1)} KB`})`;
    let arrays;
    if (name.endsWith(".npy")) arrays = [{ name: file.name, ...parseNpy(buffer) }];
    else if (name.endsWith(".npz")) arrays = await parseNpz(buffer);
    else throw new Error("Unsupported file format: use .npy or .npz");
    state.fileName = file.name;
    arrays = arrays.filter((a) => a.shape.length === 2 || a.shape.length === 1);
    if (arrays.length === 0) throw new Error("The file holds no 1-D or 2-D array");
    if (arrays.length === 1) return chooseArray(arrays[0]);
    const box = $("array-select");
    box.hidden = false;
    box.innerHTML = "<p>Select Array</p>";
    for (const a of arrays) {
      const b = document.createElement("button");
      b.textContent = `${a.name} — ${a.shape.join(" x ")} (${a.dtype})`;
      b.addEventListener("click", () => chooseArray(a));
      box.append(b);
    }
  } catch (err) {
    $("load-error").textContent = `Could not load ${file.name}: ${err.message}`;
  }
}

function chooseArray(a) {
  wizard.data = a.data;
  wizard.shape = a.shape.length === 1 ? [1, a.shape[0]] : [...a.shape];
  showDims();
}

function showDims() {
  setStep(2, "Confirm Dimensions");
  const [r, c] = wizard.shape;
  $("dims-text").textContent = `${r} cells × ${c} timepoints`;
  $("dims-warning").hidden = r <= c;
}

function swapDims() {
  const [r, c] = wizard.shape;
  const t = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) t[j * r + i] = wizard.data[i * c + j];
  wizard.data = t;
  wizard.shape = [c, r];
  showDims();
}

function setRate(fs) {
  wizard.fs = fs > 0 ? fs : null;
  $("confirm-rate").disabled = !wizard.fs;
  const s = wizard.shape[1] / fs;
  $("rate-text").textContent = wizard.fs
    ? `At ${fs} Hz, this recording is ${s.toFixed(1)} seconds (${(s / 60).toFixed(1)} min). Double-check the rate.`
    : "";
  for (const b of document.querySelectorAll(".presets button")) b.classList.toggle("selected", Number(b.dataset.fs) === fs);
}

function validate() {
  setStep(4, "Validate Data");
  let nan = 0;
  let inf = 0;
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const v of wizard.data) {
    if (Number.isNaN(v)) nan++;
    else if (!Number.isFinite(v)) inf++;
    else { min = Math.min(min, v); max = Math.max(max, v); sum += v; }
  }
  const n = wizard.data.length;
  const errors = [];
  const warnings = [];
  if (n === 0) errors.push("The array is empty.");
  if (nan === n && n > 0) errors.push("Every value is NaN.");
  if (nan) warnings.push(`${nan} NaN values (${((100 * nan) / n).toFixed(2)}%): replaced by 0 for tuning.`);
  if (inf) warnings.push(`${inf} infinite values: replaced by 0 for tuning.`);
  if (wizard.shape[0] > wizard.shape[1]) warnings.push("More rows (cells) than columns (timepoints).");
  const mean = sum / Math.max(1, n - nan - inf);
  $("validation").innerHTML = errors.map((e) => `<p class="error">${e}</p>`).join("")
    + warnings.map((w) => `<p class="warning">${w}</p>`).join("")
    + `<table><tr><td>Total elements</td><td>${n}</td></tr><tr><td>Min</td><td>${min.toPrecision(4)}</td></tr>
       <tr><td>Max</td><td>${max.toPrecision(4)}</td></tr><tr><td>Mean</td><td>${mean.toPrecision(4)}</td></tr></table>`;
  $("open-dashboard").disabled = errors.length > 0;
}

/** Synthetic recording: Poisson spikes through the indicator's kernel, drift-free, Gaussian noise. */
function demoData() {
  const [tauRise, tauDecay] = $("demo-indicator").value.split(",").map(Number);
  const cells = clamp(Math.round(Number($("demo-cells").value)) || 100, 1, 200);
  const fps = clamp(Number($("demo-fps").value) || 30, 1, 120);
  const minutes = clamp(Number($("demo-minutes").value) || 15, 0.5, 60);
  const noise = Number($("demo-noise").value);
  const rate = Number($("demo-rate").value);
  let seed = (Math.round(Number($("demo-seed").value)) >>> 0) || 42;
  const random = () => { // mulberry32: reproducible for a given seed
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const gauss = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
  const T = Math.round(minutes * 60 * fps);
  const { g1, g2 } = ar2(tauRise, tauDecay, fps);
  // peak of the recursion's impulse response, so one spike is a transient of height ~0.5
  let peak = 0;
  for (let t = 0, a = 1, b = 0; t < 5 * tauDecay * fps + 2; t++) {
    peak = Math.max(peak, a);
    [a, b] = [g1 * a + g2 * b, a];
  }
  const data = new Float64Array(cells * T);
  for (let c = 0; c < cells; c++) {
    const amp = 0.8 + 0.4 * random();
    let c1 = 0;
    let c2 = 0;
    for (let t = 0; t < T; t++) {
      const s = random() < rate / fps ? 1 : 0;
      const ca = g1 * c1 + g2 * c2 + s;
      c2 = c1;
      c1 = ca;
      data[c * T + t] = 1 + (0.5 * amp * ca) / peak + noise * gauss();
    }
  }
  return { data, cells, T, fps };
}

function wireWizard() {
  $("load-demo").addEventListener("click", () => {
    const { data, cells, T, fps } = demoData();
    state.fileName = null;
    state.demo = true;
    showDashboard(new LocalSource(data, cells, T, fps)).catch(reportError);
  });
  const drop = $("dropzone");
  $("file-input").addEventListener("change", (e) => e.target.files[0] && loadFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) loadFile(e.dataTransfer.files[0]);
  });
  $("swap-dims").addEventListener("click", swapDims);
  $("confirm-dims").addEventListener("click", () => { setStep(3, "Set Sampling Rate"); });
  for (const b of document.querySelectorAll(".presets button")) b.addEventListener("click", () => setRate(Number(b.dataset.fs)));
  $("custom-fs").addEventListener("input", (e) => setRate(Number(e.target.value)));
  $("confirm-rate").addEventListener("click", validate);
  $("open-dashboard").addEventListener("click", () => {
    const data = wizard.data.map((v) => (Number.isFinite(v) ? v : 0));
    showDashboard(new LocalSource(data, wizard.shape[0], wizard.shape[1], wizard.fs)).catch(reportError);
  });
  $("start-over").addEventListener("click", () => window.location.reload());
}

// ------------------------------------------------------------------ opening view
function niceCeiling(v) {
  const step = 10 ** Math.floor(Math.log10(v));
  return Math.ceil(v / step) * step;
}

/** Start at the kernel and λ the server learned from the data (sliders move from there). */
function applyOpening(o) {
  state.opening = o;
  const note = $("opening-note");
  if (!o || o.error || !(o.tau_rise > 0 && o.tau_decay > o.tau_rise)) {
    note.textContent = `Opened at the default kernel: ${o && o.error ? o.error : "no kernel was learned"}.`;
    return;
  }
  const peak = peakTime(o.tau_rise, o.tau_decay) * 1000;
  const width = fwhm(o.tau_rise, o.tau_decay) * 1000;
  state.peakMs = clamp(peak, 5, Math.min(500, width / 2));
  state.fwhmMs = clamp(width, 20, 3000);
  const representable = state.peakMs === peak && state.fwhmMs === width;
  state.exactTaus = representable ? { tauRise: o.tau_rise, tauDecay: o.tau_decay } : null;
  state.lambdaMax = Math.max(10, niceCeiling(5 * o.lambda));
  state.lambda = o.lambda;
  state.filter = Boolean(o.filter_enabled);
  const how = o.method === "bispectrum" ? "bispectrum" : o.method;
  note.textContent = `Opened at the kernel learned from ${o.cells} cells (${how}) and λ = the noise SD`
    + ` (${o.lambda.toPrecision(3)}); move the sliders from here.`
    + (o.warnings && o.warnings.length ? ` Note: ${o.warnings.join(" ")}` : "");
}

// ------------------------------------------------------------------ start
async function main() {
  wireDashboard();
  wireWizard();
  const bridge = getBridge();
  if (bridge) {
    const client = new BridgeClient(bridge);
    try {
      const meta = await client.getJSON("/api/v1/metadata");
      try {
        const status = await client.getJSON("/api/v1/status");
        state.version = status.calab_version ?? state.version;
        if (status.results?.path) state.resultsPath = status.results.path;
      } catch {
        /* a 0.3.0-style server without /status: keep the legacy route */
      }
      $("version").textContent = `calab ${state.version}`;
      state.client = client;
      $("starting").hidden = false;
      try {
        applyOpening(await client.getJSON("/calab/v1/catune/opening"));
      } catch (err) {
        applyOpening({ error: `the server did not suggest a kernel (${err.message})` });
      }
      $("starting").hidden = true;
      await showDashboard(new BridgeSource(client, meta));
      client.startHeartbeat();
      return;
    } catch (err) {
      $("load-error").textContent = `Bridge: failed to load data: ${err.message}`;
      state.client = null;
    }
  }
  $("wizard").hidden = false;
  setStep(1, "Load Data");
}

main();
