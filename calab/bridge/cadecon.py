"""The built-in CaDecon page's server side: a ``run_cadecon`` session steered over HTTP.

The page (``pages/cadecon/``) never computes: it asks the bridge server, under
``/calab/v1/cadecon/<name>`` (secret-protected), to start, pause, resume and stop one
:func:`calab.run_cadecon` run on the server's backend, and reads what it shows in small
pieces (a decimated raster, one cell's window, the per-iteration state), so it stays
responsive on 1,000 cells × 100,000 frames.

Export to Python happens on the server (``POST export``): the finished
:class:`~calab.cadecon.CaDeconResult` is stored in the session exactly as the 0.3.0
two-POST export would store it (``activity`` float32 array, then the schema-2 JSON
payload, which completes the session), so nothing of the recording's size crosses the
browser, and :func:`calab.decon` returns the very result ``run_cadecon`` produced.
Hosted apps (``app_url=``) keep the 0.3.0 two-POST protocol unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import io
import json
import math
import threading
import uuid
import zipfile
from typing import Any

import numpy as np

from calab.bridge.catune import decimate_minmax
from calab.bridge.handshake import check_payload
from calab.bridge.limits import BOUNDS, RequestError, bound, check_flag, parse_json
from calab.bridge.registry import APPS, ComputeRoute, register_app
from calab.bridge.server import BridgeSession, json_response

__all__ = ["CaDeconRunner", "FIELD_DESCRIPTIONS", "bridge_payload", "reconvolve", "runner_for"]

#: session.cache keys
_RUNNER_KEY = "cadecon.runner"
CONFIG_KEY = "cadecon.config"
BACKEND_KEY = "cadecon.backend"
STEM_KEY = "cadecon.stem"
#: the page's progress statuses (spec bridge-and-apps.md §1.10)
_PAGE_STATUS = {"running": "running", "paused": "paused", "stopping": "stopping",
                "converged": "running", "done": "complete"}

#: one sentence per key of the results JSON in the ZIP (spec §5.2.9)
FIELD_DESCRIPTIONS = {
    "alphas": "Per-cell amplitude scale (one entry per row of activity).",
    "baselines": "Per-cell baseline of the filtered working trace.",
    "pves": "Per-cell proportion of variance explained by the fit (0-1).",
    "fs": "Sampling rate in Hz.",
    "tau_rise": "Rise time constant (s) of the kernel used for the final pass.",
    "tau_decay": "Decay time constant (s) of the kernel used for the final pass.",
    "beta": "Amplitude of the slow bi-exponential component.",
    "tau_rise_fast": "Rise time constant (s) of the fast component (0 when unused).",
    "tau_decay_fast": "Decay time constant (s) of the fast component (0 when unused).",
    "beta_fast": "Amplitude of the fast component (0 when unused).",
    "residual": "Median bi-exponential fit residual over subsets.",
    "h_free": "Free-form kernel of the first subset with a kernel, last iteration.",
    "num_iterations": "Refinement iterations run.",
    "converged": "Whether the kernel shape converged.",
    "converged_at_iteration": "First iteration of the stable streak (null if not converged).",
    "schema_version": "Results schema version (2).",
    "export_date": "ISO-8601 UTC time of the export.",
    "solver_version": "Version of the solver that produced the results (calab).",
    "calab_version": "calab version.",
}


def _finite_or_none(value: Any) -> Any:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def bridge_payload(result: Any, run_id: str | None = None) -> dict[str, Any]:
    """The schema-2 results JSON (spec §1.8) of a :class:`CaDeconResult`, in emission order.

    Taus are the ones used for the final pass; ``null`` when no fit was ever made.
    ``calab_run`` identifies the server-side run whose result this is.
    """
    meta = result.metadata

    def values(array: Any) -> list:
        return [_finite_or_none(v) for v in np.asarray(array, dtype=np.float64).tolist()]

    payload: dict[str, Any] = {
        "alphas": values(result.alphas),
        "baselines": values(result.baselines),
        "pves": values(result.pves),
        "fs": float(result.fs),
    }
    for key in ("tau_rise", "tau_decay", "beta", "tau_rise_fast", "tau_decay_fast", "beta_fast", "residual"):
        payload[key] = _finite_or_none(meta.get(key))
    payload["h_free"] = [float(v) for v in meta.get("h_free") or []]
    payload["num_iterations"] = int(meta.get("num_iterations", 0))
    payload["converged"] = bool(meta.get("converged", False))
    payload["converged_at_iteration"] = meta.get("converged_at_iteration")
    payload["schema_version"] = 2
    payload["export_date"] = meta.get("export_date") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    payload["solver_version"] = meta.get("solver_version")
    payload["calab_version"] = meta.get("calab_version")
    if run_id is not None:
        payload["calab_run"] = run_id
    return payload


def _ar2_peak(g1: float, g2: float, tau_decay: float, fs: float) -> float:
    """Impulse peak ``P`` of the AR(2) recursion (spec ``indeca.md`` §1.2)."""
    peak, c_prev, c_prev2 = 1.0, 1.0, 0.0
    for _ in range(1, math.ceil(5 * tau_decay * fs) + 10):
        c = g1 * c_prev + g2 * c_prev2
        if c > peak:
            peak = c
        if c < 0.95 * peak:
            break
        c_prev2, c_prev = c_prev, c
    return max(peak, 1.0)


def reconvolve(counts: np.ndarray, alpha: float, baseline: float, tau_rise: float, tau_decay: float,
               fs: float) -> np.ndarray:
    """Display fit ``alpha·(K counts) + baseline`` with the peak-normalised AR(2) operator.

    ``K`` has a one-sample delay and unit impulse peak (spec ``indeca.md`` §1.2), so the
    fit is in the units of the solver's working (filtered) trace.  ``counts``: ``(T,)``.
    """
    from scipy.signal import lfilter

    dt = 1.0 / fs
    d, r = math.exp(-dt / tau_decay), math.exp(-dt / tau_rise)
    g1, g2 = d + r, -d * r
    peak = _ar2_peak(g1, g2, tau_decay, fs)
    response = lfilter([0.0, 1.0 / peak], [1.0, -g1, -g2], np.asarray(counts, dtype=np.float64))
    return alpha * response + baseline


class CaDeconRunner:
    """One ``run_cadecon`` at a time on a session's traces, in a background thread.

    Attributes
    ----------
    status : str
        ``idle``, ``running``, ``paused``, ``stopping``, ``complete`` or ``error``.
    progress : CaDeconProgress or None
        The latest event.
    iterations : list of dict
        One record per finished iteration, from the progress events (taus, kernel RMSE,
        t_peak, FWHM); replaced by the loop's own ``history`` once the run is complete.
    result : CaDeconResult or None
        Set when the run ends (complete or stopped).
    """

    def __init__(self, session: BridgeSession) -> None:
        self.session = session
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.control: Any = None
        self.run_id: str | None = None
        self.settings: Any = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.status = "idle"
        self.progress: Any = None
        self.iterations: list[dict[str, Any]] = []
        self.result: Any = None
        self.summary: dict[str, Any] | None = None
        self.kernels: dict[str, Any] | None = None
        self.error: str | None = None
        self.exported = False

    # ------------------------------------------------------------------ control
    def base_config(self) -> Any:
        from calab.cadecon import DeconConfig

        config = self.session.cache.get(CONFIG_KEY)
        if config is None:  # a session not started by decon(): the served bridge config
            known = {k: v for k, v in self.session.config.items() if k in DeconConfig.model_fields}
            config = DeconConfig(**known)
        return config

    def start(self, overrides: dict[str, Any]) -> dict[str, Any]:
        from calab.cadecon import CaDeconControl, DeconConfig

        with self.lock:
            if self.status in ("running", "paused", "stopping"):
                raise _Conflict("a run is already active; stop it first")
            config = DeconConfig(**{**self.base_config().model_dump(), **overrides})
            self._reset_state()
            self.settings = config
            self.control = CaDeconControl()
            self.run_id = uuid.uuid4().hex
            self.status = "running"
            self.thread = threading.Thread(target=self._run, args=(config, self.control, self.run_id),
                                           name="calab-cadecon-run", daemon=True)
            self.thread.start()
            return {"run": self.run_id, "config": config.resolved().as_dict()}

    def _run(self, config: Any, control: Any, run_id: str) -> None:
        from calab.cadecon import run_cadecon

        try:
            result = run_cadecon(self.session.traces, float(self.session.fs), config=config,
                                 backend=self.session.cache.get(BACKEND_KEY), progress=self._on_progress,
                                 control=control)
        except Exception as exc:  # noqa: BLE001 - reported to the page as text
            with self.lock:
                if self.run_id == run_id:
                    self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
            return
        # What the page polls is computed once here (a sum over the whole activity matrix
        # on every poll would cost a large recording a fraction of a second each time).
        summary, kernels = _summary(result), _kernel_curves(result)
        iterations = _history_records(result.metadata.get("history") or [])
        with self.lock:
            if self.run_id != run_id:
                return
            self.result, self.summary, self.kernels = result, summary, kernels
            self.iterations = iterations
            self.status = "complete"
        self._post_progress()

    def _on_progress(self, event: Any) -> None:
        with self.lock:
            previous = self.progress
            self.progress = event
            if event.status == "paused":
                self.status = "paused"
            elif event.status == "stopping" or (self.control is not None and self.control.stopped):
                self.status = "stopping"
            elif self.status in ("paused", "running"):
                self.status = "running"
            # An iteration's merged kernel shows up in the first event after its merge.
            if (previous is not None and previous.phase == "merge" and event.tau_decay is not None
                    and event.phase != "merge"):
                self._record_iteration(previous.iteration, event)
        self._post_progress()

    def _record_iteration(self, iteration: int, event: Any) -> None:
        from calab.cadecon.shape import tau_to_shape

        if self.iterations and self.iterations[-1]["iteration"] == iteration:
            return
        t_peak, fwhm = tau_to_shape(event.tau_rise, event.tau_decay)
        self.iterations.append({"iteration": iteration, "tau_rise": event.tau_rise, "tau_decay": event.tau_decay,
                                "t_peak": t_peak, "fwhm": fwhm, "kernel_rmse": event.kernel_rmse})

    def _post_progress(self) -> None:
        """Mirror the state into ``session.progress`` (the §1.10 shape the terminal line reads)."""
        body = self.progress_body()
        if body is not None:
            self.session.progress = body

    def progress_body(self) -> dict[str, Any] | None:
        event = self.progress
        if event is None:
            return None
        phase = event.phase if event.phase in ("inference", "kernel-update", "merge", "finalization") else "idle"
        status = "complete" if self.status == "complete" else _PAGE_STATUS.get(self.status, "running")
        return {"iteration": event.iteration, "max_iterations": event.max_iterations, "phase": phase,
                "phase_progress": event.phase_progress, "tau_rise": event.tau_rise,
                "tau_decay": event.tau_decay, "status": status}

    def pause(self) -> None:
        with self.lock:
            if self.status != "running" or self.control is None:
                raise _Conflict("no running run to pause")
            self.control.pause()
            self.status = "paused"

    def resume(self) -> None:
        with self.lock:
            if self.status != "paused" or self.control is None:
                raise _Conflict("no paused run to resume")
            self.control.resume()
            self.status = "running"

    def stop(self, finalize: bool = True) -> None:
        with self.lock:
            if self.status not in ("running", "paused") or self.control is None:
                raise _Conflict("no active run to stop")
            self.control.stop(finalize=finalize)
            self.status = "stopping"

    def reset(self) -> None:
        with self.lock:
            if self.status in ("running", "paused", "stopping"):
                raise _Conflict("stop the run before resetting")
            self._reset_state()
            self.run_id = None

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop an active run without finalising and wait for its thread (session end)."""
        control, thread = self.control, self.thread
        if control is not None and not control.stopped and self.status in ("running", "paused", "stopping"):
            control.stop(finalize=False)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ views
    def state(self) -> dict[str, Any]:
        with self.lock:
            event = self.progress
            body: dict[str, Any] = {
                "status": self.status, "run": self.run_id, "error": self.error, "exported": self.exported,
                "progress": None if event is None else event._asdict(),
                "iterations": list(self.iterations),
            }
            if self.settings is not None:
                body["config"] = self.settings.resolved().as_dict()
            if self.summary is not None:
                body["summary"], body["kernels"] = self.summary, self.kernels
        return body


class _Conflict(Exception):
    pass


def _history_records(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-iteration chart data from the loop's history (subset kernels kept, shortened)."""
    records = []
    for item in history:
        subsets = []
        for sub in item.get("subsets") or []:
            if sub is None:
                subsets.append(None)
                continue
            subsets.append({k: sub.get(k) for k in ("subset", "tau_rise", "tau_decay", "beta", "fit_mode",
                                                    "tau_rise_fast", "tau_decay_fast", "beta_fast")}
                           | {"h_free": [round(float(v), 6) for v in sub.get("h_free") or []]})
        records.append({
            "iteration": item.get("iteration"), "tau_rise": item.get("tau_rise"), "tau_decay": item.get("tau_decay"),
            "t_peak": item.get("t_peak"), "fwhm": item.get("fwhm"), "kernel_rmse": item.get("kernel_rmse"),
            "median_pve": item.get("median_pve"), "kernel_fit_r2": item.get("kernel_fit_r2"),
            "trace_stability": item.get("trace_stability"), "n_degenerate": item.get("n_degenerate"),
            "converged": item.get("converged"), "subsets": subsets,
        })
    return records


def _summary(result: Any) -> dict[str, Any]:
    meta = result.metadata
    activity = np.asarray(result.activity)
    duration = activity.shape[-1] / float(result.fs) if activity.size else 0.0
    rates = activity.sum(axis=-1) / duration if duration > 0 else np.zeros(len(result.alphas))
    return {
        "tau_rise": meta.get("tau_rise"), "tau_decay": meta.get("tau_decay"),
        "num_iterations": meta.get("num_iterations"), "converged": meta.get("converged"),
        "converged_at_iteration": meta.get("converged_at_iteration"), "stopped": meta.get("stopped"),
        "finalized": meta.get("finalized"), "warnings": meta.get("warnings", []),
        "kernel_method": (meta.get("initialization") or {}).get("method"),
        "refined": (meta.get("initialization") or {}).get("refined"),
        "alphas": [_finite_or_none(v) for v in np.asarray(result.alphas).tolist()],
        "pves": [_finite_or_none(v) for v in np.asarray(result.pves).tolist()],
        "event_rates": [_finite_or_none(v) for v in np.asarray(rates, dtype=np.float64).tolist()],
        "cells_with_results": meta.get("cells_with_results"),
    }


def _kernel_curves(result: Any) -> dict[str, Any]:
    return {"slow": np.asarray(result.kernel_slow, dtype=np.float64).tolist(),
            "fast": np.asarray(result.kernel_fast, dtype=np.float64).tolist(),
            "fs": float(result.fs)}


def runner_for(session: BridgeSession) -> CaDeconRunner:
    """The session's runner (created on first use)."""
    with session.lock:
        runner = session.cache.get(_RUNNER_KEY)
        if runner is None:
            runner = session.cache[_RUNNER_KEY] = CaDeconRunner(session)
    return runner


# ------------------------------------------------------------------ raster
def raster_image(traces: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image uint8 (r, c), cell_edges (r+1,), frame_edges (c+1,))``: block means, per-cell z-scored.

    Each cell is centred on its median and scaled by its robust spread so that cells with
    different offsets share one colour scale; the scale is clipped to the 1st–99th
    percentile of the decimated image.
    """
    n_cells, n_frames = traces.shape
    rows, cols = max(1, min(rows, n_cells)), max(1, min(cols, n_frames))
    cell_edges = np.linspace(0, n_cells, rows + 1).round().astype(np.int64)
    frame_edges = np.linspace(0, n_frames, cols + 1).round().astype(np.int64)
    by_time = np.add.reduceat(traces, frame_edges[:-1], axis=1) / np.diff(frame_edges)
    centre = np.median(by_time, axis=1, keepdims=True)
    spread = np.median(np.abs(by_time - centre), axis=1, keepdims=True) * 1.4826
    spread = np.where(spread > 0, spread, np.maximum(by_time.std(axis=1, keepdims=True), 1e-12))
    z = (by_time - centre) / spread
    blocks = np.add.reduceat(z, cell_edges[:-1], axis=0) / np.diff(cell_edges)[:, None]
    lo, hi = np.percentile(blocks, [1, 99])
    scaled = np.clip((blocks - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return (scaled * 255).round().astype(np.uint8), cell_edges, frame_edges


# ------------------------------------------------------------------ HTTP handlers
_ROUTE = "/calab/v1/cadecon"


def _json_request(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    request = parse_json(body)
    if not isinstance(request, dict):
        raise RequestError("the request must be a JSON object")
    return request


def _field_kinds() -> dict[str, type]:
    """``DeconConfig`` field -> int, float or bool, for the fields that hold one of them."""
    import typing

    from calab.cadecon import DeconConfig

    kinds = {}
    for name, field in DeconConfig.model_fields.items():
        args = set(typing.get_args(field.annotation)) or {field.annotation}
        for kind in (bool, int, float):
            if kind in args:
                kinds[name] = kind
                break
    return kinds


def checked_start_config(config: Any) -> dict[str, Any]:
    """The ``config`` of a start request with every number checked (RequestError otherwise).

    Numbers must be JSON numbers (a string or ``true`` is refused rather than coerced) and
    flags JSON booleans; the settings that multiply work meet the bridge's caps in
    :data:`calab.bridge.limits.BOUNDS`; :class:`DeconConfig` then applies its own bounds.
    """
    if not isinstance(config, dict):
        raise RequestError("'config' must be an object of DeconConfig fields")
    route = f"POST {_ROUTE}/start"
    for name, kind in _field_kinds().items():
        value = config.get(name)
        if value is None:
            continue
        cap = BOUNDS.get((route, f"config.{name}"))
        if cap is not None:
            cap.check(value)
        elif kind is bool and not isinstance(value, bool):
            raise RequestError(f"'config.{name}' must be true or false, got {value!r:.40}")
        elif kind is not bool and (isinstance(value, bool) or not isinstance(value, (int, float))
                                   or (kind is int and not float(value).is_integer())):
            what = "an integer" if kind is int else "a number"
            raise RequestError(f"'config.{name}' must be {what}, got {value!r:.40}")
    return config


def _info(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    from calab.cadecon import NATIVE_DEFAULTS

    import calab

    runner = runner_for(session)
    n_cells, n_frames = session.traces.shape[:2]
    base = runner.base_config()
    return json_response(200, {
        "num_cells": int(n_cells), "num_timepoints": int(n_frames), "sampling_rate_hz": float(session.fs),
        "defaults": NATIVE_DEFAULTS, "config": base.model_dump(exclude_none=True), "bridge_config": session.config,
        "calab_version": calab.__version__, "backend": session.cache.get(BACKEND_KEY),
        "stem": session.cache.get(STEM_KEY, "cadecon"),
    })


def _subsets(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    from calab.cadecon import DeconConfig
    from calab.cadecon.subsets import place_subsets

    base = runner_for(session).base_config().model_dump()
    route = f"GET {_ROUTE}/subsets"
    overrides = {name: bound(route, name).from_query(query) for name in
                 ("num_subsets", "target_coverage", "aspect_ratio", "seed") if name in query}
    settings = DeconConfig(**{**base, **overrides}).resolved()
    # A Python caller's settings (decon(num_subsets=...)) meet the same caps as the page's.
    for name in ("num_subsets", "target_coverage", "aspect_ratio", "seed"):
        bound(route, name).check(getattr(settings, name))
    n_cells, n_frames = session.traces.shape[:2]
    rects = place_subsets(n_cells, n_frames, settings.num_subsets, settings.target_coverage,
                          settings.aspect_ratio, settings.seed)
    cells = np.zeros(n_cells, bool)
    frames = np.zeros(n_frames, bool)
    covered = 0
    for r in rects:
        cells[r.cell_start:r.cell_stop] = True
        frames[r.t_start:r.t_stop] = True
        covered += r.n_cells * r.n_frames
    return json_response(200, {
        "subsets": [r._asdict() for r in rects],
        "cells_fraction": float(cells.mean()), "time_fraction": float(frames.mean()),
        "total_fraction": float(covered / max(1, n_cells * n_frames)),
    })


def _raster(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    route = f"GET {_ROUTE}/raster"
    rows = bound(route, "rows").from_query(query, 300)
    cols = bound(route, "cols").from_query(query, 800)
    key = f"cadecon.raster.{rows}x{cols}"
    cached = session.cache.get(key)
    if cached is None:
        image, cell_edges, frame_edges = raster_image(session.traces, rows, cols)
        cached = session.cache[key] = {
            "rows": int(image.shape[0]), "cols": int(image.shape[1]),
            "cell_edges": cell_edges.tolist(), "frame_edges": frame_edges.tolist(),
            "data": base64.b64encode(image.tobytes()).decode("ascii"),
        }
    return json_response(200, cached)


def _control(action: str):
    def handler(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        runner = runner_for(session)
        request = _json_request(body)
        try:
            if action == "start":
                config = checked_start_config({} if request.get("config") is None else request["config"])
                # The Python caller's settings (decon(...)) meet the same caps as the page's.
                checked_start_config({**runner.base_config().model_dump(), **config})
                reply: dict[str, Any] = runner.start(config)
            elif action == "stop":
                runner.stop(check_flag(request, "finalize", True))
                reply = {}
            else:
                getattr(runner, action)()
                reply = {}
        except _Conflict as exc:
            return json_response(409, {"error": str(exc)})
        return json_response(200, {"status": runner.status, **reply})
    return handler


def _state(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    return json_response(200, runner_for(session).state())


def _window_solve(session: BridgeSession, runner: CaDeconRunner, cell: int, start: int, stop: int,
                  tau_rise: float, tau_decay: float) -> dict[str, np.ndarray | float]:
    """Solve one cell's padded window with the run's settings (display only)."""
    from calab.indeca import solve_traces
    from calab.kernel import compute_upsample_factor

    settings = (runner.settings or runner.base_config()).resolved()
    fs = float(session.fs)
    # Padding of five decay constants settles the filter and the fit at the window's edges
    # (CaTune's padded_window pads by the whole window width, three times the work here).
    pad = math.ceil(5 * tau_decay * fs)
    a, b = max(0, start - pad), min(session.traces.shape[1], stop + pad)
    window = session.traces[cell:cell + 1, a:b]
    warm = None
    with runner.lock:
        result = runner.result
    if result is not None:  # the run's own events are a good start: far fewer iterations
        warm = np.asarray(result.activity, dtype=np.float32)[cell:cell + 1, a:b]
    solved = solve_traces(window, tau_rise, tau_decay, fs,
                          upsample_factor=compute_upsample_factor(fs, settings.upsample_target),
                          max_iters=settings.trace_max_iters, tol=settings.trace_tol,
                          hp_enabled=settings.hp_filter_enabled, lp_enabled=settings.lp_filter_enabled,
                          lambda_=settings.lambda_, noise_constrained=settings.noise_constrained,
                          warm_counts=warm, backend=session.cache.get(BACKEND_KEY))
    counts = np.asarray(solved.s_counts, dtype=np.float64)[0]
    filtered = np.asarray(solved.filtered_trace, dtype=np.float64)[0]
    alpha, baseline = float(solved.alpha[0]), float(solved.baseline[0])
    fit = reconvolve(counts, alpha, baseline, tau_rise, tau_decay, fs)
    crop = slice(start - a, stop - a)
    return {"filtered": filtered[crop], "fit": fit[crop], "deconv": counts[crop], "alpha": alpha,
            "pve": float(solved.pve[0])}


def _trace(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    n_cells, n_frames = session.traces.shape[:2]
    route = f"GET {_ROUTE}/trace"
    cell = bound(route, "cell").from_query(query, high=n_cells - 1)
    start = bound(route, "start").from_query(query, 0, high=n_frames - 1)
    stop = bound(route, "stop").from_query(query, n_frames, low=start + 1, high=n_frames)
    points = bound(route, "points").from_query(query, 1200)
    for flag in ("solve", "minimap"):
        if query.get(flag, "0") not in ("0", "1"):
            raise RequestError(f"'{flag}' must be 0 or 1, got {query[flag]!r:.40}")
    runner = runner_for(session)
    raw = session.traces[cell, start:stop]
    series: dict[str, np.ndarray] = {"raw": raw}
    reply: dict[str, Any] = {"cell": cell, "start": start, "stop": stop}
    with runner.lock:
        result, event = runner.result, runner.progress
    taus = None
    if result is not None and result.metadata.get("tau_rise") is not None:
        taus = (float(result.metadata["tau_rise"]), float(result.metadata["tau_decay"]))
    elif event is not None and event.tau_decay is not None:
        taus = (float(event.tau_rise), float(event.tau_decay))
    if taus is not None and query.get("solve", "1") != "0":
        solved = _window_solve(session, runner, cell, start, stop, *taus)
        for name in ("filtered", "fit", "deconv"):
            series[name] = solved[name]  # type: ignore[assignment]
        reply["window"] = {"alpha": solved["alpha"], "pve": solved["pve"], "tau_rise": taus[0], "tau_decay": taus[1]}
    if result is not None:
        row = np.asarray(result.activity)[cell]
        series["deconv"] = row[start:stop].astype(np.float64)
        reply["cell_stats"] = {"alpha": _finite_or_none(result.alphas[cell]), "pve": _finite_or_none(result.pves[cell]),
                               "spikes": float(row.sum()), "baseline": _finite_or_none(result.baselines[cell])}
    names = list(series)
    index, decimated = decimate_minmax(np.stack([series[n] for n in names]), points)
    reply["index"] = (index + start).tolist()
    reply["series"] = {name: [_finite_or_none(v) for v in decimated[i].astype(np.float32).tolist()]
                       for i, name in enumerate(names)}
    if query.get("minimap") == "1":
        m_index, m_values = decimate_minmax(session.traces[cell:cell + 1], 1200)
        reply["minimap"] = {"index": m_index.tolist(), "values": m_values[0].astype(np.float32).tolist()}
    return json_response(200, reply)


def _finished(runner: CaDeconRunner) -> Any:
    with runner.lock:
        result, status = runner.result, runner.status
    if result is None or status != "complete":
        raise _Conflict("no results yet: export becomes available after convergence or a manual stop")
    return result


def _zip(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    runner = runner_for(session)
    try:
        result = _finished(runner)
    except _Conflict as exc:
        return json_response(409, {"error": str(exc)})
    payload = bridge_payload(result)
    payload["field_descriptions"] = FIELD_DESCRIPTIONS
    activity = io.BytesIO()
    np.save(activity, np.asarray(result.activity, dtype=np.float32), allow_pickle=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("activity.npy", activity.getvalue())
        archive.writestr("results.json", json.dumps(payload, indent=2))
    return 200, "application/zip", buffer.getvalue()


def _export(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    """Export to Python, server side: what the 0.3.0 two-POST export stores, then completion."""
    runner = runner_for(session)
    try:
        result = _finished(runner)
    except _Conflict as exc:
        return json_response(409, {"error": str(exc)})
    payload = bridge_payload(result, runner.run_id)
    warnings = check_payload(session.app, payload, None)
    with session.lock:
        session.arrays["activity"] = np.asarray(result.activity, dtype=np.float32)
        session.payload, session.warnings, session.error = payload, warnings, None
    with runner.lock:
        runner.exported = True
    session.done.set()
    return json_response(200, {"status": "ok", "warnings": warnings})


register_app(dataclasses.replace(APPS["cadecon"], page_dir="cadecon", compute={
    "info": ComputeRoute("GET", _info),
    "subsets": ComputeRoute("GET", _subsets),
    "raster": ComputeRoute("GET", _raster),
    "state": ComputeRoute("GET", _state),
    "trace": ComputeRoute("GET", _trace),
    "results.zip": ComputeRoute("GET", _zip),
    "start": ComputeRoute("POST", _control("start")),
    "pause": ComputeRoute("POST", _control("pause")),
    "resume": ComputeRoute("POST", _control("resume")),
    "stop": ComputeRoute("POST", _control("stop")),
    "reset": ComputeRoute("POST", _control("reset")),
    "export": ComputeRoute("POST", _export),
}), replace=True)
