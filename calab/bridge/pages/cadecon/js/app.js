// calab's built-in CaDecon page (spec bridge-and-apps.md §5.2, feature table §5.3).
//
// The page never computes and never downloads the recording: the bridge server runs
// calab.run_cadecon on its backend and the page steers it (start / pause / resume / stop)
// and reads what it shows in small pieces under /calab/v1/cadecon/ (a decimated raster,
// one cell's window, the per-iteration state).  The 0.3.0 protocol parts it uses: metadata,
// config (+ autorun), heartbeat, progress POSTs.  Export to Python is done on the server
// (POST export), which stores what the two-POST export would and completes the session.

import { BridgeClient, getBridge } from "../../common/bridge.js";
import { fwhm as kernelFwhm, peakTime } from "../../catune/js/kernel.js";

const API = "/calab/v1/cadecon";
const COLORS = { raw: "#0072b2", filtered: "#56b4e9", fit: "#e69f00", deconv: "#009e73", resid: "#d55e00" };
const SUBSET_COLORS = ["#e6194b", "#f58231", "#ffe119", "#ff6f00", "#f032e6", "#ff4f81", "#fabebe", "#ffd8b1",
  "#e6beff", "#ff9f1c", "#d00000", "#ffb703", "#fb5607", "#ff006e", "#c77dff", "#f4a261", "#e76f51", "#ffd166",
  "#ef476f", "#f77f00"];
const PHASE_CAPTIONS = {
  initialization: "Initial kernel estimate", inference: "Trace inference", "kernel-update": "Kernel estimation",
  merge: "Merging subsets", finalization: "Finalizing all cells", done: "Done",
};
const STATUS_CAPTIONS = { paused: "Paused", stopping: "Stopping...", complete: "Complete", error: "Error" };
const ACTIVE = new Set(["running", "paused", "stopping"]);
const ITERATION_TICKS = [1, 2, 5, 10, 20, 50, 100];

const $ = (id) => document.getElementById(id);
const state = {
  client: null, meta: null, info: null, autorun: false, exported: false,
  run: { status: "idle", iterations: [], progress: null }, subsets: [], selectedSubset: null,
  cell: 0, window: null, viewIteration: null, traceVisible: { raw: true, filtered: true, fit: true, deconv: true, resid: false },
  charts: {}, lastProgressPost: 0, lastProgressKey: null, traceToken: 0, traceTimer: null, pollTimer: null,
};

// ------------------------------------------------------------------ helpers
const ms = (s) => (s == null ? null : 1000 * s);
const fmt = (v, digits = 1) => (v == null || !Number.isFinite(v) ? "–" : v.toFixed(digits));
function chartWidth(el) {
  return Math.max(160, Math.floor(el.getBoundingClientRect().width || el.parentElement.clientWidth || 300));
}
function setError(id, err) {
  $(id).textContent = err ? String(err.message || err) : "";
}
function median(values) {
  const v = values.filter((x) => x != null && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}
function biexp(tr, td, fs, n) {
  const t = [];
  const h = [];
  for (let i = 0; i < n; i++) {
    t.push(i / fs);
    h.push(Math.exp(-i / fs / td) - Math.exp(-i / fs / tr));
  }
  return { t, h };
}
function normalise(values) {
  const peak = Math.max(...values.map(Math.abs), 0);
  return peak > 0 ? values.map((v) => v / peak) : values;
}

// ------------------------------------------------------------------ settings panel
const SETTINGS = [
  // [element id, DeconConfig field, parse, to display]
  ["k-box", "num_subsets", (v) => parseInt(v, 10)],
  ["seed-box", "seed", (v) => parseInt(v, 10)],
  ["upsample", "upsample_target", (v) => parseInt(v, 10)],
  ["max-iter", "max_iterations", (v) => parseInt(v, 10)],
  ["tol", "convergence_tol", Number],
  ["patience", "patience", (v) => parseInt(v, 10)],
];

function applyConfig(config) {
  const c = { ...state.info.defaults, ...config };
  $("k-box").value = $("k-range").value = c.num_subsets;
  $("coverage-box").value = $("coverage-range").value = Math.round(100 * c.target_coverage);
  $("aspect-range").value = Math.log2(c.aspect_ratio);
  $("aspect-out").textContent = Number(c.aspect_ratio).toFixed(1);
  $("seed-box").value = c.seed;
  $("upsample").value = c.upsample_target;
  $("refine").value = c.refine === true ? "always" : c.refine === false ? "never" : "auto";
  $("max-iter").value = c.max_iterations;
  $("tol").value = c.convergence_tol;
  $("patience").value = c.patience;
  $("hp").checked = !!c.hp_filter_enabled;
  $("lp").checked = !!c.lp_filter_enabled;
  $("noise").checked = !!c.noise_constrained;
}

function readConfig() {
  const config = {};
  for (const [id, field, parse] of SETTINGS) {
    const value = parse($(id).value);
    if (Number.isFinite(value)) config[field] = value;
  }
  config.target_coverage = Number($("coverage-box").value) / 100;
  config.aspect_ratio = Number(Math.pow(2, Number($("aspect-range").value)).toFixed(3));
  config.hp_filter_enabled = $("hp").checked;
  config.lp_filter_enabled = $("lp").checked;
  config.noise_constrained = $("noise").checked;
  // null: decided by the starting kernel actually used (none after a bispectral one)
  config.refine = { auto: null, always: true, never: false }[$("refine").value];
  return config;
}

function wireSettings() {
  const pair = (range, box) => {
    $(range).addEventListener("input", () => { $(box).value = $(range).value; subsetsChanged(); });
    $(box).addEventListener("change", () => { $(range).value = $(box).value; subsetsChanged(); });
  };
  pair("k-range", "k-box");
  pair("coverage-range", "coverage-box");
  $("aspect-range").addEventListener("input", () => {
    $("aspect-out").textContent = Math.pow(2, Number($("aspect-range").value)).toFixed(1);
    subsetsChanged();
  });
  $("seed-box").addEventListener("change", subsetsChanged);
  $("dice").addEventListener("click", () => {
    $("seed-box").value = Math.floor(Math.random() * 2 ** 31);
    subsetsChanged();
  });
}

let subsetsTimer = null;
function subsetsChanged() {
  clearTimeout(subsetsTimer);
  subsetsTimer = setTimeout(loadSubsets, 120);
}

async function loadSubsets() {
  const c = readConfig();
  const q = new URLSearchParams({ num_subsets: c.num_subsets, target_coverage: c.target_coverage,
    aspect_ratio: c.aspect_ratio, seed: c.seed });
  try {
    const reply = await state.client.getJSON(`${API}/subsets?${q}`);
    state.subsets = reply.subsets;
    const pct = (x) => Math.round(100 * x);
    $("coverage-readout").textContent =
      `${pct(reply.cells_fraction)}% cells, ${pct(reply.time_fraction)}% time, ${pct(reply.total_fraction)}% total`;
    const overlap = overlapping(reply.subsets);
    $("overlap-warning").hidden = !overlap;
    $("overlap-warning").textContent = overlap ? `K = ${reply.subsets.length}: some subsets overlap` : "";
    drawOverlay();
    drawMinimap();
  } catch (err) {
    setError("run-error", err);
  }
}

function overlapping(rects) {
  for (let i = 0; i < rects.length; i++) {
    for (let j = i + 1; j < rects.length; j++) {
      const a = rects[i];
      const b = rects[j];
      if (a.t_start < b.t_stop && b.t_start < a.t_stop && a.cell_start < b.cell_stop && b.cell_start < a.cell_stop) return true;
    }
  }
  return false;
}

function setControlsEnabled(enabled) {
  for (const el of document.querySelectorAll("#subset-panel input, #subset-panel button, #algo-panel input, #algo-panel select")) {
    el.disabled = !enabled;
  }
}

// ------------------------------------------------------------------ raster
const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
  [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
function viridis(v) {
  const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}

async function loadRaster() {
  const wrap = $("raster-wrap");
  const cols = Math.min(1600, Math.max(100, Math.floor(wrap.clientWidth)));
  const rows = Math.min(600, Math.max(20, Math.floor(wrap.clientHeight)));
  const reply = await state.client.getJSON(`${API}/raster?rows=${rows}&cols=${cols}`);
  const bytes = Uint8Array.from(atob(reply.data), (c) => c.charCodeAt(0));
  const canvas = $("raster");
  canvas.width = reply.cols;
  canvas.height = reply.rows;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(reply.cols, reply.rows);
  const lut = Array.from({ length: 256 }, (_, i) => viridis(i / 255));
  for (let i = 0; i < bytes.length; i++) {
    const [r, g, b] = lut[bytes[i]];
    image.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  state.rasterLoaded = true;
  drawOverlay();
}

function drawOverlay() {
  const canvas = $("raster-overlay");
  const wrap = $("raster-wrap");
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.floor(wrap.clientWidth * dpr);
  canvas.height = Math.floor(wrap.clientHeight * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, wrap.clientWidth, wrap.clientHeight);
  if (!state.meta) return;
  const sx = wrap.clientWidth / state.meta.num_timepoints;
  const sy = wrap.clientHeight / state.meta.num_cells;
  state.subsets.forEach((r, i) => {
    const color = SUBSET_COLORS[i % SUBSET_COLORS.length];
    const selected = state.selectedSubset === i;
    const faded = state.selectedSubset !== null && !selected;
    ctx.globalAlpha = faded ? 0.45 : 1;
    ctx.strokeStyle = color;
    ctx.lineWidth = selected ? 3 : 1.5;
    ctx.strokeRect(r.t_start * sx, r.cell_start * sy, (r.t_stop - r.t_start) * sx, (r.cell_stop - r.cell_start) * sy);
    ctx.font = "bold 11px system-ui, sans-serif";
    ctx.fillStyle = color;
    ctx.fillText(`K${i + 1}`, r.t_start * sx + 3, r.cell_start * sy + 12);
  });
  ctx.globalAlpha = 1;
}

function wireRaster() {
  $("raster-overlay").addEventListener("click", (event) => {
    const wrap = $("raster-wrap");
    const rect = wrap.getBoundingClientRect();
    const t = ((event.clientX - rect.left) / rect.width) * state.meta.num_timepoints;
    const c = ((event.clientY - rect.top) / rect.height) * state.meta.num_cells;
    const hit = state.subsets.findIndex((r) => t >= r.t_start && t < r.t_stop && c >= r.cell_start && c < r.cell_stop);
    state.selectedSubset = hit < 0 || hit === state.selectedSubset ? null : hit;
    drawOverlay();
    fillCellSelect();
    drawKernelShape();
  });
  const seconds = state.meta.num_timepoints / state.meta.sampling_rate_hz;
  $("raster-time").textContent = `Time (s): 0 – ${seconds.toFixed(1)}`;
}

// ------------------------------------------------------------------ run controls
async function command(name, body = {}) {
  setError("run-error", null);
  try {
    const reply = await state.client.postJSON(`${API}/${name}`, body);
    state.run.status = reply.status;
    renderRun();
    poll(true);
    return reply;
  } catch (err) {
    setError("run-error", err);
    return null;
  }
}

function wireRun() {
  $("start").addEventListener("click", () => startRun());
  $("pause").addEventListener("click", () => command("pause"));
  $("resume").addEventListener("click", () => command("resume"));
  $("stop").addEventListener("click", () => command("stop", { finalize: true }));
  $("reset").addEventListener("click", async () => {
    if (await command("reset")) {
      state.run = { status: "idle", iterations: [], progress: null };
      state.viewIteration = null;
      renderAll();
    }
  });
}

async function startRun() {
  state.exported = false;
  state.viewIteration = null;
  const reply = await command("start", { config: readConfig() });
  if (reply) loadSubsets();
}

function renderRun() {
  const status = state.run.status;
  const active = ACTIVE.has(status);
  setControlsEnabled(!active);
  $("start").hidden = status === "paused";
  $("start").disabled = active || status === "complete";
  $("resume").hidden = status !== "paused";
  $("pause").disabled = status !== "running";
  $("stop").disabled = !(status === "running" || status === "paused");
  $("reset").hidden = !(status === "complete" || status === "error");
  const p = state.run.progress;
  $("progress").hidden = status === "idle";
  $("progress").classList.toggle("running", status === "running");
  if (p) {
    // Once complete, the iterations actually finished (a stop interrupts the current one).
    const done = status === "complete" && state.run.summary;
    const iteration = done ? state.run.summary.num_iterations : p.iteration;
    // No refinement rounds after a bispectral kernel: nothing to count.
    $("progress-iter").textContent = p.max_iterations > 0 ? `Iteration ${iteration} of ${p.max_iterations}` : "No refinement iterations";
    const pct = status === "complete" ? 100 : Math.round(100 * (p.phase_progress || 0));
    $("progress-pct").textContent = `${pct}%`;
    const overall = status === "complete" ? 1
      : p.phase === "finalization" ? 0.9 + 0.1 * p.phase_progress
        : p.max_iterations > 0 ? Math.min(0.9, (0.9 * Math.max(0, p.iteration - 1 + phaseFraction(p.phase))) / p.max_iterations)
          : 0.3;
    $("progress-fill").style.width = `${(100 * overall).toFixed(1)}%`;
    $("progress-phase").textContent = PHASE_CAPTIONS[p.phase] || p.phase;
  }
  // A pause takes effect at the loop's next phase boundary: until then it is "Pausing...".
  const pausing = status === "paused" && !(p && p.status === "paused");
  $("progress-status").textContent = pausing ? "Pausing..." : STATUS_CAPTIONS[status] || "";
  if (state.run.error) $("run-error").textContent = state.run.error;
  renderResults();
}

function phaseFraction(phase) {
  return { initialization: 0, inference: 0.1, "kernel-update": 0.6, merge: 0.9 }[phase] ?? 0;
}

// ------------------------------------------------------------------ polling + progress POSTs (B-05)
function poll(soon = false) {
  clearTimeout(state.pollTimer);
  if (state.closed) return; // exported: the Python side has shut the server down
  state.pollTimer = setTimeout(pollOnce, soon ? 50 : ACTIVE.has(state.run.status) ? 400 : 2000);
}

async function pollOnce() {
  try {
    const s = await state.client.getJSON(`${API}/state`);
    const changedIterations = s.iterations.length !== state.run.iterations.length || s.status !== state.run.status;
    state.run = s;
    renderRun();
    postProgress();
    if (changedIterations) {
      renderCharts();
      fillCellSelect();
      scheduleTrace(0);
    }
    if (s.status === "complete" && state.autorun && !state.exported && !s.exported) exportToPython(true);
  } catch (err) {
    if (!state.closed) setError("run-error", err);
  }
  poll();
}

function postProgress() {
  const p = state.run.progress;
  if (!p) return;
  const status = state.run.status === "complete" ? "complete" : state.run.status === "error" ? "idle" : state.run.status;
  const phase = ["inference", "kernel-update", "merge", "finalization"].includes(p.phase) ? p.phase : "idle";
  const body = { iteration: p.iteration, max_iterations: p.max_iterations, phase, phase_progress: p.phase_progress,
    tau_rise: p.tau_rise, tau_decay: p.tau_decay, status };
  const key = JSON.stringify(body);
  const now = Date.now();
  const urgent = status === "complete" || status === "paused";
  if (key === state.lastProgressKey || (!urgent && now - state.lastProgressPost < 500)) return;
  state.lastProgressKey = key;
  state.lastProgressPost = now;
  state.client.postJSON("/api/v1/progress", body).catch(() => {}); // fire and forget (§1.10)
}

// ------------------------------------------------------------------ results / export (B-07, D-12, D-13)
function renderResults() {
  const s = state.run.summary;
  const complete = state.run.status === "complete" && s;
  if (complete) {
    $("result-summary").textContent = s.tau_rise == null
      ? "No kernel was fitted before the run stopped."
      : `rise: ${fmt(ms(s.tau_rise))} ms, decay: ${fmt(ms(s.tau_decay))} ms`;
    const badge = $("result-badge");
    badge.hidden = false;
    const direct = s.refined === false && s.num_iterations === 0 && !s.stopped;
    badge.className = `badge ${s.converged || direct ? "converged" : "stopped"}`;
    badge.textContent = direct
      ? (s.kernel_method === "bispectrum" ? "Kernel from the bispectral phase (no refinement)" : "Starting kernel (no refinement)")
      : s.converged
        ? `Converged at iteration ${s.converged_at_iteration}`
        : s.stopped ? `Stopped at iteration ${s.num_iterations}` : `Ran ${s.num_iterations} iterations (not converged)`;
  } else {
    $("result-summary").textContent = "Export becomes available after convergence or a manual stop.";
    $("result-badge").hidden = true;
  }
  const exported = state.exported || state.run.exported;
  const button = $("export-python");
  if (state.autorun) {
    button.textContent = "Auto-export enabled";
    button.disabled = true;
  } else {
    button.textContent = exported ? "Exported" : "Export to Python";
    button.disabled = !complete || exported;
  }
  $("export-notice").hidden = !exported;
  $("export-notice").textContent = state.autorun ? "Results auto-exported to Python"
    : "Results exported to Python: calab.decon() has returned them. Further runs here are not sent.";
  $("download").disabled = !complete;
}

async function exportToPython(auto = false) {
  if (state.exported) return;
  state.exported = true; // no second export while this one is in flight
  setError("export-error", null);
  try {
    await state.client.postJSON(`${API}/export`, {});
    state.client.stopHeartbeat(); // the session is complete (§1.10)
    state.closed = true;
    clearTimeout(state.pollTimer);
  } catch (err) {
    state.exported = false;
    $("export-error").textContent = `Bridge: failed to post results: ${err.message}`;
  }
  renderResults();
}

async function downloadResults() {
  const button = $("download");
  button.textContent = "Exporting...";
  button.disabled = true;
  setError("export-error", null);
  try {
    const response = await state.client.request(`${API}/results.zip`);
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${state.info.stem || "cadecon"}_cadecon_results.zip`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (err) {
    $("export-error").textContent = err.message;
  }
  button.textContent = "Download Results";
  renderResults();
}

// ------------------------------------------------------------------ charts
function makeChart(id, opts, data) {
  const el = $(id);
  if (state.charts[id]) {
    state.charts[id].destroy();
    delete state.charts[id];
  }
  el.innerHTML = "";
  const chart = new uPlot({ width: chartWidth(el), height: opts.height || 130, ...opts }, data, el);
  state.charts[id] = chart;
  return chart;
}

function iterationMarker(getIteration) {
  return {
    hooks: {
      draw: [(u) => {
        const it = getIteration();
        if (it == null) return;
        const x = u.valToPos(it, "x", true);
        const { ctx } = u;
        ctx.save();
        ctx.strokeStyle = "#16a34a";
        ctx.setLineDash([4, 3]);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.restore();
      }],
    },
  };
}

function convergedAt() {
  const s = state.run.summary;
  // a run without refinement rounds is final at "round 0": there is no round to mark
  return s && s.converged && s.num_iterations > 0 ? s.converged_at_iteration : null;
}

function smallLineChart(id, title, x, y, { log = false, color = "#2563eb", unit = "", tol = null } = {}) {
  const plugins = [iterationMarker(convergedAt)];
  if (tol != null) {
    plugins.push({
      hooks: {
        drawClear: [(u) => {
          const top = u.valToPos(tol, "y", true);
          const { ctx } = u;
          ctx.save();
          ctx.fillStyle = "rgba(22, 163, 74, 0.12)";
          ctx.fillRect(u.bbox.left, top, u.bbox.width, u.bbox.top + u.bbox.height - top);
          ctx.fillStyle = "#15803d";
          ctx.textAlign = "left";
          ctx.font = `${11 * (window.devicePixelRatio || 1)}px system-ui`;
          ctx.fillText(`tol ${tol}`, u.bbox.left + 4, top - 3);
          ctx.restore();
        }],
      },
    });
  }
  const values = y.filter((v) => v != null && Number.isFinite(v) && (!log || v > 0));
  let range;
  if (log && values.length) {
    const lo = Math.min(...values, tol ?? Infinity) / 2;
    const hi = Math.max(...values, tol ?? 0) * 2;
    range = [lo, hi];
  }
  return makeChart(id, {
    title, height: 125, legend: { show: false }, cursor: { sync: { key: "iterations" } },
    scales: { x: { time: false }, y: log ? { distr: 3, range: () => range || [1e-4, 1] } : {} },
    axes: [{ label: "Iteration", size: 30, labelSize: 14, incrs: ITERATION_TICKS }, { size: 50, label: unit, labelSize: 14 }],
    series: [{}, { stroke: color, width: 2, points: { show: true, size: 5 }, spanGaps: true }],
    plugins,
  }, [x, y.map((v) => (v != null && Number.isFinite(v) && (!log || v > 0) ? v : null))]);
}

function renderCharts() {
  const its = state.run.iterations || [];
  const has = its.length > 0;
  $("asymptote-empty").hidden = has;
  const s = state.run.summary;
  $("asymptote-empty").textContent = state.run.status === "complete" && s && s.refined === false
    ? "No refinement iterations: the kernel was fitted to the phase of the traces' bispectrum (see the Kernel shape panel)."
    : "Run deconvolution to see the asymptote dashboard.";
  const x = its.map((r) => r.iteration);
  const tol = state.run.config ? state.run.config.convergence_tol : null;
  if (has) {
    smallLineChart("chart-rmse", "Kernel change (RMSE)", x, its.map((r) => r.kernel_rmse), { log: true, unit: "frac. peak", tol });
    smallLineChart("chart-activity", "Activity change", x, its.map((r) => r.trace_stability), { log: true, color: "#7c3aed" });
    smallLineChart("chart-r2", "Kernel fit R²", x, its.map((r) => r.kernel_fit_r2), { color: "#e69f00" });
    smallLineChart("chart-pve", "Reconstruction (PVE)", x, its.map((r) => r.median_pve), { color: "#009e73" });
  } else {
    for (const id of ["chart-rmse", "chart-activity", "chart-r2", "chart-pve", "chart-taus"]) {
      if (state.charts[id]) { state.charts[id].destroy(); delete state.charts[id]; }
      $(id).innerHTML = "";
    }
  }
  if (has) renderTauChart(its, x);
  renderScrubber();
  drawKernelShape();
  renderDistributions();
}

function renderTauChart(its, x) {
  const series = [
    ["τ_rise", "tau_rise", "#0072b2"], ["τ_decay", "tau_decay", "#d55e00"],
    ["t_peak", "t_peak", "#e69f00"], ["FWHM", "fwhm", "#7b3fa0"],
  ];
  const data = [x, ...series.map(([, key]) => its.map((r) => ms(r[key])))];
  makeChart("chart-taus", {
    title: "Kernel per iteration (ms)", height: 270, cursor: { sync: { key: "iterations" } },
    scales: { x: { time: false } },
    axes: [{ label: "Iteration", size: 30, labelSize: 14, incrs: ITERATION_TICKS }, { label: "ms", size: 50, labelSize: 14 }],
    series: [{ label: "Iteration" }, ...series.map(([label, , stroke]) => ({
      label, stroke, width: 2, points: { show: true, size: 5 }, spanGaps: true,
      value: (u, v) => (v == null ? "–" : v.toFixed(1)),
    }))],
    plugins: [iterationMarker(convergedAt), iterationMarker(() => state.viewIteration), subsetScatter(its)],
  }, data);
}

function subsetScatter(its) {
  // Faint per-subset taus behind the medians (from the loop's history, once available).
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        ctx.save();
        for (const r of its) {
          for (const sub of r.subsets || []) {
            if (!sub || sub.tau_rise == null) continue;
            for (const [key, color] of [["tau_rise", "rgba(0,114,178,.3)"], ["tau_decay", "rgba(213,94,0,.3)"]]) {
              const px = u.valToPos(r.iteration, "x", true);
              const py = u.valToPos(1000 * sub[key], "y", true);
              ctx.fillStyle = color;
              ctx.beginPath();
              ctx.arc(px, py, 2.5, 0, 2 * Math.PI);
              ctx.fill();
            }
          }
        }
        ctx.restore();
      }],
    },
  };
}

function renderScrubber() {
  const its = state.run.iterations || [];
  $("scrubber").hidden = its.length < 2;
  if (its.length < 2) return;
  const slider = $("scrub");
  slider.min = its[0].iteration;
  slider.max = its[its.length - 1].iteration;
  if (state.viewIteration == null) slider.value = slider.max;
  $("scrub-out").textContent = `${slider.value} / ${slider.max}`;
}

function wireScrubber() {
  $("scrub").addEventListener("input", () => {
    const slider = $("scrub");
    state.viewIteration = slider.value === slider.max ? null : Number(slider.value);
    $("scrub-out").textContent = `${slider.value} / ${slider.max}`;
    drawKernelShape();
    if (state.charts["chart-taus"]) state.charts["chart-taus"].redraw();
  });
  $("scrub-latest").addEventListener("click", () => {
    state.viewIteration = null;
    renderScrubber();
    drawKernelShape();
  });
}

function viewedRecord() {
  const its = state.run.iterations || [];
  if (!its.length) return null;
  if (state.viewIteration == null) return its[its.length - 1];
  return its.find((r) => r.iteration === state.viewIteration) || its[its.length - 1];
}

function drawKernelShape() {
  const record = viewedRecord();
  const fs = state.meta.sampling_rate_hz;
  const p = state.run.progress;
  // After the run, the latest view shows the kernel the final pass used (the median shape
  // of the last iterations), which can differ from the last iteration's own median.
  const summary = state.run.summary;
  const final = state.viewIteration == null && state.run.status === "complete" && summary && summary.tau_rise != null;
  const tr = final ? summary.tau_rise : record ? record.tau_rise : p && p.tau_rise;
  const td = final ? summary.tau_decay : record ? record.tau_decay : p && p.tau_decay;
  $("kernel-empty").hidden = tr != null;
  if (tr == null || td == null) {
    if (state.charts["chart-kernel"]) { state.charts["chart-kernel"].destroy(); delete state.charts["chart-kernel"]; }
    $("kernel-stats").innerHTML = "";
    return;
  }
  const subsets = (record && record.subsets) || [];
  const longest = Math.max(Math.ceil(5 * td * fs), ...subsets.map((s) => (s && s.h_free ? s.h_free.length : 0)));
  const fit = biexp(tr, td, fs, longest);
  const x = fit.t.map((t) => 1000 * t);
  const series = [{ label: "Time (ms)" }];
  const data = [x];
  subsets.forEach((s, i) => {
    if (!s || !s.h_free || !s.h_free.length) return;
    const color = SUBSET_COLORS[i % SUBSET_COLORS.length];
    const selected = state.selectedSubset === i;
    const faded = state.selectedSubset !== null && !selected;
    const h = normalise(s.h_free);
    data.push(x.map((_, k) => (k < h.length ? h[k] : null)));
    series.push({ label: `K${i + 1} free`, stroke: color, width: selected ? 2.5 : 1.2,
      alpha: faded ? 0.2 : selected ? 1 : 0.5, show: true });
  });
  // The fit: the slow bi-exponential (and fast/full when the fits have a fast component).
  const fast = subsets.find((s) => s && s.beta_fast);
  let full = fit.h;
  if (fast && fast.tau_decay_fast > 0 && fast.tau_rise_fast > 0) {
    const f = biexp(fast.tau_rise_fast, fast.tau_decay_fast, fs, longest).h;
    const slowBeta = median(subsets.map((s) => s && s.beta)) || 1;
    const fastBeta = median(subsets.map((s) => s && s.beta_fast)) || 0;
    full = fit.h.map((v, k) => slowBeta * v + fastBeta * f[k]);
    const peak = Math.max(...full);
    data.push(f.map((v) => (fastBeta * v) / peak));
    series.push({ label: "Fast", stroke: "#555", width: 1.5, dash: [2, 3] });
    data.push(fit.h.map((v) => (slowBeta * v) / peak));
    series.push({ label: "Slow", stroke: "#111", width: 2, dash: [6, 4] });
    data.push(full.map((v) => v / peak));
    series.push({ label: "Full", stroke: "#111", width: 2.5 });
  } else {
    data.push(normalise(fit.h));
    series.push({ label: "Slow fit", stroke: "#111", width: 2.5, dash: [6, 4] });
  }
  let fastShare = null;
  if (series.some((ser) => ser.label === "Fast")) {
    const energy = (values) => values.reduce((acc, v) => acc + (v || 0) * (v || 0), 0);
    const fastE = energy(data[series.findIndex((ser) => ser.label === "Fast")]);
    const slowE = energy(data[series.findIndex((ser) => ser.label === "Slow")]);
    fastShare = fastE / (fastE + slowE || 1);
  }
  const tPeak = peakTime(tr, td);
  const width = kernelFwhm(tr, td);
  makeChart("chart-kernel", {
    height: 210, scales: { x: { time: false }, y: { range: [-0.1, 1.1] } },
    legend: { show: false },
    axes: [{ label: "Time (ms)", size: 34, labelSize: 14 }, { size: 44 }],
    series, plugins: [peakAnnotations(1000 * tPeak, 1000 * width, tr, td)],
  }, data);
  const degenerate = record ? record.n_degenerate || 0 : 0;
  const total = subsets.filter((s) => s).length;
  const rows = [
    `<span>tPeak: <b>${fmt(1000 * tPeak)} ms</b></span>`, `<span>FWHM: <b>${fmt(1000 * width)} ms</b></span>`,
    `<span>τ_r: ${fmt(ms(tr))} ms</span>`, `<span>τ_d: ${fmt(ms(td))} ms</span>`,
    final ? `<span>final kernel (subset kernels: iteration ${record ? record.iteration : "–"})</span>`
      : record ? `<span>iteration ${record.iteration}</span>` : "<span>current kernel</span>",
  ];
  if (fastShare != null) rows.push(`<span>Fast: ${fmt(100 * fastShare)}%</span>`, "<span>slow - - · fast ··· · full —</span>");
  else rows.push("<span>fit - - · subsets: colours</span>");
  if (degenerate) rows.push(`<span class="warn">⚠ ${degenerate}/${total + degenerate} fits degenerate</span>`);
  $("kernel-stats").innerHTML = rows.join("");
}

function peakAnnotations(peakMs, fwhmMs, tr, td) {
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        ctx.save();
        const x = u.valToPos(peakMs, "x", true);
        ctx.strokeStyle = "#e69f00";
        ctx.setLineDash([5, 4]);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillStyle = "#b45309";
        ctx.textAlign = "left";
        ctx.textBaseline = "alphabetic";
        ctx.font = `${11 * (window.devicePixelRatio || 1)}px system-ui`;
        ctx.fillText(`Peak: ${peakMs.toFixed(0)}ms`, x + 4, u.bbox.top + 14);
        // FWHM bracket at half height, from the half-maximum crossings.
        const tp = peakMs / 1000;
        const half = 0.5 * (Math.exp(-tp / td) - Math.exp(-tp / tr));
        let t1 = 0;
        let lo = 0;
        let hi = tp;
        for (let i = 0; i < 50; i++) {
          t1 = 0.5 * (lo + hi);
          if (Math.exp(-t1 / td) - Math.exp(-t1 / tr) < half) lo = t1; else hi = t1;
        }
        const x1 = u.valToPos(1000 * t1, "x", true);
        const x2 = u.valToPos(1000 * t1 + fwhmMs, "x", true);
        const y = u.valToPos(0.5, "y", true);
        ctx.setLineDash([]);
        ctx.strokeStyle = "#7b3fa0";
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.moveTo(x1, y);
        ctx.lineTo(x2, y);
        ctx.stroke();
        ctx.fillStyle = "#7b3fa0";
        ctx.fillText(`FWHM: ${fwhmMs.toFixed(0)}ms`, x2 + 4, y + 4);
        ctx.restore();
      }],
    },
  };
}

function renderDistributions() {
  const s = state.run.summary;
  $("dist-empty").hidden = !!s;
  if (!s) return;
  const hist = (id, title, values) => {
    const v = values.filter((x) => x != null && Number.isFinite(x));
    if (!v.length) return;
    const lo = Math.min(...v);
    const hi = Math.max(...v);
    const bins = 15;
    const step = hi > lo ? (hi - lo) / bins : 1;
    const counts = new Array(bins).fill(0);
    for (const x of v) counts[Math.min(bins - 1, Math.floor((x - lo) / step))]++;
    const centres = counts.map((_, i) => lo + (i + 0.5) * step);
    const sorted = [...v].sort((a, b) => a - b);
    const q = (f) => sorted[Math.min(sorted.length - 1, Math.floor(f * (sorted.length - 1)))];
    makeChart(id, {
      title: `${title} · median ${median(v).toFixed(3)} · IQR [${q(0.25).toFixed(3)}, ${q(0.75).toFixed(3)}] · N ${v.length}`,
      height: 160, legend: { show: false }, scales: { x: { time: false } },
      axes: [{ size: 28 }, { size: 34 }],
      series: [{}, { stroke: "#2563eb", fill: "rgba(37,99,235,.35)", paths: uPlot.paths.bars({ size: [0.9] }) }],
    }, [centres, counts]);
  };
  hist("hist-alpha", "Alpha", s.alphas);
  hist("hist-pve", "PVE", s.pves);
  hist("hist-rate", "Event rate (Hz)", s.event_rates);
}

function wireTabs() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
      for (const body of document.querySelectorAll(".tab-body")) body.hidden = body.id !== `tab-${tab.dataset.tab}`;
      renderCharts(); // sizes depend on visibility
    });
  }
}

// ------------------------------------------------------------------ trace inspector (D-09)
function cellsInSubsets() {
  const cells = new Set();
  for (const r of state.subsets) for (let c = r.cell_start; c < r.cell_stop; c++) cells.add(c);
  return cells;
}

function fillCellSelect() {
  const select = $("cell-select");
  const n = state.meta.num_cells;
  const complete = state.run.status === "complete";
  const inSubsets = cellsInSubsets();
  const selected = state.selectedSubset !== null ? state.subsets[state.selectedSubset] : null;
  const cells = [];
  for (let c = 0; c < n; c++) if (complete || state.run.status === "idle" || inSubsets.has(c)) cells.push(c);
  // A large recording gets a window of options around the current cell (a <select> of
  // 10,000 options is slow to open); ◀ / ▶ still walk through every cell.
  const around = cells.length > 400 ? cells.filter((c) => Math.abs(c - state.cell) < 200) : cells;
  select.innerHTML = "";
  for (const c of around) {
    const option = document.createElement("option");
    option.value = c;
    option.textContent = `Cell ${c}`;
    if (selected && (c < selected.cell_start || c >= selected.cell_stop)) option.style.color = "#9ca3af";
    select.appendChild(option);
  }
  if (!around.includes(state.cell) && around.length) state.cell = around[0];
  select.value = state.cell;
}

function setCell(c) {
  const n = state.meta.num_cells;
  state.cell = Math.max(0, Math.min(n - 1, c));
  fillCellSelect();
  state.minimap = null;
  scheduleTrace(0);
}

function wireTrace() {
  $("cell-select").addEventListener("change", () => setCell(Number($("cell-select").value)));
  $("cell-prev").addEventListener("click", () => setCell(state.cell - 1));
  $("cell-next").addEventListener("click", () => setCell(state.cell + 1));
  $("zoom-in").addEventListener("click", () => zoom(0.5));
  $("zoom-out").addEventListener("click", () => zoom(2));
  const legend = $("trace-legend");
  const labels = { raw: "Raw", filtered: "Filtered", fit: "Fit", deconv: "Deconv", resid: "Resid" };
  for (const [key, label] of Object.entries(labels)) {
    const chip = document.createElement("span");
    chip.className = `chip${state.traceVisible[key] ? "" : " off"}`;
    chip.innerHTML = `<span class="swatch" style="background:${COLORS[key]}"></span>${label}`;
    chip.addEventListener("click", () => {
      state.traceVisible[key] = !state.traceVisible[key];
      chip.classList.toggle("off", !state.traceVisible[key]);
      drawTrace();
    });
    legend.appendChild(chip);
  }
  $("trace-minimap").addEventListener("click", (event) => {
    const rect = event.currentTarget.getBoundingClientRect();
    const centre = ((event.clientX - rect.left) / rect.width) * state.meta.num_timepoints;
    const width = state.window[1] - state.window[0];
    moveWindow(Math.round(centre - width / 2), width);
  });
}

function moveWindow(start, width) {
  const n = state.meta.num_timepoints;
  width = Math.max(Math.min(width, n), Math.min(n, 20));
  start = Math.max(0, Math.min(n - width, start));
  state.window = [start, start + width];
  drawMinimap();
  scheduleTrace(100);
}

function zoom(factor) {
  const [a, b] = state.window;
  const centre = (a + b) / 2;
  const width = Math.round((b - a) * factor);
  moveWindow(Math.round(centre - width / 2), width);
}

function scheduleTrace(delay) {
  clearTimeout(state.traceTimer);
  state.traceTimer = setTimeout(loadTrace, delay);
}

async function loadTrace() {
  const token = ++state.traceToken;
  const el = $("chart-trace");
  const [start, stop] = state.window;
  const q = new URLSearchParams({ cell: state.cell, start, stop, points: Math.min(4000, 2 * chartWidth(el)),
    minimap: state.minimap ? "0" : "1" });
  $("trace-updating").hidden = false;
  try {
    const reply = await state.client.getJSON(`${API}/trace?${q}`);
    if (token !== state.traceToken) return; // a newer request superseded this one
    $("trace-updating").hidden = true;
    state.trace = reply;
    if (reply.minimap) state.minimap = reply.minimap;
    drawMinimap();
    drawTrace();
  } catch (err) {
    if (token === state.traceToken) {
      $("trace-updating").hidden = true;
      $("trace-stats").textContent = err.message;
    }
  }
}

function drawMinimap() {
  const canvas = $("trace-minimap");
  const m = state.minimap;
  const width = canvas.clientWidth || 400;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.floor(width * dpr);
  canvas.height = Math.floor(34 * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, 34);
  if (!m || !state.meta) return;
  const n = state.meta.num_timepoints;
  for (const r of state.subsets) {
    if (state.cell < r.cell_start || state.cell >= r.cell_stop) continue;
    ctx.fillStyle = "rgba(245, 130, 49, 0.25)";
    ctx.fillRect((r.t_start / n) * width, 0, ((r.t_stop - r.t_start) / n) * width, 34);
  }
  const lo = Math.min(...m.values);
  const hi = Math.max(...m.values);
  ctx.strokeStyle = COLORS.raw;
  ctx.lineWidth = 1;
  ctx.beginPath();
  m.values.forEach((v, i) => {
    const x = (m.index[i] / n) * width;
    const y = 32 - ((v - lo) / (hi - lo || 1)) * 30;
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
  const [a, b] = state.window;
  ctx.fillStyle = "rgba(37, 99, 235, 0.15)";
  ctx.strokeStyle = "#2563eb";
  ctx.fillRect((a / n) * width, 0, ((b - a) / n) * width, 34);
  ctx.strokeRect((a / n) * width, 0.5, ((b - a) / n) * width, 33);
}

function drawTrace() {
  const reply = state.trace;
  if (!reply) return;
  const fs = state.meta.sampling_rate_hz;
  const x = reply.index.map((i) => i / fs);
  const s = reply.series;
  // Raw in its own units on the left axis; filtered, fit and residual in the solver's
  // working units on a second scale; the deconvolved events as a band underneath.
  const series = [{ label: "Time (s)" }];
  const data = [x];
  const add = (key, label, opts) => {
    if (!s[key] || !state.traceVisible[key]) return;
    data.push(s[key]);
    series.push({ label, stroke: COLORS[key], width: 1.2, ...opts });
  };
  add("raw", "Raw", { scale: "raw" });
  add("filtered", "Filtered", { scale: "work" });
  add("fit", "Fit", { scale: "work", width: 1.6 });
  if (state.traceVisible.resid && s.filtered && s.fit) {
    data.push(s.filtered.map((v, i) => (v == null || s.fit[i] == null ? null : v - s.fit[i])));
    series.push({ label: "Resid", stroke: COLORS.resid, width: 1, scale: "resid" });
  }
  add("deconv", "Deconv", { scale: "events", fill: "rgba(0,158,115,.35)", paths: uPlot.paths.stepped({ align: 1 }) });
  const range = (key, bottom, top) => (u) => {
    const values = [];
    series.forEach((ser, i) => { if (i && ser.scale === key) for (const v of data[i]) if (v != null) values.push(v); });
    if (!values.length) return [0, 1];
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (hi === lo) hi = lo + 1;
    const span = hi - lo;
    return [lo - span * bottom, hi + span * top];
  };
  makeChart("chart-trace", {
    height: 230, legend: { show: false }, cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false }, raw: { range: range("raw", 0.45, 0.05) }, work: { range: range("work", 0.45, 0.05) },
      resid: { range: range("resid", 0.1, 2.5) }, events: { range: range("events", 0.02, 3.5) } },
    axes: [{ label: "Time (s)", size: 32, labelSize: 14 }, { scale: "raw", size: 50 }],
    series,
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 5) return;
        const a = Math.round(u.posToVal(u.select.left, "x") * fs);
        const b = Math.round(u.posToVal(u.select.left + u.select.width, "x") * fs);
        u.setSelect({ width: 0, height: 0 }, false);
        moveWindow(a, b - a);
      }],
    },
  }, data);
  const stats = [];
  const c = reply.cell_stats;
  const w = reply.window;
  if (c) {
    stats.push(`<span>alpha: <b>${fmt(c.alpha, 2)}</b></span>`, `<span>PVE: <b>${fmt(c.pve == null ? null : 100 * c.pve)}%</b></span>`,
      `<span>spikes: <b>${fmt(c.spikes, 0)}</b></span>`);
  } else if (w) {
    stats.push(`<span>window alpha: <b>${fmt(w.alpha, 2)}</b></span>`, `<span>window PVE: <b>${fmt(100 * w.pve)}%</b></span>`);
  } else {
    stats.push("<span>raw trace (fit and deconvolution appear once the run has a kernel)</span>");
  }
  if (w) stats.push(`<span>kernel τ_r ${fmt(ms(w.tau_rise))} ms, τ_d ${fmt(ms(w.tau_decay))} ms</span>`);
  stats.push(`<span>${(reply.start / fs).toFixed(1)}–${(reply.stop / fs).toFixed(1)} s (drag to zoom)</span>`);
  $("trace-stats").innerHTML = stats.join("");
}

// ------------------------------------------------------------------ start-up (B-01…B-04)
function renderAll() {
  renderRun();
  renderCharts();
  fillCellSelect();
  scheduleTrace(0);
}

async function main() {
  const bridge = getBridge();
  if (!bridge) {
    $("no-bridge").hidden = false;
    return;
  }
  const client = new BridgeClient(bridge);
  state.client = client;
  try {
    state.meta = await client.getJSON("/api/v1/metadata");
    state.info = await client.getJSON(`${API}/info`);
  } catch (err) {
    $("no-bridge").hidden = false;
    $("load-error").textContent = `Bridge: failed to load data: ${err.message}`;
    return;
  }
  client.startHeartbeat();
  let config = {};
  try {
    config = await client.getJSON("/api/v1/config");
  } catch {
    config = {}; // a config failure leaves the defaults (as the hosted app)
  }
  const { num_cells: cells, num_timepoints: frames, sampling_rate_hz: fs } = state.meta;
  $("version").textContent = `calab ${state.info.calab_version}`;
  $("info").textContent = `${cells} cells · ${frames} tp · ${fs} Hz · ${(frames / fs).toFixed(1)} s`
    + (state.info.backend ? ` · backend ${state.info.backend}` : "");
  $("dashboard").hidden = false;
  applyConfig({ ...state.info.config, ...Object.fromEntries(Object.entries(config).filter(([, v]) => v != null)) });
  state.autorun = !!config.autorun;
  const width = Math.min(frames, Math.max(20, Math.round(60 * fs)));
  state.window = [0, width];
  wireSettings();
  wireRaster();
  wireRun();
  wireTabs();
  wireTrace();
  wireScrubber();
  $("export-python").addEventListener("click", () => exportToPython(false));
  $("download").addEventListener("click", downloadResults);
  window.addEventListener("resize", () => { drawOverlay(); drawMinimap(); renderCharts(); drawTrace(); });
  await loadSubsets();
  renderAll();
  loadRaster().catch((err) => setError("run-error", err));
  if (state.autorun) await startRun();
  poll(true);
}

window.__cadecon = state; // for tests and debugging
main();
