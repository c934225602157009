"""Vectorised simulation engine (the "fast" mode of the spec, NumPy + SciPy).

The pipeline per cell, following the reference (``docs/differences.md`` lists where the
random stream differs):

1. per-cell parameters (alpha, taus, snr, Markov rate, Kd, drift, bleaching), all cells at
   once (:func:`draw_cell_parameters`);
2. spike events at ``spike_sim_hz`` without a dense high-resolution array: Markov dwell
   times / Bernoulli processes by geometric gaps (:func:`spike_events`);
3. clean calcium at the imaging rate *without* high-resolution convolution: the kernel is a
   difference of two exponentials, so the bin-averaged convolution is an exact
   first-order recursion per exponential driven by per-frame event sums
   (:func:`calcium_from_events`);
4. alpha, saturation, drift, photobleaching and noise, broadcast over ``(cells, frames)``
   (:func:`observe`).

Work is ``O(cells * frames + spikes)``.  Cells are processed in chunks (bounded memory, cache
friendly); thanks to the counter-based RNG the chunking never changes the output.  The
functions take plain arrays and a :class:`~calab.simulation._rng.CounterRNG` so that they can
be ported to another array library later.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.special import expit

from calab.simulation._rng import CounterRNG, Stream
from calab.simulation.config import (
    MarkovConfig,
    PoissonConfig,
    RandomWalkDrift,
    SimulationConfig,
    SinusoidalDrift,
)

__all__ = [
    "LN_1E6",
    "MAX_KERNEL_SAMPLES",
    "MAX_HIGH_RES_BINS",
    "MAX_CV",
    "CellParameters",
    "SimulationArrays",
    "bins_per_frame",
    "kernel_length",
    "kernel_peak",
    "draw_cell_parameters",
    "spike_events",
    "calcium_from_events",
    "run",
]

#: ``ln(1e6)``: the kernel is truncated where its decay has fallen to 1e-6.
LN_1E6 = math.log(1e6)
#: Longest kernel (samples at ``spike_sim_hz``) the reference accepts; sets the tau cap.
MAX_KERNEL_SAMPLES = 2**20
#: Most high-resolution bins per cell (``num_timepoints * bins_per_frame``), as the reference.
MAX_HIGH_RES_BINS = 2**26
#: Largest accepted ``_cv`` value (as the reference engine).
MAX_CV = 10.0

# Cells per chunk are chosen so that a chunk holds about this many frames / high-res bins:
# (cells, frames) float64 temporaries then stay ~2 MB and ragged event arrays <= 16 MB even
# in the dense worst case (Poisson rate near spike_sim_hz).  Small temporaries are reused
# by the allocator and stay in cache; large ones are fresh mmaps that page-fault on every
# chunk, which measured slower than the arithmetic itself.
_CHUNK_FRAMES = 2**18
_CHUNK_HIGH_RES_BINS = 2**21
# Above this mean, shot-noise counts use the reference's normal approximation.
_SHOT_NORMAL_APPROX_LAMBDA = 30.0
# A rise/decay component whose per-frame factor exp(-b*dt/tau) is below e^-30 (< 1e-13)
# cannot carry over to the next frame in float64 terms; it is treated as exactly zero.
_NEGLIGIBLE_LOG_DECAY = 30.0
# Blocked scan: keep r^-k below e^600 (float64 overflows near e^709).
_MAX_SCAN_LOG_GROWTH = 600.0


# =========================================================================== small helpers


def bins_per_frame(fs_hz: float, spike_sim_hz: float) -> int:
    """High-resolution bins per imaging frame: ``max(1, round(spike_sim_hz / fs_hz))``.

    Rounds halves away from zero (the ratio is positive, so ``floor(x + 0.5)``), as the
    reference: 2.5 -> 3, 1/3 -> 1.
    """
    return max(1, math.floor(spike_sim_hz / fs_hz + 0.5))


def kernel_length(tau_decay_s: float | np.ndarray, spike_sim_hz: float) -> np.ndarray:
    """Kernel samples of the reference: ``max(2, ceil(ln(1e6) * tau_decay * spike_sim_hz))``."""
    return np.maximum(2, np.ceil(LN_1E6 * np.asarray(tau_decay_s) * spike_sim_hz)).astype(
        np.int64
    )


def _kernel_taus(tau_rise: np.ndarray, tau_decay: np.ndarray) -> np.ndarray:
    """Rise constants used inside the kernel: nearly equal taus fall back to ``decay / 2``.

    (The difference of exponentials vanishes when the taus coincide; the reference guards
    ``|tr - td| < 1e-6 * max(td, tr)`` the same way.  Ground truth keeps the drawn taus.)
    """
    nearly_equal = np.abs(tau_rise - tau_decay) < 1e-6 * np.maximum(
        np.maximum(tau_decay, tau_rise), 1e-12
    )
    return np.where(nearly_equal, tau_decay / 2.0, tau_rise)


def kernel_peak(
    tau_rise: np.ndarray, tau_decay: np.ndarray, spike_sim_hz: float
) -> np.ndarray:
    """Discrete maximum of ``exp(-i*dt/td) - exp(-i*dt/tr)`` over samples ``i = 0..L-1``.

    The continuous maximum sits at ``t* = ln(td/tr) * tr*td / (td - tr)``; the sequence is
    unimodal, so the discrete maximum is at ``floor(t*/dt)`` or the next sample (never at
    ``i = 0``, where the kernel is 0).  This is the reference's normaliser (the sampled, not
    the analytic, peak), so a single spike's kernel peaks at exactly 1.

    Parameters
    ----------
    tau_rise, tau_decay : ndarray of float64, shape (C,)
        Kernel time constants (s), ``tau_rise < tau_decay`` after :func:`_kernel_taus`.
    spike_sim_hz : float

    Returns
    -------
    ndarray of float64, shape (C,)
    """
    tau_rise = np.asarray(tau_rise, dtype=np.float64)
    tau_decay = np.asarray(tau_decay, dtype=np.float64)
    t_peak = np.log(tau_decay / tau_rise) * tau_rise * tau_decay / (tau_decay - tau_rise)
    last = kernel_length(tau_decay, spike_sim_hz) - 1
    first = np.clip(np.floor(t_peak * spike_sim_hz), 1, last)
    candidates = np.stack([first, np.minimum(first + 1, last)])
    t = candidates / spike_sim_hz
    values = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    return values.max(axis=0)


def _vary(
    rng: CounterRNG, stream: Stream, cells: np.ndarray, nominal: float, cv: float
) -> np.ndarray:
    """Per-cell ``nominal * exp(cv * N(0,1))`` (log-normal, median = nominal); ``cv == 0``
    gives the nominal value for every cell."""
    if cv <= 0.0:
        return np.full(cells.shape, float(nominal))
    return nominal * np.exp(cv * rng.normal(rng.keys(stream, cells), 0))


# =========================================================================== parameters


@dataclass(frozen=True)
class CellParameters:
    """Per-cell parameters, each an ndarray of float64 with shape ``(C,)``.

    ``tau_rise``/``tau_decay`` are the reported (clamped) constants; ``kernel_tau_rise`` is
    the rise constant actually used in the kernel (see :func:`_kernel_taus`).  Fields that a
    config does not use hold their nominal values (or zeros).
    """

    alpha: np.ndarray
    tau_rise: np.ndarray
    tau_decay: np.ndarray
    kernel_tau_rise: np.ndarray
    snr: np.ndarray
    p_silent_to_active: np.ndarray
    k_d: np.ndarray
    drift_scale: np.ndarray  # RW: step_std_fraction; sinusoid: amplitude_fraction
    drift_cycles: np.ndarray  # sinusoid only
    bleach_amplitude: np.ndarray


def draw_cell_parameters(
    config: SimulationConfig, rng: CounterRNG, cells: np.ndarray
) -> CellParameters:
    """Draw the per-cell parameters of the given (global) cell indices.

    Parameters
    ----------
    config : SimulationConfig
        A validated config.
    rng : CounterRNG
    cells : ndarray of int64, shape (C,)

    Returns
    -------
    CellParameters
    """
    cells = np.asarray(cells, dtype=np.int64)
    fsim = config.spike_sim_hz

    if config.alpha_cv > 0:
        # Log-normal with mean alpha_mean and true CV alpha_cv.
        log_var = math.log1p(config.alpha_cv**2)
        log_mean = math.log(config.alpha_mean) - log_var / 2.0
        alpha = np.exp(
            log_mean + math.sqrt(log_var) * rng.normal(rng.keys(Stream.ALPHA, cells), 0)
        )
    else:
        alpha = np.full(cells.shape, config.alpha_mean)

    kernel = config.kernel
    tau_rise = _vary(rng, Stream.TAU_RISE, cells, kernel.tau_rise_s, kernel.tau_rise_cv)
    tau_decay = _vary(rng, Stream.TAU_DECAY, cells, kernel.tau_decay_s, kernel.tau_decay_cv)
    # Clamps of calab 0.3.0: the kernel stays <= 2^20 samples, and the rise stays faster
    # than the decay (the reported taus are the clamped ones).
    tau_decay = np.minimum(tau_decay, (MAX_KERNEL_SAMPLES - 1) / (fsim * LN_1E6))
    tau_rise = np.where(tau_rise >= tau_decay, tau_decay / 2.0, tau_rise)

    noise = config.noise
    if noise.snr_spread > 0:
        u = rng.uniform(rng.keys(Stream.SNR, cells), 0)
        snr = np.maximum(1.0, noise.snr + (2.0 * u - 1.0) * noise.snr_spread)
    else:
        snr = np.full(cells.shape, noise.snr)

    spike_model = config.spike_model
    if isinstance(spike_model, MarkovConfig):
        p_silent_to_active = np.minimum(
            1.0,
            _vary(
                rng,
                Stream.P_SILENT_TO_ACTIVE,
                cells,
                spike_model.p_silent_to_active,
                spike_model.p_silent_to_active_cv,
            ),
        )
    else:
        p_silent_to_active = np.zeros(cells.shape)

    saturation = config.saturation
    k_d = _vary(rng, Stream.K_D, cells, saturation.k_d, saturation.k_d_cv)

    drift = config.drift
    if isinstance(drift, RandomWalkDrift):
        drift_scale = _vary(
            rng, Stream.DRIFT_PARAMETER, cells, drift.step_std_fraction, drift.step_std_cv
        )
        drift_cycles = np.zeros(cells.shape)
    else:
        drift_scale = _vary(
            rng, Stream.DRIFT_PARAMETER, cells, drift.amplitude_fraction, drift.amplitude_cv
        )
        u = rng.uniform(rng.keys(Stream.DRIFT_CYCLES, cells), 0)
        drift_cycles = drift.cycles_min + u * (drift.cycles_max - drift.cycles_min)

    bleaching = config.photobleaching
    bleach_amplitude = np.minimum(
        1.0,
        _vary(
            rng,
            Stream.BLEACH_AMPLITUDE,
            cells,
            bleaching.amplitude_fraction,
            bleaching.amplitude_cv,
        ),
    )

    return CellParameters(
        alpha=alpha,
        tau_rise=tau_rise,
        tau_decay=tau_decay,
        kernel_tau_rise=_kernel_taus(tau_rise, tau_decay),
        snr=snr,
        p_silent_to_active=p_silent_to_active,
        k_d=k_d,
        drift_scale=drift_scale,
        drift_cycles=drift_cycles,
        bleach_amplitude=bleach_amplitude,
    )


# =========================================================================== spikes


def _bernoulli_process(
    rng: CounterRNG, keys: np.ndarray, p: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of successes of independent Bernoulli(p) trials on bins ``0..n_bins-1``.

    Drawn as cumulative geometric gaps (counter ``k`` = ``k``-th gap of the cell), so the
    work is proportional to the number of successes, and the positions of a cell do not
    depend on ``n_bins`` beyond truncation.  Cells whose gaps have not yet covered the
    range get another round of gaps (rarely needed: the first round draws the expected
    count plus a 5-sigma margin).

    Parameters
    ----------
    keys : ndarray of uint64, shape (C,)
        Per-cell stream keys.
    p : ndarray of float64, shape (C,)
        Success probability per bin (0 = never, >= 1 = every bin).
    n_bins : int

    Returns
    -------
    rows, positions : ndarray of int64, shape (S,)
        Row (index into ``keys``) and bin of each success, ascending within each row.
    """
    n_rows = keys.shape[0]
    pending = np.arange(n_rows)
    last_position = np.full(n_rows, -1, dtype=np.int64)
    next_counter = np.zeros(n_rows, dtype=np.int64)
    rows_out: list[np.ndarray] = []
    positions_out: list[np.ndarray] = []
    while pending.size:
        remaining = (n_bins - 1 - last_position[pending]).astype(np.float64)
        expected = remaining * np.clip(p[pending], 0.0, 1.0)
        n_gaps = int(np.ceil(np.max(expected + 5.0 * np.sqrt(expected) + 8.0)))
        n_gaps = min(n_gaps, int(remaining.max()) + 1)
        counters = next_counter[pending, None] + np.arange(n_gaps)[None, :]
        gaps = rng.geometric(keys[pending, None], counters, p[pending, None], cap=n_bins + 1)
        positions = np.cumsum(gaps, axis=1)
        positions += last_position[pending, None]
        inside = positions < n_bins
        rows_out.append(np.broadcast_to(pending[:, None], positions.shape)[inside])
        positions_out.append(positions[inside])
        last_position[pending] = positions[:, -1]
        next_counter[pending] += n_gaps
        pending = pending[positions[:, -1] < n_bins - 1]
    return _concat_sorted(rows_out, positions_out, n_bins=n_bins)


def _concat_sorted(
    rows_parts: list[np.ndarray], key_parts: list[np.ndarray], *other_parts: list[np.ndarray],
    n_bins: int,
) -> tuple[np.ndarray, ...]:
    """Concatenate ragged per-round pieces and sort them by (row, key).

    Returns ``rows, keys, *others`` as int64 arrays in that order.
    """
    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    rows, keys = cat(rows_parts), cat(key_parts)
    order = np.argsort(rows * (n_bins + 1) + keys, kind="stable")
    return (rows[order], keys[order], *(cat(parts)[order] for parts in other_parts))


def _markov_active_intervals(
    rng: CounterRNG,
    silent_keys: np.ndarray,
    active_keys: np.ndarray,
    p_activate: np.ndarray,
    p_deactivate: np.ndarray,
    n_bins: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Active intervals of the two-state chain on bins ``0..n_bins-1``.

    The chain starts silent; in every bin it first transitions (silent -> active with
    probability ``a``, active -> silent with ``d``), so activation ``j`` starts at
    ``sum(S_0..S_j) + sum(D_0..D_{j-1}) - 1`` and lasts ``D_j`` bins, with silent dwells
    ``S ~ Geom(a)`` and active dwells ``D ~ Geom(d)`` (counter ``j`` of each stream).

    Returns
    -------
    rows, starts, stops : ndarray of int64, shape (I,)
        Row, first bin and one-past-last bin (clipped to ``n_bins``) of each interval,
        sorted by row then start; intervals of a row never overlap.
    """
    n_rows = silent_keys.shape[0]
    pending = np.arange(n_rows)
    # Start "before bin 0" so that the first activation lands on bin S_0 - 1.
    last_stop = np.full(n_rows, -1, dtype=np.int64)
    next_counter = np.zeros(n_rows, dtype=np.int64)
    # Mean bins per silent+active cycle is 1/a + 1/d; expected cycles = bins * a*d/(a+d).
    a_plus_d = p_activate + p_deactivate
    cycles_per_bin = np.divide(
        p_activate * p_deactivate, a_plus_d, out=np.zeros(n_rows), where=a_plus_d > 0
    )
    rows_out, starts_out, stops_out = [], [], []
    while pending.size:
        remaining = (n_bins - 1 - last_stop[pending]).astype(np.float64)
        expected = remaining * cycles_per_bin[pending]
        n_cycles = int(np.ceil(np.max(expected + 5.0 * np.sqrt(expected) + 4.0)))
        n_cycles = min(n_cycles, int(remaining.max()) // 2 + 2)
        counters = next_counter[pending, None] + np.arange(n_cycles)[None, :]
        silent = rng.geometric(
            silent_keys[pending, None], counters, p_activate[pending, None], cap=n_bins + 1
        )
        active = rng.geometric(
            active_keys[pending, None], counters, p_deactivate[pending, None], cap=n_bins + 1
        )
        stops = np.cumsum(silent + active, axis=1)
        stops += last_stop[pending, None]
        starts = stops - active
        keep = starts < n_bins
        rows_out.append(np.broadcast_to(pending[:, None], stops.shape)[keep])
        starts_out.append(starts[keep])
        stops_out.append(np.minimum(stops[keep], n_bins))
        last_stop[pending] = stops[:, -1]
        next_counter[pending] += n_cycles
        pending = pending[stops[:, -1] < n_bins - 1]
    return _concat_sorted(rows_out, starts_out, stops_out, n_bins=n_bins)


def spike_events(
    config: SimulationConfig,
    rng: CounterRNG,
    cells: np.ndarray,
    params: CellParameters,
) -> tuple[np.ndarray, np.ndarray]:
    """High-resolution spike events (at most one per bin) of the given cells.

    Parameters
    ----------
    config : SimulationConfig
    rng : CounterRNG
    cells : ndarray of int64, shape (C,)
        Global cell indices.
    params : CellParameters
        Parameters of exactly these cells.

    Returns
    -------
    rows, bins : ndarray of int64, shape (S,)
        Row (position in ``cells``) and high-resolution bin (``0..num_timepoints*b - 1``)
        of every spike.  Bin ``s`` lies in frame ``s // b`` at sub-frame offset ``s % b``.
    """
    b = bins_per_frame(config.fs_hz, config.spike_sim_hz)
    n_bins = config.num_timepoints * b
    n_rows = cells.shape[0]
    model = config.spike_model

    if isinstance(model, PoissonConfig):
        # Bernoulli per bin with p = rate / spike_sim_hz (the reference's convention, kept
        # even when spike_sim_hz / fs_hz is not an integer); p >= 1 spikes in every bin.
        p = np.full(n_rows, min(1.0, model.rate_hz / config.spike_sim_hz))
        return _bernoulli_process(rng, rng.keys(Stream.POISSON_SPIKES, cells), p, n_bins)

    assert isinstance(model, MarkovConfig)
    # Transition probabilities are per frame: convert to per bin so that b bins compound to
    # the per-frame value.  Spike probabilities are per bin and are *not* converted.
    p_activate = _per_bin(params.p_silent_to_active, b)
    p_deactivate = _per_bin(np.full(n_rows, model.p_active_to_silent), b)
    interval_rows, starts, stops = _markov_active_intervals(
        rng,
        rng.keys(Stream.MARKOV_SILENT_DWELL, cells),
        rng.keys(Stream.MARKOV_ACTIVE_DWELL, cells),
        p_activate,
        p_deactivate,
        n_bins,
    )

    # Active-state spikes: one uniform per active bin, keyed by the bin itself.
    lengths = stops - starts
    active_rows = np.repeat(interval_rows, lengths)
    first_of_interval = np.cumsum(lengths) - lengths
    active_bins = np.repeat(starts - first_of_interval, lengths) + np.arange(lengths.sum())
    if model.p_spike_when_active >= 1.0:
        fired = np.ones(active_bins.shape, dtype=bool)
    elif model.p_spike_when_active <= 0.0:
        fired = np.zeros(active_bins.shape, dtype=bool)
    else:
        active_keys = rng.keys(Stream.ACTIVE_SPIKES, cells)
        fired = rng.uniform(active_keys[active_rows], active_bins) < model.p_spike_when_active

    # Silent-state spikes: a Bernoulli process over all bins, minus the bins that are active.
    silent_rows, silent_bins = _bernoulli_process(
        rng,
        rng.keys(Stream.SILENT_SPIKES, cells),
        np.full(n_rows, model.p_spike_when_silent),
        n_bins,
    )
    stride = n_bins + 1
    interval_starts = interval_rows * stride + starts
    event_codes = silent_rows * stride + silent_bins
    containing = np.searchsorted(interval_starts, event_codes, side="right") - 1
    in_active = containing >= 0
    in_active[in_active] = (
        event_codes[in_active]
        < interval_rows[containing[in_active]] * stride + stops[containing[in_active]]
    )
    rows = np.concatenate([active_rows[fired], silent_rows[~in_active]])
    bins = np.concatenate([active_bins[fired], silent_bins[~in_active]])
    return rows.astype(np.int64), bins.astype(np.int64)


def _per_bin(p_per_frame: np.ndarray, b: int) -> np.ndarray:
    """``1 - (1 - p)^(1/b)``: the per-bin probability that compounds to ``p`` per frame."""
    p_per_frame = np.asarray(p_per_frame, dtype=np.float64)
    certain = p_per_frame >= 1.0
    with np.errstate(divide="ignore"):
        per_bin = -np.expm1(np.log1p(-np.where(certain, 0.0, p_per_frame)) / b)
    return np.where(certain, 1.0, per_bin)


# =========================================================================== calcium


def _lagged_one_pole(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``z[:, f] = sum_{g < f} x[:, g] * r^(f - 1 - g)``, i.e. ``z_f = r z_{f-1} + x_{f-1}``.

    Parameters
    ----------
    x : ndarray of float64, shape (C, n)
        Non-negative inputs (the blocked scan's accuracy argument relies on it).
    r : ndarray of float64, shape (C,)
        Per-row coefficients in ``[0, 1)``.

    Returns
    -------
    ndarray of float64, shape (C, n)
    """
    n_rows, n = x.shape
    if n_rows == 0 or n == 0:
        return np.zeros_like(x)
    if np.all(r == r[0]):
        # One shared coefficient: SciPy's IIR filter along the time axis.
        return lfilter([0.0, 1.0], [1.0, -float(r[0])], x, axis=1)

    # Per-row coefficients (per-cell taus): a blocked scan.  Within a block of T frames,
    # sum_k x_k r^(t-k) = r^t * cumsum_k(x_k r^-k); T is chosen so that r^-T stays finite,
    # and since all terms are >= 0 the cumulative sum loses no relative precision.
    out = np.zeros_like(x)
    log_decay = -np.log(np.maximum(r, np.finfo(np.float64).tiny))
    negligible = log_decay > _NEGLIGIBLE_LOG_DECAY
    # Fast components forget everything within a frame: z_f = x_{f-1}.
    out[negligible, 1:] = x[negligible, :-1]
    rows = np.flatnonzero(~negligible)
    if rows.size == 0:
        return out
    rates = log_decay[rows]
    block = int(max(1, min(n, _MAX_SCAN_LOG_GROWTH // max(rates.max(), 1e-300))))
    n_blocks = -(-n // block)
    padded = np.zeros((rows.size, n_blocks * block))
    padded[:, :n] = x[rows]
    padded = padded.reshape(rows.size, n_blocks, block)
    steps = np.arange(block, dtype=np.float64)
    growth = np.exp(rates[:, None] * steps[None, :])  # r^-k, k = 0..T-1
    decay = np.exp(-rates[:, None] * steps[None, :])  # r^k
    # y_t (inclusive of x_t) within each block, starting from zero state.
    local = np.cumsum(padded * growth[:, None, :], axis=2) * decay[:, None, :]
    # Carry the state across blocks: step t of block j gains r^(t+1) * y_end[j-1].
    carry = np.zeros(rows.size)
    r_rows = np.exp(-rates)
    carried_decay = decay * r_rows[:, None]  # r^(t+1)
    for j in range(n_blocks):  # few blocks: T >= 20 frames, typically hundreds
        if j:
            local[:, j, :] += carry[:, None] * carried_decay
        carry = local[:, j, -1].copy()
    y = local.reshape(rows.size, -1)[:, :n]
    out[rows, 1:] = y[:, :-1]
    return out


def calcium_from_events(
    rows: np.ndarray,
    bins: np.ndarray,
    n_rows: int,
    num_timepoints: int,
    b: int,
    spike_sim_hz: float,
    tau_rise: np.ndarray,
    tau_decay: np.ndarray,
    peak: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts per frame and unit-amplitude clean calcium at the imaging rate.

    Equivalent (up to the reference's truncation of the kernel below 1e-6 of its start) to
    convolving the high-resolution train with ``h[i] = (exp(-i dt/td) - exp(-i dt/tr)) /
    peak`` (``dt = 1/spike_sim_hz``) and averaging each frame's ``b`` bins.  For one
    exponential with per-bin factor ``q``, a spike at offset ``o`` of frame ``g``
    contributes ``(1 - q^(b-o)) / (1 - q)`` to frame ``g``'s bin sum and
    ``q^(b-o) * q^(b(f-g-1)) * (1 - q^b) / (1 - q)`` to each later frame ``f``; the latter
    is a first-order recursion in ``f``.  With one kernel shared by all cells both
    exponentials run as a single second-order ``lfilter`` (:func:`_shared_kernel_response`);
    with per-cell taus each runs through :func:`_lagged_one_pole`.

    Parameters
    ----------
    rows, bins : ndarray of int64, shape (S,)
        Spike events (see :func:`spike_events`).
    n_rows, num_timepoints, b : int
        Cells, frames and high-resolution bins per frame.
    spike_sim_hz : float
        Kernel sampling rate (``dt = 1 / spike_sim_hz``, the reference's convention).
    tau_rise, tau_decay : ndarray of float64, shape (n_rows,)
        Kernel time constants (after the near-equality guard).
    peak : ndarray of float64, shape (n_rows,)
        Kernel normaliser (:func:`kernel_peak`).

    Returns
    -------
    counts : ndarray of float64, shape (n_rows, num_timepoints)
        Spikes per frame (integers in ``[0, b]``).
    calcium : ndarray of float64, shape (n_rows, num_timepoints)
        Frame-averaged kernel response for alpha = 1.
    """
    n = num_timepoints
    frame = bins // b
    offset = bins - frame * b
    flat = rows * n + frame
    size = n_rows * n
    counts = np.bincount(flat, minlength=size).astype(np.float64).reshape(n_rows, n)
    # Per component: head weight (1 - q^(b-o)) / (1 - q) into the spike's own frame, tail
    # weight q^(b-o) carried into later frames with per-frame factor r = q^b and gain
    # g = (1 - q^b) / (1 - q).
    components = []
    for tau in (tau_decay, tau_rise):
        bins_per_tau = 1.0 / (spike_sim_hz * np.asarray(tau, dtype=np.float64))  # -ln q
        # expm1 keeps 1 - q accurate when tau spans many bins (q close to 1).
        one_minus_q = -np.expm1(-bins_per_tau)
        to_frame_end = (b - offset) * bins_per_tau[rows]
        head = -np.expm1(-to_frame_end) / one_minus_q[rows]
        tail = np.exp(-to_frame_end)
        frame_decay = np.exp(-b * bins_per_tau)
        frame_gain = -np.expm1(-b * bins_per_tau) / one_minus_q
        components.append((head, tail, frame_decay, frame_gain))
    (head_d, tail_d, r_d, g_d), (head_r, tail_r, r_r, g_r) = components

    if n_rows and np.all(r_d == r_d[0]) and np.all(r_r == r_r[0]):
        calcium = _shared_kernel_response(
            flat, frame, n_rows, n, head_d - head_r, tail_d, tail_r,
            float(r_d[0]), float(r_r[0]), float(g_d[0]), float(g_r[0]),
        )
    else:
        calcium = np.zeros((n_rows, n))
        for head, tail, frame_decay, frame_gain, sign in (
            (head_d, tail_d, r_d, g_d, 1.0),
            (head_r, tail_r, r_r, g_r, -1.0),
        ):
            tails = _scatter_sum(flat, tail, size).reshape(n_rows, n)
            carried = _lagged_one_pole(tails, frame_decay)
            carried *= sign * frame_gain[:, None]
            carried += sign * _scatter_sum(flat, head, size).reshape(n_rows, n)
            calcium += carried
    # A kernel too fast for spike_sim_hz underflows to 0 at every sample (peak 0): no response.
    scale = peak * b
    np.divide(calcium, scale[:, None], out=calcium, where=scale[:, None] > 0)
    calcium[~(scale > 0)] = 0.0
    # Cancellation between the two exponentials can leave -1e-16-sized values; the true
    # convolution of non-negative spikes with a non-negative kernel is >= 0.
    np.maximum(calcium, 0.0, out=calcium)
    return counts, calcium


def _scatter_sum(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """``out[i] = sum(weights[index == i])`` as float64 of length ``size``.

    (``np.bincount`` returns int64 for an empty ``index`` even with float weights.)
    """
    return np.bincount(index, weights=weights, minlength=size).astype(np.float64, copy=False)


def _shared_kernel_response(
    flat: np.ndarray,
    frame: np.ndarray,
    n_rows: int,
    n: int,
    head: np.ndarray,
    tail_d: np.ndarray,
    tail_r: np.ndarray,
    r_d: float,
    r_r: float,
    g_d: float,
    g_r: float,
) -> np.ndarray:
    """Both exponentials at once when every cell shares the kernel: one 2nd-order IIR.

    The frame response is ``head[f] + sum_{g<f} (g_d U_d[g] r_d^(f-1-g) - g_r U_r[g]
    r_r^(f-1-g))``.  Multiplying by the common denominator ``A(z) = (1 - r_d z^-1)(1 - r_r
    z^-1)`` turns it into a sparse input (three taps per spike) for a single
    ``lfilter([1], A)`` pass, instead of two filters and several dense passes.

    Returns
    -------
    ndarray of float64, shape (n_rows, n)
        Unnormalised frame sums of the kernel response.
    """
    a1 = -(r_d + r_r)
    a2 = r_d * r_r
    tail_now = g_d * tail_d - g_r * tail_r  # enters one frame after the spike
    tail_next = g_r * r_d * tail_r - g_d * r_r * tail_d  # two frames after
    fits1 = frame + 1 < n  # taps past the last frame only affect frames beyond the end
    fits2 = frame + 2 < n
    index = np.concatenate([flat, flat[fits1] + 1, flat[fits2] + 2])
    weights = np.concatenate(
        [head, (a1 * head + tail_now)[fits1], (a2 * head + tail_next)[fits2]]
    )
    drive = _scatter_sum(index, weights, n_rows * n).reshape(n_rows, n)
    return lfilter([1.0], [1.0, a1, a2], drive, axis=1)


# =========================================================================== observation


def _saturate(calcium: np.ndarray, k_d: np.ndarray, hill: float) -> np.ndarray:
    """Hill nonlinearity ``F^n / (F^n + Kd^n)`` with ``F = max(c, 0)``, row-wise Kd.

    Evaluated as the logistic of ``n (ln F - ln Kd)``, which is the same function but cannot
    overflow for large ``n`` or ``F``; ``F = 0`` gives exactly 0.
    """
    positive = calcium > 0.0
    with np.errstate(divide="ignore"):
        log_ratio = np.log(np.where(positive, calcium, 1.0)) - np.log(k_d)[:, None]
    return np.where(positive, expit(hill * log_ratio), 0.0)


def _poisson_counts(
    rng: CounterRNG, keys: np.ndarray, lam: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson(``lam``) samples by inversion of the CDF (one 32-bit uniform per element,
    counter = frame), for ``lam <= 30``.

    Parameters
    ----------
    keys : ndarray of uint64, shape (C,)
        Row keys of the :attr:`Stream.SHOT_UNIFORM` stream.
    lam : ndarray of float64, shape (C, n)
        Non-negative means.

    Returns
    -------
    counts : ndarray of float64, shape (C, n)
        Samples; 0 where ``lam > 30``.
    needs_approximation : ndarray of bool, shape (C, n)
        Where ``lam > 30``: the caller applies the reference's normal approximation
        ``max(0, lam + sqrt(lam) N)`` there.
    """
    n_rows, n = lam.shape
    counters = np.arange(n, dtype=np.uint64)[None, :]
    u = rng.uniform32(keys[:, None], counters).ravel()
    lam_flat = lam.ravel()
    small = lam_flat <= _SHOT_NORMAL_APPROX_LAMBDA
    # Inversion: k = smallest k with CDF(k) > u.  Shot-noise means are mostly below ~1, so
    # the first two CDF terms are evaluated densely (cheap elementwise passes) and only the
    # remaining ~10-20 % of elements enter the gather/scatter loop.
    probability = np.exp(-np.where(small, lam_flat, 0.0))  # P(0)
    cdf = probability.copy()
    counts = (u >= cdf).astype(np.float64)
    probability *= lam_flat  # P(1)
    cdf += probability
    beyond_one = u >= cdf
    counts += beyond_one
    todo = np.flatnonzero(beyond_one & small)
    probability, cdf = probability[todo], cdf[todo]
    k = 1
    # 200 terms: for lam <= 30 the CDF is 1 to double precision well before that.
    while todo.size and k < 200:
        k += 1
        probability *= lam_flat[todo] / k
        cdf += probability
        still = u[todo] >= cdf
        counts[todo[still]] = k + 1
        todo, probability, cdf = todo[still], probability[still], cdf[still]
    counts[~small] = 0.0
    return counts.reshape(n_rows, n), ~small.reshape(n_rows, n)


def observe(
    config: SimulationConfig,
    rng: CounterRNG,
    cells: np.ndarray,
    params: CellParameters,
    clean: np.ndarray,
) -> np.ndarray:
    """Add drift, photobleaching and noise to the clean signal.

    Parameters
    ----------
    config : SimulationConfig
    rng : CounterRNG
    cells : ndarray of int64, shape (C,)
    params : CellParameters
        Parameters of exactly these cells.
    clean : ndarray of float32, shape (C, n)
        Alpha-scaled, saturated clean calcium (the ground truth values).

    Returns
    -------
    ndarray of float64, shape (C, n)
        Observed traces.  Rows whose clean signal never exceeds 0 are exactly 0.
    """
    n_rows, n = clean.shape
    trace = clean.astype(np.float64)
    # Everything scales with the peak of the cell's own clean signal (the SNR definition).
    signal_max = np.maximum(trace.max(axis=1, initial=0.0), 0.0)
    frames = np.arange(n, dtype=np.float64)

    drift = config.drift
    if isinstance(drift, RandomWalkDrift):
        step = params.drift_scale * signal_max
        if np.any(step > 0):
            innovations = rng.normal_matrix(rng.keys(Stream.DRIFT_NOISE, cells), n)
            # AR(1): D_t = (1 - mr) D_{t-1} + N_t, D_{-1} = 0 (frame 0 has one innovation).
            # Filtered in float64: a float32 walk would accumulate rounding over ~1/mr steps.
            walk = lfilter(
                [1.0],
                [1.0, -(1.0 - drift.mean_reversion)],
                innovations.astype(np.float64),
                axis=1,
            )
            walk *= step[:, None]
            trace += walk
    else:
        assert isinstance(drift, SinusoidalDrift)
        amplitude = params.drift_scale * signal_max
        if np.any(amplitude > 0):
            phase = (2.0 * np.pi / n) * params.drift_cycles[:, None] * frames[None, :]
            trace += amplitude[:, None] * np.sin(phase)

    bleaching = config.photobleaching
    if bleaching.enabled:
        lost = -np.expm1(-frames / (config.fs_hz * bleaching.decay_time_constant_s))
        trace *= 1.0 - params.bleach_amplitude[:, None] * lost[None, :]

    noise = config.noise
    # The noise SD uses the unbleached peak; cells without signal get no noise at all.
    sigma = np.divide(signal_max, params.snr, out=np.zeros(n_rows), where=signal_max > 0)
    shot_fraction = noise.shot_noise_fraction if noise.shot_noise_enabled else 0.0
    gaussian = rng.normal_matrix(rng.keys(Stream.GAUSSIAN_NOISE, cells), n)
    if shot_fraction > 0.0:
        gaussian *= (sigma * math.sqrt(1.0 - shot_fraction))[:, None]
        # Shot noise: variance sigma^2 * f * |y| / peak, i.e. sigma^2 at the peak when
        # combined with the Gaussian part; in count units (k - lam), as the reference.
        shot_variance = np.divide(
            sigma**2 * shot_fraction, signal_max, out=np.zeros(n_rows), where=signal_max > 0
        )
        lam = np.abs(trace) * shot_variance[:, None]
        counts, approximate = _poisson_counts(rng, rng.keys(Stream.SHOT_UNIFORM, cells), lam)
        if approximate.any():
            rows_idx, frame_idx = np.nonzero(approximate)
            shot_keys = rng.keys(Stream.SHOT_NORMAL, cells)
            lam_big = lam[rows_idx, frame_idx]
            normal = rng.normal(shot_keys[rows_idx], frame_idx)
            counts[rows_idx, frame_idx] = np.maximum(0.0, lam_big + np.sqrt(lam_big) * normal)
        trace += gaussian
        trace += counts
        trace -= lam
    else:
        gaussian *= sigma[:, None]
        trace += gaussian
    return trace


# =========================================================================== driver


@dataclass(frozen=True)
class SimulationArrays:
    """Raw outputs of :func:`run`.

    Attributes
    ----------
    traces, spikes, clean_calcium : ndarray of float32, shape (C, n), C-contiguous
    params : CellParameters
        For all ``C`` cells.
    """

    traces: np.ndarray
    spikes: np.ndarray
    clean_calcium: np.ndarray
    params: CellParameters


def _subset(params: CellParameters, rows: slice) -> CellParameters:
    """The parameters of a chunk of cells."""
    return CellParameters(
        **{field.name: getattr(params, field.name)[rows] for field in dataclasses.fields(params)}
    )


def run(config: SimulationConfig, *, chunk_cells: int | None = None) -> SimulationArrays:
    """Simulate every cell of a validated config.

    Parameters
    ----------
    config : SimulationConfig
        Validated, and checked by :func:`calab.simulation.simulate.check_engine_limits`.
    chunk_cells : int, optional
        Cells per chunk (default: sized for a few MB of temporaries).  Never changes the
        result.

    Returns
    -------
    SimulationArrays
    """
    n_cells = config.num_cells
    n = config.num_timepoints
    b = bins_per_frame(config.fs_hz, config.spike_sim_hz)
    rng = CounterRNG(config.seed)
    all_cells = np.arange(n_cells, dtype=np.int64)
    params = draw_cell_parameters(config, rng, all_cells)
    peaks = kernel_peak(params.kernel_tau_rise, params.tau_decay, config.spike_sim_hz)

    traces = np.empty((n_cells, n), dtype=np.float32)
    spikes = np.empty((n_cells, n), dtype=np.float32)
    clean_out = np.empty((n_cells, n), dtype=np.float32)
    if chunk_cells is None:
        chunk_cells = min(_CHUNK_FRAMES // n, _CHUNK_HIGH_RES_BINS // (n * b))
    chunk_cells = max(1, int(chunk_cells))

    for first in range(0, n_cells, chunk_cells):
        rows = slice(first, min(first + chunk_cells, n_cells))
        cells = all_cells[rows]
        chunk = _subset(params, rows)
        event_rows, event_bins = spike_events(config, rng, cells, chunk)
        counts, calcium = calcium_from_events(
            event_rows,
            event_bins,
            cells.shape[0],
            n,
            b,
            config.spike_sim_hz,
            chunk.kernel_tau_rise,
            chunk.tau_decay,
            peaks[rows],
        )
        calcium *= chunk.alpha[:, None]
        if config.saturation.enabled:
            calcium = _saturate(calcium, chunk.k_d, config.saturation.hill_coefficient)
        clean32 = calcium.astype(np.float32)
        spikes[rows] = counts
        clean_out[rows] = clean32
        traces[rows] = observe(config, rng, cells, chunk, clean32)
    return SimulationArrays(traces=traces, spikes=spikes, clean_calcium=clean_out, params=params)
