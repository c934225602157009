"""Deterministic benchmark data: gcamp6f-like calcium traces in raw fluorescence units.

Pure NumPy (no ``calab``), so that both ``bench/bench_deconvolution.py`` and
``tools/make_golden.py`` (which keeps the benchmark's hardest cells as a golden case)
can use it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FS", "LAMBDA", "TAU_DECAY", "TAU_RISE", "double_exponential", "make_traces"]

# gcamp6f-like problem (Chen et al. 2013 kinetics) at the target scale.
FS = 30.0
TAU_RISE = 0.1
TAU_DECAY = 0.6
LAMBDA = 0.5


def double_exponential(tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    """Peak-normalised ``exp(-t/tau_decay) - exp(-t/tau_rise)``, down to ~1e-6 of its peak."""
    n = max(2, int(np.ceil(13.815510557964274 * tau_decay * fs)))
    t = np.arange(n) / fs
    h = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    return h / h.max()


def make_traces(
    cells: int,
    frames: int,
    *,
    fs: float = FS,
    tau_rise: float = TAU_RISE,
    tau_decay: float = TAU_DECAY,
    rate_hz: float = 1.0,
    f0: float = 1000.0,
    amplitude: float = 100.0,
    noise_sd: float = 15.0,
    drift: float = 50.0,
    seed: int = 0,
) -> np.ndarray:
    """Deterministic synthetic calcium traces in raw fluorescence units.

    Parameters
    ----------
    cells, frames : int
        Output shape ``(cells, frames)``.
    fs, tau_rise, tau_decay : float
        Sampling rate (Hz) and indicator kinetics (s).
    rate_hz : float
        Mean Poisson firing rate.
    f0 : float
        Baseline fluorescence; each cell gets F0 within +-10 %.
    amplitude : float
        Fluorescence increase for one spike.
    noise_sd : float
        Gaussian noise standard deviation.
    drift : float
        Amplitude of the slow drift (a sinusoid with a 1-5 min period plus a smoothed
        random walk).
    seed : int
        Seed of ``numpy.random.default_rng``; the same arguments always give the same array.

    Returns
    -------
    ndarray, shape (cells, frames), float64
    """
    rng = np.random.default_rng(seed)
    kernel = double_exponential(tau_rise, tau_decay, fs)
    spikes = rng.poisson(rate_hz / fs, size=(cells, frames)).astype(np.float64)
    # Linear (not circular) convolution through a zero-padded FFT: fast for any batch.
    size = 1 << int(np.ceil(np.log2(frames + kernel.size - 1)))
    calcium = np.fft.irfft(np.fft.rfft(spikes, size, axis=1) * np.fft.rfft(kernel, size), size, axis=1)[:, :frames]
    t = np.arange(frames) / fs
    period = rng.uniform(60.0, 300.0, size=(cells, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(cells, 1))
    walk = np.cumsum(rng.normal(size=(cells, frames)), axis=1)
    width = max(1, min(frames, int(10 * fs)))  # ~10 s moving average keeps the walk slow
    csum = np.cumsum(np.pad(walk, ((0, 0), (width, 0)), mode="edge"), axis=1)
    walk = (csum[:, width:] - csum[:, :-width]) / width
    walk -= walk.mean(axis=1, keepdims=True)
    walk /= np.maximum(np.abs(walk).max(axis=1, keepdims=True), 1e-12)
    slow = drift * (0.5 * np.sin(2 * np.pi * t / period + phase) + 0.5 * walk)
    cell_f0 = f0 * rng.uniform(0.9, 1.1, size=(cells, 1))
    return cell_f0 + amplitude * calcium + slow + rng.normal(scale=noise_sd, size=(cells, frames))
