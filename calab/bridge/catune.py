"""CaTune's compute endpoints: what the built-in page asks the server for.

The page never downloads the whole recording.  It asks for

* ``GET  /calab/v1/catune/overview``: per-cell variance ranking ("Top Active");
* ``GET  /calab/v1/catune/minimap?cell=i&bins=B``: min/max envelope of one whole trace;
* ``POST /calab/v1/catune/solve``: a batched FISTA solve of the visible window (plus
  padding) of the visible cells, returned decimated to about the chart's pixel width;
* ``GET  /calab/v1/catune/spectrum?cells=i,j,...``: periodograms for the Spectrum tab;
* ``GET  /calab/v1/catune/opening``: where the sliders start, the kernel learned from the
  data and a noise-scaled λ (computed once per session, in the background).

The solve runs :func:`calab.run_deconvolution_full` on the server's backend (the GPU
when there is one), all requested cells as one batch.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from calab.bridge.limits import MAX_CELLS_PER_REQUEST, RequestError, bound, check_flag, parse_json
from calab.bridge.registry import APPS, ComputeRoute, register_app
from calab.bridge.server import BridgeSession, json_response

__all__ = ["MAX_SOLVE_CELLS", "decimate_minmax", "opening_parameters", "padded_window", "solve_window",
           "start_opening"]

#: at most this many cells per solve request (the page shows up to 20 cards)
MAX_SOLVE_CELLS = MAX_CELLS_PER_REQUEST
#: at most this many samples per series in a reply
MAX_POINTS = 8192
#: padding cap: five minutes of samples
_PAD_CAP_S = 300.0


def padded_window(start: int, stop: int, n_timepoints: int, tau_decay: float, fs: float) -> tuple[int, int]:
    """``[a, b)`` solved for a visible ``[start, stop)``: padding max(window, 5·τd·fs), ≤ 5 min."""
    width = stop - start
    pad = min(max(width, math.ceil(5 * tau_decay * fs)), math.ceil(_PAD_CAP_S * fs))
    return max(0, start - pad), min(n_timepoints, stop + pad)


def decimate_minmax(values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation of ``(rows, n)`` to about ``points`` samples per row.

    Returns
    -------
    index : numpy.ndarray
        ``(m,)`` float64 sample positions (bin start for the min, bin middle for the max).
    decimated : numpy.ndarray
        ``(rows, m)`` values; each bin contributes its min and its max, in time order of
        neither (both are plotted at adjacent x), so spikes survive decimation.
    """
    rows, n = values.shape
    if n <= points:
        return np.arange(n, dtype=np.float64), values
    bins = max(1, points // 2)
    size = math.ceil(n / bins)
    bins = math.ceil(n / size)
    padded = np.full((rows, bins * size), np.nan)
    padded[:, :n] = values
    blocks = padded.reshape(rows, bins, size)
    lo, hi = np.nanmin(blocks, axis=2), np.nanmax(blocks, axis=2)
    out = np.empty((rows, 2 * bins))
    out[:, 0::2], out[:, 1::2] = lo, hi
    starts = np.arange(bins, dtype=np.float64) * size
    index = np.empty(2 * bins)
    index[0::2], index[1::2] = starts, starts + size / 2
    return index, out


def _snr(raw: np.ndarray) -> np.ndarray:
    """Peak SNR per row: (95th percentile − mean of lowest quartile) / std of lowest quartile."""
    q25, p95 = np.percentile(raw, [25, 95], axis=1)
    low = np.where(raw <= q25[:, None], raw, np.nan)
    mean, std = np.nanmean(low, axis=1), np.nanstd(low, axis=1)
    return np.where(std > 0, (p95 - mean) / np.where(std > 0, std, 1), 0.0)


def _round(values: np.ndarray) -> list:
    # float32 precision is plenty for display and halves the JSON size
    return np.asarray(values, dtype=np.float32).tolist()


def solve_window(traces: np.ndarray, fs: float, cells: list[int], start: int, stop: int,
                 tau_rise: float, tau_decay: float, lam: float, filter_enabled: bool,
                 points: int = 1200, max_iters: int = 2000, padded_series: bool = False) -> dict[str, Any]:
    """Solve the visible window of ``cells`` and return display-ready series.

    Parameters
    ----------
    traces : numpy.ndarray
        ``(n_cells, n_timepoints)`` float64 recording.
    cells : list of int
        0-based cell indices (at most :data:`MAX_SOLVE_CELLS`).
    start, stop : int
        Visible window in frames, ``0 <= start < stop <= n_timepoints``.
    tau_rise, tau_decay, lam, filter_enabled
        Kernel time constants (s), sparsity λ and the band-pass toggle.
    points : int
        Samples per series wanted (min/max decimated above that).
    max_iters : int
        FISTA iteration cap.
    padded_series : bool
        Return the series over the whole solved (padded) range, with ``points`` scaled up
        in proportion, so the page can pan and zoom inside it without a new solve.
        Statistics (R², sparsity) still describe the visible window.

    Returns
    -------
    dict
        ``{"start", "stop", "padded", "index", "decimated", "cells": [{cell, raw, filtered,
        fit, deconv, resid, raw_mean, raw_std, snr, r2, sparsity, iterations, converged}]}``
        with ``index`` the frame positions of the samples (shared by all series).
    """
    from calab.deconvolution import run_deconvolution_full
    from calab.filters import bandpass_filter

    n_cells, n_timepoints = traces.shape
    if not cells or len(cells) > MAX_SOLVE_CELLS:
        raise ValueError(f"cells must list 1 to {MAX_SOLVE_CELLS} cell indices")
    if any(not 0 <= c < n_cells for c in cells):
        raise ValueError(f"cell index out of range 0..{n_cells - 1}")
    start, stop = max(0, int(start)), min(n_timepoints, int(stop))
    if stop - start < 2:
        raise ValueError("the window must hold at least two samples")
    points = int(min(max(points, 16), MAX_POINTS))
    a, b = padded_window(start, stop, n_timepoints, tau_decay, fs)
    raw = traces[cells, a:b]
    working = bandpass_filter(raw, tau_rise, tau_decay, fs) if filter_enabled else raw
    began = time.perf_counter()
    # The banded (AR(2) recursion) operator: same iterations and numbers as the FFT mode
    # within float32 rounding, and several times faster on windows of a few thousand frames.
    result = run_deconvolution_full(working, fs, tau_rise, tau_decay, lam, max_iters=max_iters,
                                    conv_mode="banded", progress=False)
    solve_s = time.perf_counter() - began
    visible = slice(start - a, stop - a)
    raw_v, work_v = raw[:, visible], working[:, visible]
    fit_v = result.reconvolution[:, visible]
    deconv_v = result.activity[:, visible]
    resid_v = work_v - fit_v
    ss_res = np.sum(resid_v**2, axis=1)
    ss_tot = np.sum((work_v - work_v.mean(axis=1, keepdims=True)) ** 2, axis=1)
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
    snr = _snr(raw)
    if padded_series:
        shown = slice(0, b - a)
        points = int(min(MAX_POINTS, math.ceil(points * (b - a) / (stop - start))))
    else:
        shown = visible
    offset = a + shown.start
    recon, activity = result.reconvolution, result.activity
    stacked = np.concatenate([raw[:, shown], working[:, shown], recon[:, shown], activity[:, shown],
                              working[:, shown] - recon[:, shown]])
    index, decimated = decimate_minmax(stacked, points)
    k = len(cells)
    out_cells = []
    for i, cell in enumerate(cells):
        series = {name: _round(decimated[j * k + i]) for j, name in
                  enumerate(("raw", "filtered", "fit", "deconv", "resid"))}
        if not filter_enabled:
            series["filtered"] = None
        out_cells.append({
            "cell": int(cell), **series,
            "raw_mean": float(raw_v[i].mean()), "raw_std": float(raw_v[i].std()),
            "snr": float(snr[i]), "r2": float(r2[i]),
            "sparsity": float(np.mean(np.abs(deconv_v[i]) < 1e-6)),
            "iterations": int(result.iterations[i]), "converged": bool(result.converged[i]),
        })
    return {"start": start, "stop": stop, "padded": [a, b], "solve_ms": solve_s * 1e3,
            "index": (index + offset).tolist(), "decimated": bool(decimated.shape[1] < stacked.shape[1]),
            "cells": out_cells}


# ------------------------------------------------------------------ HTTP handlers
def _overview(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    ranking = session.cache.get("catune.ranking")
    if ranking is None:
        traces = session.traces
        # row blocks: np.var makes a temporary copy, which would double a big recording
        block = max(1, (1 << 25) // max(1, traces.shape[1] * 8))
        variance = np.concatenate([np.var(traces[i:i + block], axis=1) for i in range(0, len(traces), block)])
        ranking = np.argsort(-variance, kind="stable").tolist()
        session.cache["catune.ranking"] = ranking
    n_cells, n_timepoints = session.traces.shape[:2]
    return json_response(200, {"num_cells": n_cells, "num_timepoints": n_timepoints,
                               "sampling_rate_hz": session.fs, "ranking": ranking})


_ROUTE = "/calab/v1/catune"


def _minimap(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    route = f"GET {_ROUTE}/minimap"
    cell = bound(route, "cell").from_query(query, high=session.traces.shape[0] - 1)
    bins = bound(route, "bins").from_query(query, 600)
    row = session.traces[cell : cell + 1]
    index, values = decimate_minmax(row, 2 * bins)
    return json_response(200, {"cell": cell, "index": index.tolist(), "values": _round(values[0])})


def _cells(values: list, route: str, n_cells: int) -> list[int]:
    """Cell indices checked against the route's bounds (count and range)."""
    bound(route, "len(cells)").check(len(values))
    cell = bound(route, "cells")
    return [cell.check(value, high=n_cells - 1) for value in values]


def spectra(traces: np.ndarray, fs: float, cells: list[int], bins: int = 400) -> dict[str, Any]:
    """One-sided periodograms (Hann window, zero-padded to a power of two) in dB.

    Returns the active (first) cell's spectrum and the average over ``cells``, both
    averaged into ``bins`` log-spaced frequency bands for display.
    """
    rows = traces[cells]
    n = rows.shape[1]
    size = 1 << max(1, (n - 1).bit_length())
    window = np.hanning(n)
    power = np.abs(np.fft.rfft((rows - rows.mean(axis=1, keepdims=True)) * window, size, axis=1)) ** 2
    power /= fs * np.sum(window**2)
    freq = np.fft.rfftfreq(size, 1 / fs)
    edges = np.geomspace(max(freq[1], 1e-6), fs / 2, bins + 1)
    which = np.digitize(freq[1:], edges) - 1
    keep = (which >= 0) & (which < bins)
    counts = np.bincount(which[keep], minlength=bins)
    used = counts > 0

    def banded(p: np.ndarray) -> list:
        sums = np.bincount(which[keep], weights=p[1:][keep], minlength=bins)
        return _round(10 * np.log10(sums[used] / counts[used] + 1e-30))

    centres = np.sqrt(edges[:-1] * edges[1:])[used]
    return {"freq": centres.tolist(), "active": banded(power[0]), "average": banded(power.mean(axis=0))}


def _spectrum(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    route = f"GET {_ROUTE}/spectrum"
    n_cells = session.traces.shape[0]
    parts = [part for part in query.get("cells", "").split(",") if part.strip()]
    bound(route, "len(cells)").check(len(parts))
    cell = bound(route, "cells")
    cells = [cell.parse(part, high=n_cells - 1) for part in parts]
    return json_response(200, spectra(session.traces, float(session.fs), cells))


def _solve(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    request = parse_json(body)
    if not isinstance(request, dict):
        raise RequestError("the solve request must be a JSON object")
    route = f"POST {_ROUTE}/solve"
    n_cells, n_timepoints = session.traces.shape
    cells = request.get("cells")
    if not isinstance(cells, list):
        raise RequestError(f"'cells' must be a list of 1 to {MAX_SOLVE_CELLS} cell indices, got {cells!r:.40}")
    cells = _cells(cells, route, n_cells)
    if n_timepoints < 2:
        raise RequestError("the recording has fewer than two samples: nothing to solve")
    start = bound(route, "start").from_body(request, high=n_timepoints - 2)
    stop = bound(route, "stop").from_body(request, low=start + 2, high=n_timepoints)
    tau_rise = bound(route, "tau_rise").from_body(request)
    tau_decay = bound(route, "tau_decay").from_body(request)
    if not tau_rise < tau_decay:
        raise RequestError(f"'tau_decay' ({tau_decay:g} s) must exceed 'tau_rise' ({tau_rise:g} s)")
    reply = solve_window(
        session.traces, float(session.fs), cells, start, stop, tau_rise, tau_decay,
        bound(route, "lambda").from_body(request), check_flag(request, "filter_enabled", False),
        bound(route, "points").from_body(request, 1200), bound(route, "max_iters").from_body(request, 2000),
        check_flag(request, "padded_series", False),
    )
    request_id = request.get("request_id")
    reply["request_id"] = request_id if isinstance(request_id, (str, int, float)) else None
    return json_response(200, reply)





# ------------------------------------------------------------------ the opening view
#: The opening kernel is learned from at most this many cells, evenly spaced, so that a
#: recording of tens of thousands of cells still opens in seconds.
OPENING_CELLS = 500
#: The opening λ in units of the traces' noise SD (the rule of thumb; tests/test_lambda_rule.py).
OPENING_LAMBDA_PER_NOISE = 1.0


def opening_parameters(traces: np.ndarray, fs: float, *, backend: str | None = None) -> dict[str, Any]:
    """Where the page's sliders start: the kernel the data give, a noise-scaled λ, the filter.

    The kernel is the one :func:`calab.run_cadecon` starts from, and with its default
    settings also returns (:func:`calab.cadecon.starting_kernel`), learned from up to
    :data:`OPENING_CELLS` evenly spaced cells.  λ is :data:`OPENING_LAMBDA_PER_NOISE` times
    the median noise SD of those cells (:func:`calab.noise_sd`), and the band-pass filter is
    on when ``run_cadecon``'s default settings filter (high- and low-pass both on).

    Returns
    -------
    dict
        ``{"tau_rise", "tau_decay", "lambda", "filter_enabled", "method", "cells",
        "warnings"}``, or ``{"error": message}`` when the data give no kernel (the page
        then keeps its fixed defaults).
    """
    from calab.cadecon import NATIVE_DEFAULTS, starting_kernel
    from calab.noise import noise_sd

    n_cells = traces.shape[0]
    index = np.unique(np.linspace(0, n_cells - 1, min(n_cells, OPENING_CELLS)).round().astype(int))
    rows = np.asarray(traces[index], dtype=np.float64)
    try:
        (tau_rise, tau_decay), info = starting_kernel(rows, fs, backend=backend, quiet=True)
    except (ValueError, TypeError) as exc:
        return {"error": f"no kernel could be learned from these traces: {exc}"}
    if info.get("fallback"):
        return {"error": "no activity to learn a kernel from", "warnings": info.get("warnings", [])}
    noise = np.atleast_1d(noise_sd(rows))
    return {
        "tau_rise": float(tau_rise),
        "tau_decay": float(tau_decay),
        "lambda": float(OPENING_LAMBDA_PER_NOISE * np.median(noise)),
        "filter_enabled": bool(NATIVE_DEFAULTS["hp_filter_enabled"] and NATIVE_DEFAULTS["lp_filter_enabled"]),
        "method": info.get("method"),
        "cells": int(index.size),
        "warnings": list(info.get("warnings", [])),
    }


def start_opening(session: BridgeSession) -> Future:
    """Begin computing the opening view in the background (once per session); its future."""
    with session.lock:
        future = session.cache.get("catune.opening")
        if future is None:
            future = Future()
            session.cache["catune.opening"] = future
            started = True
        else:
            started = False
    if started:
        def compute() -> None:
            try:
                future.set_result(opening_parameters(session.traces, float(session.fs)))
            except Exception as exc:  # noqa: BLE001 - reported to the page, which keeps its defaults
                future.set_result({"error": f"{type(exc).__name__}: {exc}"})

        threading.Thread(target=compute, name="catune-opening", daemon=True).start()
    return future


def _opening(session: BridgeSession, query: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    return json_response(200, start_opening(session).result(timeout=_OPENING_TIMEOUT_S))


#: The page waits at most this long for the opening view before keeping its defaults.
_OPENING_TIMEOUT_S = 600.0


register_app(dataclasses.replace(APPS["catune"], page_dir="catune", compute={
    "overview": ComputeRoute("GET", _overview),
    "minimap": ComputeRoute("GET", _minimap),
    "solve": ComputeRoute("POST", _solve),
    "spectrum": ComputeRoute("GET", _spectrum),
    "opening": ComputeRoute("GET", _opening),
}), replace=True)
