"""Kernel from the phase of the traces' bispectrum (third-order spectrum).

Why third order: the power spectrum of ``y = k * s + noise`` is ``|K|²·S_s``, and a
bursty spike train's spectrum ``S_s`` is low-pass just like a slow rise, so second-order
statistics (the autocovariance start) cannot tell a slow rise from bursts.  The
bispectrum ``B_y(f1, f2) = E[Y(f1) Y(f2) Y*(f1+f2)]`` factorises as

    B_y(f1, f2) = K(f1) K(f2) K*(f1+f2) · B_s(f1, f2)

and for a time-reversible spike process (a Poisson train, a two-state Markov burst
process — any stationary process whose statistics do not change when time runs
backwards) ``B_s`` is real and, for sparse positive events, positive.  Gaussian noise
and drift have no bispectrum at all.  So the *phase* of ``B_y`` is the kernel's alone:

    arg B_y = φ(f1) + φ(f2) − φ(f1+f2),   φ(f) = −atan(2πf τ_rise) − atan(2πf τ_decay)

for the bi-exponential ``exp(−t/τd) − exp(−t/τr)``.  A linear phase (a pure delay: the
camera's frame integration, where in a frame a spike fell, any decimation by frame
averaging) cancels in that combination.  Fitting the two taus to the measured phase
recovers rise and decay without inferring a single spike, which is what the free-kernel
loop cannot do (docs/cadecon.md, "Why the rise time is not recovered").

The estimate pools every cell (one kernel for the population).  Each cell is scaled to
unit SD, cut into 50 %-overlapping Hann-windowed segments, and the segments' triple
products are averaged on the compute backend.  The fit minimises, over ``(τr, τd)``,

    Σ_k v_k |B_k e^{−iΦ_k(τ)} − A_k|²,   v_k = n_segments / (P(f1) P(f2) P(f1+f2))

(``v_k`` is the inverse variance of a bispectrum bin), where ``A_k ≥ 0`` is the
``v``-weighted local mean of ``Re(B e^{−iΦ})`` over neighbouring bins: the spike
bispectrum is smooth and positive, which averages the phase coherently over many
noise-dominated bins instead of trusting each one alone.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from calab.cadecon.shape import peak_time

__all__ = ["BispectrumEstimate", "bispectral_taus"]

#: Segment length aimed for, in seconds: long enough that a Hann window's smearing of
#: the fast-changing low-frequency phase (the decay's corner, ~1/(2π τd)) stays small for
#: decays up to ~2 s, short enough for many segments per cell (docs/cadecon.md, table E).
SEGMENT_S = 34.0
#: At most this many frames per segment (bins grow with its square).
MAX_SEGMENT = 1024
MIN_SEGMENT = 64
#: With little data (one neuron, a few minutes) the segments are shortened, down to this
#: many seconds, until at least ``TARGET_SEGMENTS`` of them fit: a phase averaged over a
#: dozen 34-s segments is too noisy to fit (one neuron's four minutes at 30 Hz explained
#: under 10 % of its bispectrum on 9 of 10 zebrafish neurons, against 3 of 10 with 8.5-s
#: segments), while the window's low-frequency smearing of 8-s segments stays small for
#: decays up to about 2 s (docs/cadecon.md, "Single neurons").
SHORT_SEGMENT_S = 8.0
TARGET_SEGMENTS = 48
#: Traces faster than this are averaged over whole frames down to about this rate first.
ANALYSIS_RATE_HZ = 30.0
#: Bins above this fraction of the analysis rate are left out (aliasing near Nyquist).
MAX_FREQUENCY_FRACTION = 0.45
#: Bins below this frequency are left out: there the window's smearing and slow drift dominate.
MIN_FREQUENCY_HZ = 0.1
#: Segments beyond this many are not needed for a stable phase; taken evenly when there are more.
MAX_SEGMENTS = 16384
MIN_SEGMENTS = 8
#: Side of the square neighbourhood over which the positive amplitude ``A`` is averaged.
SMOOTHING_BINS = 7
#: Cells are dealt into this many groups (row index modulo) for the jackknife uncertainty.
UNCERTAINTY_GROUPS = 4
#: When the fitted rise sits at the bottom of the search box the data cannot resolve it:
#: it is under about half an analysis frame.  The estimate then uses half a frame, the
#: largest rise these data cannot tell from an instantaneous one, kept at or below this
#: fraction of the decay (the rise/decay ratio of the GCaMP6f/m and jGCaMP8f presets), and
#: says so (``rise_source``).  Snapping to the box's floor (1 ms) instead made the kernel
#: jump in one frame, which put the inferred events late (docs/cadecon.md, "Unresolved rise").
UNRESOLVED_RISE_FRAMES = 0.5
TYPICAL_RISE_TO_DECAY = 1.0 / 6.0
#: Search box (s) of the fit.
RISE_BOUNDS = (1e-3, 2.0)
DECAY_BOUNDS = (0.02, 10.0)
#: Below this share of the weighted bispectrum explained by the fitted kernel, the traces carry
#: no usable third-order signal: white noise with or without a random-walk drift explains
#: about 0.03, a 40-cell 2-min gcamp6f population at SNR 4 about 0.22, at SNR 2 (where the
#: estimate is off by 40-70 %) 0.06.
MIN_EXPLAINED = 0.10


class BispectrumEstimate(NamedTuple):
    """Population kernel from the bispectral phase.

    Attributes
    ----------
    tau_rise, tau_decay : float
        Estimates (s); NaN when the traces carry too little data or no third-order signal.
    rise_resolved : bool
        Whether ``tau_rise`` lies above the bottom of the search box (else it is a bound).
    explained : float
        Share of the inverse-variance-weighted bispectrum the fitted kernel explains
        (0 for pure noise; NaN when nothing was fitted).
    n_segments, segment_frames, decimation : int
        Segments averaged, their length (frames at the analysis rate) and the number of
        frames averaged into one analysis frame.
    n_cells_used : int
        Cells with non-zero variance that contributed segments.
    reason : str
        Empty when the estimate is usable, else why it is NaN.
    peak_time_se : float
        Jackknife standard error of the kernel's peak time over ``UNCERTAINTY_GROUPS``
        groups (leave one group out), relative to the estimate; NaN when a group has too
        few segments.  Groups are cells (row index modulo the group count) when there are
        at least as many cells as groups, else contiguous runs of segments (one neuron).
    rise_source : str
        ``"bispectrum"`` when ``tau_rise`` is the fitted value; ``"half a frame"`` when
        the fit ended at the bottom of the search box and ``tau_rise`` was set to half an
        analysis frame (at most ``TYPICAL_RISE_TO_DECAY`` x the decay); ``""`` when NaN.
    fitted_tau_rise : float
        The rise the fit ended at (equal to ``tau_rise`` unless replaced).
    """

    tau_rise: float
    tau_decay: float
    rise_resolved: bool
    explained: float
    n_segments: int
    segment_frames: int
    decimation: int
    n_cells_used: int
    reason: str
    peak_time_se: float = math.nan
    rise_source: str = ""
    fitted_tau_rise: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return {name: (None if isinstance(value, float) and not math.isfinite(value) else value)
                for name, value in self._asdict().items()}


def _phase(f: np.ndarray, tau_rise: float, tau_decay: float) -> np.ndarray:
    return -np.arctan(2 * np.pi * f * tau_rise) - np.arctan(2 * np.pi * f * tau_decay)


def _segment_count(rows: list[np.ndarray], length: int) -> int:
    """Number of 50 %-overlapping segments of ``length`` frames the rows hold."""
    step = length // 2
    return sum(max(0, (row.size - length) // step + 1) for row in rows)


def _segments(rows: list[np.ndarray], length: int, limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Unit-SD, mean-free, Hann-windowed 50 %-overlapping segments ``(S, length)`` float64,
    the row each came from ``(S,)``, and the number of rows that contributed."""
    step = length // 2
    starts_per_row = [range(0, row.size - length + 1, step) for row in rows]
    total = sum(len(s) for s in starts_per_row)
    keep = np.ones(total, dtype=bool)
    if total > limit:  # evenly spaced, deterministic
        keep[:] = False
        keep[np.round(np.linspace(0, total - 1, limit)).astype(np.int64)] = True
    window = np.hanning(length)
    out, owners, index, cells = [], [], 0, 0
    for number, (row, starts) in enumerate(zip(rows, starts_per_row)):
        picked = [start for n, start in enumerate(starts) if keep[index + n]]
        index += len(starts)
        if not picked:
            continue
        centred = row - row.mean()
        scale = centred.std()
        if not scale > 0:
            continue
        cells += 1
        segs = np.stack([centred[s:s + length] for s in picked]) / scale
        out.append((segs - segs.mean(axis=1, keepdims=True)) * window)
        owners.append(np.full(len(picked), number))
    if not out:
        return np.zeros((0, length)), np.zeros(0, dtype=np.int64), 0
    return np.concatenate(out), np.concatenate(owners), cells


def _bispectrum(backend: Any, segments: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Averaged power ``(length//2+1,)`` and bispectrum ``(top, top)`` (``B[i, j]`` for
    ``1 ≤ j ≤ i``, ``i + j < top``; zero elsewhere), host complex128.

    ``B[i, j] = mean_s X_s(i) X_s(j) X*_s(i+j)``, one row ``i`` at a time as a
    vector-matrix product over the segments (only the bins of the triangle are computed:
    half the products of a full ``top x top/2`` table, and no gathered copy of the spectra).
    """
    xp = backend.xp
    n_segments, length = segments.shape
    spectra = xp.fft.rfft(backend.asarray(segments), axis=1)
    power = xp.sum(xp.abs(spectra) ** 2, axis=0)
    rows: list[Any] = [None] * (top - 1)

    def triangle_rows(block: slice) -> None:
        for i in range(1 + block.start, 1 + block.stop):
            width = min(i, top - 1 - i)  # j = 1 .. width
            if width >= 1:
                rows[i - 1] = spectra[:, i] @ (spectra[:, 1:width + 1] * xp.conj(spectra[:, i + 1:i + width + 1]))

    # Host backends spread the rows over their cores (each row is computed the same way
    # whichever thread does it; the triangle's row widths are symmetric about its middle,
    # so two halves are equal work).
    backend.for_row_blocks(triangle_rows, top - 1)
    power_host = np.asarray(backend.to_numpy(power), dtype=np.float64) / n_segments
    full = np.zeros((top, top), dtype=np.complex128)
    for i, row in enumerate(rows, start=1):
        if row is not None:
            full[i, 1:row.shape[0] + 1] = np.asarray(backend.to_numpy(row), dtype=np.complex128) / n_segments
    return power_host, full


def _fit(table: np.ndarray, power: np.ndarray, n_segments: int, length: int, fs: float,
         lowest: int, start: tuple[float, float] | None, search: bool = True) -> tuple[float, float, float]:
    """Least-squares taus (see the module docstring) and the share of the weighted bispectrum
    explained.  ``search=False`` polishes from ``start`` only (the leave-one-out refits)."""
    from scipy.ndimage import uniform_filter
    from scipy.optimize import minimize

    top = table.shape[0]
    i_idx, j_idx = np.nonzero(table)
    keep = (j_idx >= lowest) & (i_idx >= lowest)
    i_idx, j_idx = i_idx[keep], j_idx[keep]
    values = table[i_idx, j_idx]
    weight = n_segments / (power[i_idx] * power[j_idx] * power[i_idx + j_idx])
    sum_idx = i_idx + j_idx
    frequencies = np.arange(top + 1) * fs / length
    # The bins live in the triangle j <= i, i + j < top: columns beyond (top - 1) // 2 stay
    # empty, so the smoothing grid stops a filter half-width after the last one (the same
    # zeros the full square had there, a third of the work per cost evaluation).
    columns = min(top, (top - 1) // 2 + 1 + SMOOTHING_BINS // 2 + 1)
    grid_weight = np.zeros((top, columns))
    grid_weight[i_idx, j_idx] = weight
    local_weight = np.maximum(uniform_filter(grid_weight, SMOOTHING_BINS), 1e-300)
    grid = np.zeros((top, columns))
    flat = i_idx * columns + j_idx  # flat positions: take/put are cheaper than 2-D fancy indexing
    local = local_weight.ravel()[flat]
    total = float(np.sum(weight * np.abs(values) ** 2))

    def cost(log_taus: np.ndarray) -> float:
        tau_rise, tau_decay = np.exp(log_taus)
        # exp(-i(φ(f1) + φ(f2) - φ(f1+f2))) as a product of per-frequency unit phasors
        # (one complex exponential per frequency bin instead of one per bispectrum bin)
        turn = np.exp(-1j * _phase(frequencies, tau_rise, tau_decay))
        rotated = values * turn[i_idx] * turn[j_idx] * np.conj(turn[sum_idx])
        np.put(grid, flat, weight * rotated.real)
        amplitude = np.maximum(uniform_filter(grid, SMOOTHING_BINS).ravel().take(flat) / local, 0.0)
        penalty = 0.0 if tau_rise < tau_decay else 1e3 * total * (1 + tau_rise / tau_decay)
        return float(np.sum(weight * np.abs(rotated - amplitude) ** 2)) + penalty

    lo = np.log([RISE_BOUNDS[0], DECAY_BOUNDS[0]])
    hi = np.log([RISE_BOUNDS[1], DECAY_BOUNDS[1]])
    candidates = [] if not search else [
        (r, d) for r in np.linspace(lo[0], hi[0], 24) for d in np.linspace(lo[1], hi[1], 24) if d > r + 0.1]
    if start is not None:
        candidates.append(tuple(np.log(start)))
    best = min(candidates, key=lambda c: cost(np.asarray(c)))
    found = minimize(lambda p: cost(np.clip(p, lo, hi)), np.asarray(best), method="Nelder-Mead",
                     options={"xatol": 1e-4, "fatol": 1e-10 * max(total, 1e-300), "maxiter": 400})
    tau_rise, tau_decay = np.exp(np.clip(found.x, lo, hi))
    explained = 1.0 - cost(np.log([tau_rise, tau_decay])) / total if total > 0 else 0.0
    return float(tau_rise), float(tau_decay), float(explained)


def bispectral_taus(traces: Any, fs: float, *, backend: Any = None,
                    start: tuple[float, float] | None = None) -> BispectrumEstimate:
    """Estimate the population's ``(tau_rise, tau_decay)`` from the bispectral phase.

    Parameters
    ----------
    traces : ndarray, shape (n_cells, T), or list of 1-D arrays
        Raw fluorescence (any offset or scale per cell; NaN-free).  Recordings of
        different lengths are segmented separately.
    fs : float
        Sampling rate (Hz).
    backend : Backend, optional
        Compute backend for the FFTs and triple products (NumPy by default).
    start : (float, float), optional
        An extra starting point for the fit's search (e.g. a preset's taus).

    Returns
    -------
    BispectrumEstimate
        NaN taus (with ``reason``) when fewer than ``MIN_SEGMENTS`` segments fit in the
        data or the fitted kernel explains under ``MIN_EXPLAINED`` of the bispectrum.
    """
    if backend is None:
        from calab.backends import get_backend

        backend = get_backend("numpy")
    rows = [np.asarray(row, dtype=np.float64).ravel() for row in (traces if isinstance(traces, list) else np.atleast_2d(traces))]
    decimation = max(1, int(round(fs / ANALYSIS_RATE_HZ)))
    rate = fs / decimation
    if decimation > 1:  # frame averaging: a linear phase, which the fit's phase combination cancels
        rows = [row[: row.size // decimation * decimation].reshape(-1, decimation).mean(axis=1) for row in rows]
    longest = max((row.size for row in rows), default=0)
    wanted = 1 << max(0, int(round(math.log2(max(SEGMENT_S * rate, 1.0)))))
    length = min(wanted, MAX_SEGMENT)
    while length > MIN_SEGMENT and length > longest:
        length //= 2

    def failed(reason: str, n_segments: int = 0, cells: int = 0, explained: float = math.nan) -> BispectrumEstimate:
        return BispectrumEstimate(math.nan, math.nan, False, explained, n_segments, length, decimation, cells, reason)

    if length > longest:
        return failed(f"recordings shorter than {MIN_SEGMENT} analysis frames")
    shortest_wanted = max(MIN_SEGMENT, 1 << max(0, int(round(math.log2(max(SHORT_SEGMENT_S * rate, 1.0))))))
    while length > shortest_wanted and _segment_count(rows, length) < TARGET_SEGMENTS:
        length //= 2
    segments, owners, cells = _segments(rows, length, MAX_SEGMENTS)
    while segments.shape[0] < MIN_SEGMENTS and length > MIN_SEGMENT:  # short recordings: shorter segments
        length //= 2
        segments, owners, cells = _segments(rows, length, MAX_SEGMENTS)
    if segments.shape[0] < MIN_SEGMENTS:
        return failed(f"only {segments.shape[0]} segments of {length} frames (need {MIN_SEGMENTS})",
                      segments.shape[0], cells)
    top = int(MAX_FREQUENCY_FRACTION * length)
    lowest = max(2, math.ceil(MIN_FREQUENCY_HZ * length / rate))
    if cells >= UNCERTAINTY_GROUPS:
        groups = [np.flatnonzero(owners % UNCERTAINTY_GROUPS == g) for g in range(UNCERTAINTY_GROUPS)]
    else:  # one neuron (or a few): contiguous runs of segments, nearly independent of each other
        groups = np.array_split(np.arange(segments.shape[0]), UNCERTAINTY_GROUPS)
    groups = [g for g in groups if g.size]
    with backend.precision_scope():
        parts = [(g.size, *_bispectrum(backend, segments[g], top)) for g in groups]
    n_total = segments.shape[0]
    power = sum(n * p for n, p, _ in parts) / n_total
    table = sum(n * t for n, _, t in parts) / n_total
    tau_rise, tau_decay, explained = _fit(table, power, n_total, length, rate, lowest, start)
    if not explained >= MIN_EXPLAINED:
        return failed(f"no third-order signal (the fitted kernel explains {explained:.3f} of the bispectrum)",
                      segments.shape[0], cells, explained)
    if not (1.05 * DECAY_BOUNDS[0] < tau_decay < 0.95 * DECAY_BOUNDS[1]) or tau_rise > 0.95 * RISE_BOUNDS[1]:
        return failed(f"no kernel inside the search box (fit ended at tau_rise {tau_rise:.4g} s, "
                      f"tau_decay {tau_decay:.4g} s)", segments.shape[0], cells, explained)
    resolved = tau_rise > 1.05 * RISE_BOUNDS[0]
    spread = math.nan
    if len(parts) == UNCERTAINTY_GROUPS and all(n >= MIN_SEGMENTS for n, _, _ in parts):
        peaks = []
        for left_out in range(len(parts)):
            kept = [part for g, part in enumerate(parts) if g != left_out]
            n_kept = sum(n for n, _, _ in kept)
            taus = _fit(sum(n * t for n, _, t in kept) / n_kept, sum(n * p for n, p, _ in kept) / n_kept,
                        n_kept, length, rate, lowest, (tau_rise, tau_decay), search=False)[:2]
            peaks.append(peak_time(*taus))
        peaks = np.asarray(peaks)
        # jackknife standard error of the peak time, relative to the estimate
        spread = float(math.sqrt((len(peaks) - 1) / len(peaks) * np.sum((peaks - peaks.mean()) ** 2))
                       / peak_time(tau_rise, tau_decay))
    fitted_rise, source = tau_rise, "bispectrum"
    if not resolved:
        tau_rise = min(UNRESOLVED_RISE_FRAMES / rate, TYPICAL_RISE_TO_DECAY * tau_decay)
        source = "half a frame"
    return BispectrumEstimate(tau_rise, tau_decay, resolved, explained, n_total, length, decimation, cells, "",
                              spread, source, fitted_rise)
