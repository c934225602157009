"""Data-driven starting kernel: an AR(2) fit of the traces' autocovariance.

The way OASIS estimates its AR coefficients (Friedrich et al. 2017,
``oasis/functions.py: estimate_time_constant``): the autocovariance ``c(l)`` of each
trace obeys the AR(2) Yule–Walker relations at lags >= 1, and at lag 0 only after the
white-noise variance ``σ²`` is removed.  Solving

    c(i+1) = g1 (c(i) - σ² δ_{i0}) + g2 (c(|i-1|) - σ² δ_{i1}),   i = 0 … L-1

in the least-squares sense gives ``(g1, g2)``; the roots ``d > r`` of
``z² - g1 z - g2`` are the per-frame decay factors, ``τ = -1/(fs ln root)``.

All cells are fitted at once (FFT autocovariance, batched 2x2 normal equations); the
population estimate is the median over cells whose fit is usable.  The rise is often
unresolved (a root below ~one frame or a complex pair): the loop's first kernel fit
then supplies it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["AutocovarianceEstimate", "autocovariance_taus", "noise_sigma"]

#: Slow trends are removed with a moving average over this many seconds before the fit.
DETREND_WINDOW_S = 60.0
#: Cells whose signal (autocovariance minus noise at lag 0) is below this fraction of the
#: variance carry no usable kernel information.  For pure white noise the fraction scatters
#: around 0 with an SD of about ``2/sqrt(T)``; the threshold stays four SDs above that.
MIN_SIGNAL_FRACTION = 0.1
#: First pass: lags spanning this many seconds; second pass: this many decay constants.
FIRST_SPAN_S = 0.5
SPAN_PER_DECAY = 1.0
MIN_LAGS = 5


class AutocovarianceEstimate(NamedTuple):
    """Starting kernel from the autocovariance fit.

    Attributes
    ----------
    tau_rise, tau_decay : float
        Population estimates (s); NaN when no cell gave a usable fit.
    rise_resolved : bool
        Whether ``tau_rise`` comes from resolved second roots (else it is a placeholder).
    cell_tau_rise, cell_tau_decay : ndarray, shape (n_cells,), float64
        Per-cell estimates, NaN where unusable.
    noise : ndarray, shape (n_cells,), float64
        White-noise standard deviation per cell (top half of the spectrum).
    n_used : int
        Cells that entered the decay median.
    """

    tau_rise: float
    tau_decay: float
    rise_resolved: bool
    cell_tau_rise: np.ndarray
    cell_tau_decay: np.ndarray
    noise: np.ndarray
    n_used: int

    def starting_taus(self) -> tuple[float, float]:
        """``(tau_rise, tau_decay)`` the loop starts from (``tau_decay`` must be finite).

        The autocovariance rarely resolves a rise under ~one frame: the first kernel fit
        supplies it.  Until then a rise of a sixth of the decay (the presets' typical
        ratio), kept within ``[0.005 s, tau_decay / 2]``.
        """
        tau_rise = self.tau_rise if self.rise_resolved else self.tau_decay / 6
        return min(max(tau_rise, 0.005), 0.5 * self.tau_decay), self.tau_decay


def noise_sigma(traces: np.ndarray) -> np.ndarray:
    """White-noise SD per row (spec §2.4, step 1): :func:`calab.noise.white_noise_sd`.

    ``traces`` is ``(n_cells, T)``; returns ``(n_cells,)`` float64 (0 for ``T < 8``).
    """
    from calab.noise import white_noise_sd

    return white_noise_sd(traces)


def _detrend(traces: np.ndarray, fs: float) -> np.ndarray:
    from scipy.ndimage import uniform_filter1d

    window = int(round(DETREND_WINDOW_S * fs))
    if window < 3 or window >= traces.shape[-1]:
        return traces - traces.mean(axis=-1, keepdims=True)
    return traces - uniform_filter1d(traces, window, axis=-1, mode="nearest")


def autocovariance_taus(traces: np.ndarray, fs: float, lags: int | None = None) -> AutocovarianceEstimate:
    """Estimate ``(tau_rise, tau_decay)`` of the population from AR(2) autocovariance fits.

    Parameters
    ----------
    traces : ndarray, shape (n_cells, T)
        Raw fluorescence (any offset); float64 or float32.
    fs : float
        Sampling rate (Hz).
    lags : int, optional
        Autocovariance lags in the fit.  By default two passes: lags spanning
        ``FIRST_SPAN_S`` seconds, then ``SPAN_PER_DECAY`` times the first decay estimate
        (OASIS's fixed five lags span too little of a kernel at high frame rates, and a
        fixed span too much of a fast one).

    Returns
    -------
    AutocovarianceEstimate
    """
    if lags is not None:
        return _fit(traces, fs, lags)
    first = _fit(traces, fs, math.ceil(FIRST_SPAN_S * fs))
    if not math.isfinite(first.tau_decay):
        return first
    return _fit(traces, fs, math.ceil(SPAN_PER_DECAY * first.tau_decay * fs))


def _fit(traces: np.ndarray, fs: float, lags: int) -> AutocovarianceEstimate:
    traces = np.atleast_2d(np.asarray(traces, dtype=np.float64))
    n_cells, n_frames = traces.shape
    lags = int(max(MIN_LAGS, min(lags, n_frames // 4)))
    nan_cells = np.full(n_cells, np.nan)
    if n_frames < 16:
        return AutocovarianceEstimate(math.nan, math.nan, False, nan_cells, nan_cells.copy(), np.zeros(n_cells), 0)

    centred = _detrend(traces, fs)
    sigma = noise_sigma(centred)
    size = 1 << (2 * n_frames - 1).bit_length()
    spectrum = np.fft.rfft(centred, n=size, axis=-1)
    autocov = np.fft.irfft(np.abs(spectrum) ** 2, n=size, axis=-1)[:, : lags + 1] / n_frames  # (n, L+1)

    # Rows i = 0..L-1: [c(i) - σ²δ_i0, c(|i-1|) - σ²δ_i1] · (g1, g2) = c(i+1)
    noise_var = sigma**2
    index = np.arange(lags)
    design = np.stack([autocov[:, index], autocov[:, np.abs(index - 1)]], axis=-1)  # (n, L, 2)
    design[:, 0, 0] -= noise_var
    design[:, 1, 1] -= noise_var
    target = autocov[:, 1 : lags + 1]
    normal = np.einsum("nli,nlj->nij", design, design)
    rhs = np.einsum("nli,nl->ni", design, target)
    det = normal[:, 0, 0] * normal[:, 1, 1] - normal[:, 0, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        g1 = (normal[:, 1, 1] * rhs[:, 0] - normal[:, 0, 1] * rhs[:, 1]) / det
        g2 = (normal[:, 0, 0] * rhs[:, 1] - normal[:, 0, 1] * rhs[:, 0]) / det
        disc = g1**2 + 4 * g2
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        decay_root = 0.5 * (g1 + root)
        rise_root = 0.5 * (g1 - root)
        signal_fraction = (autocov[:, 0] - noise_var) / autocov[:, 0]
        usable = (
            np.isfinite(decay_root)
            & (decay_root > 0)
            & (decay_root < 1)
            & (signal_fraction > max(MIN_SIGNAL_FRACTION, 8.0 / math.sqrt(n_frames)))
            & (np.abs(det) > 0)
        )
        tau_decay = np.where(usable, -1.0 / (fs * np.log(np.where(usable, decay_root, 0.5))), np.nan)
        rise_ok = usable & (rise_root > 0) & (rise_root < decay_root)
        tau_rise = np.where(rise_ok, -1.0 / (fs * np.log(np.where(rise_ok, rise_root, 0.5))), np.nan)
    # A decay under one frame is noise, not a kernel.
    tau_decay = np.where(tau_decay > 1.0 / fs, tau_decay, np.nan)
    tau_rise = np.where(np.isfinite(tau_decay), tau_rise, np.nan)
    n_used = int(np.isfinite(tau_decay).sum())
    if n_used == 0:
        return AutocovarianceEstimate(math.nan, math.nan, False, tau_rise, tau_decay, sigma, 0)
    population_decay = float(np.nanmedian(tau_decay))
    rises = tau_rise[np.isfinite(tau_rise)]
    rise_resolved = rises.size >= max(1, n_used // 2)
    population_rise = float(np.median(rises)) if rise_resolved else math.nan
    return AutocovarianceEstimate(population_rise, population_decay, rise_resolved, tau_rise, tau_decay, sigma, n_used)
