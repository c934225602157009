"""Frame model of a counted spike, and a direct bi-exponential fit on it (a study tool).

Used by ``tools/cadecon_rise_study.py`` to find out why the CaDecon loop misses the rise
time (docs/cadecon.md, "Why the rise time is not recovered").  Not part of calab: tried
as the loop's kernel update, it made the rise collapse (see the study).

The app's update (spec ``indeca.md`` §6.4 step 3) estimates a free kernel at the frame rate
from the frame counts and fits a bi-exponential that starts at zero at lag 0, which
ignores how a frame sees a spike: the camera averages the calcium over the frame and the
spike sits anywhere inside its frame.  The model here does not:

``R[k] = E_o ∫_k^{k+1} T(t − o − δ) dt``, ``o ~ U[−½, ½)`` (where in its bin the spike
fell), ``T(t) = e^{−t/τd} − e^{−t/τr}`` for ``t ≥ 0`` (times in frames), ``δ`` the offset
of the counting bin's centre from the camera frame.  Each cell's model is its counts
convolved with ``R``; one amplitude for all cells and one offset per cell enter linearly
and are solved in closed form, ``(τr, τd[, δ])`` by Nelder–Mead on the residual.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["DirectFit", "fit_direct", "frame_response", "solver_shift"]

#: sub-positions of a spike inside its bin (midpoint rule over U[-1/2, 1/2))
_OFFSETS = (np.arange(16) + 0.5) / 16 - 0.5
#: the offset between solver bins and camera frames is searched within this many frames
_MAX_SHIFT = 1.5


class DirectFit(NamedTuple):
    """Result of :func:`fit_direct` (taus in seconds, ``shift`` in frames)."""

    tau_rise: float
    tau_decay: float
    shift: float
    amplitude: float
    residual: float
    r2: float


def _integrated_exponential(tau: float, start: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """``∫_k^{k+1} e^{−(t−s)/τ}·[t ≥ s] dt`` for spike times ``s`` (rows) and frames ``k`` (columns)."""
    s = start[:, None]
    k = lags[None, :].astype(np.float64)
    # Frames that end before the spike integrate nothing: both limits clip to the spike.
    lower = np.maximum(k, s) - s
    upper = np.maximum(k + 1.0 - s, 0.0)
    return tau * (np.exp(-lower / tau) - np.exp(-upper / tau)).clip(min=0.0)


def frame_response(tau_rise: float, tau_decay: float, shift: float, length: int) -> tuple[int, np.ndarray]:
    """Expected frame response of one counted spike.

    Parameters
    ----------
    tau_rise, tau_decay : float
        Time constants in frames (``0 < tau_rise < tau_decay``).
    shift : float
        Offset ``δ`` (frames) of the spike's bin centre from the frame it is counted in.
    length : int
        Frames after the counting frame to cover.

    Returns
    -------
    first_lag : int
        Lag of ``response[0]`` relative to the counting frame (negative when the bin can
        reach into the previous frame).
    response : np.ndarray, shape (length - first_lag,), float64
        Peak-normalised response (peak 1).
    """
    first_lag = int(np.floor(-0.5 + shift))
    lags = np.arange(first_lag, length)
    spikes = _OFFSETS + shift
    response = (_integrated_exponential(tau_decay, spikes, lags) - _integrated_exponential(tau_rise, spikes, lags)).mean(axis=0)
    peak = response.max()
    return first_lag, response / peak if peak > 0 else response


def _convolve(counts: np.ndarray, first_lag: int, response: np.ndarray) -> np.ndarray:
    """``model[:, i] = Σ_k response[k − first_lag]·counts[:, i − k]`` (causal beyond ``first_lag``)."""
    from scipy.signal import oaconvolve

    full = oaconvolve(counts, response[None, :], axes=1)
    n = counts.shape[1]
    start = -first_lag
    if start >= 0:
        return full[:, start:start + n]
    # first_lag > 0: the response starts later than the counting frame
    return np.concatenate([np.zeros((counts.shape[0], -start)), full[:, : n + start]], axis=1)


def solver_shift(upsample_factor: int) -> float:
    """Offset ``δ`` (frames) of a counted spike's bin centre from its camera frame.

    The trace solves fit the kernel to the linearly upsampled frames, on which a frame's
    value sits at the frame's start although the camera averaged the whole frame: the
    solver's spikes lead the calcium by half a frame.  A frame's count gathers the solver
    bins ``i·u − ⌊u/2⌋ … i·u − ⌊u/2⌋ + u − 1`` (spec §1.5, centred bins), whose mean lies
    ``((u − 1)/2 − ⌊u/2⌋)/u`` frames from ``i``.
    """
    u = max(int(upsample_factor), 1)
    return 0.5 + ((u - 1) / 2 - u // 2) / u


def fit_direct(traces: np.ndarray, counts: np.ndarray, fs: float, start: tuple[float, float],
               shift: float | None = None, max_evaluations: int = 400) -> DirectFit | None:
    """Fit ``(τr, τd)`` of the frame model to baseline-removed, amplitude-normalised frames.

    Parameters
    ----------
    traces : np.ndarray, shape (n_cells, T)
        Frames with the baseline removed, each divided by its cell's per-spike amplitude.
    counts : np.ndarray, shape (n_cells, T)
        Spike counts per frame (the trace solves' ``s_counts``).
    fs : float
        Frame rate (Hz).
    start : tuple of float
        Starting ``(tau_rise, tau_decay)`` in seconds.
    shift : float, optional
        Fix ``δ`` (frames, e.g. :func:`solver_shift`); fitted with the taus when None.
        Fitting it lets a fast rise trade against a later offset: on the loop's own counts
        the rise then collapses, so the loop fixes it.

    Returns
    -------
    DirectFit or None
        None when there is nothing to fit (no counts).
    """
    from scipy.optimize import minimize

    y = np.asarray(traces, dtype=np.float64)
    s = np.asarray(counts, dtype=np.float64)
    if y.size == 0 or not np.any(s > 0):
        return None
    y_centred = y - y.mean(axis=1, keepdims=True)
    total = float(np.sum(y_centred**2))
    if total <= 0:
        return None
    n = y.shape[1]

    fixed_shift = shift

    def unpack(params: np.ndarray) -> tuple[float, float, float]:
        log_rise, log_gap = params[0], params[1]
        offset = fixed_shift if fixed_shift is not None else float(np.clip(params[2], -_MAX_SHIFT, _MAX_SHIFT))
        rise = float(np.exp(log_rise))
        return rise, rise * (1.0 + float(np.exp(log_gap))), offset

    def solve(params: np.ndarray) -> tuple[float, float]:
        rise, decay, shift = unpack(params)
        length = min(n, int(np.ceil(8.0 * decay)) + 2)
        first_lag, response = frame_response(rise, decay, shift, length)
        model = _convolve(s, first_lag, response)
        model -= model.mean(axis=1, keepdims=True)
        energy = float(np.sum(model**2))
        if energy <= 0:
            return total, 0.0
        amplitude = max(float(np.sum(model * y_centred)) / energy, 0.0)
        return float(np.sum((y_centred - amplitude * model) ** 2)), amplitude

    def objective(params: np.ndarray) -> float:
        residual, _ = solve(params)
        if fixed_shift is None:
            residual += max(0.0, abs(float(params[2])) - _MAX_SHIFT) * total
        return residual

    rise0, decay0 = start[0] * fs, start[1] * fs
    rise0 = max(rise0, 0.05)
    decay0 = max(decay0, rise0 * 1.05)
    x0 = np.array([np.log(rise0), np.log(decay0 / rise0 - 1.0)] + ([] if shift is not None else [0.5]))
    simplex = np.vstack([x0, x0 + 0.4 * np.eye(x0.size)])
    best = minimize(objective, x0, method="Nelder-Mead",
                    options=dict(initial_simplex=simplex, maxfev=max_evaluations, xatol=1e-3, fatol=1e-9 * total))
    rise, decay, shift = unpack(best.x)
    residual, amplitude = solve(best.x)
    return DirectFit(rise / fs, decay / fs, shift, amplitude, residual, 1.0 - residual / total)
