"""Band-pass gain with independent high-/low-pass switches and the noise floor σ.

Spec ``indeca.md`` §1.3 (filter) and §2.4 (noise level).  The gain curve depends only on
``(n, τr, τd, fs, hp, lp)`` and is computed once on the host; it is applied to a whole
batch with the backend's FFT (:func:`calab.filters.apply_gain`).  The probe gain of §2.4
depends only on ``(T, u, τr, τd, fs, hp, lp)`` and is cached.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from calab.filters import MIN_FILTER_LENGTH, apply_gain

__all__ = ["filter_gain", "filter_batch", "noise_sigma", "probe_variance_gain", "probe_signal"]

#: high-pass margin (cutoff = 1/(2π·τd·16)) and low-pass margin (4/(2π·τr))
HP_MARGIN = 16.0
LP_MARGIN = 4.0

_LCG_SEED = 0x9E3779B97F4A7C15
_LCG_MUL = 6364136223846793005
_LCG_INC = 1442695040888963407
_MASK64 = (1 << 64) - 1


def filter_gain(n: int, tau_rise: float, tau_decay: float, fs: float, hp: bool, lp: bool) -> np.ndarray | None:
    """Zero-phase gain on the ``n//2 + 1`` rFFT bins, or None when the filter is skipped.

    Cutoffs from the unclamped taus: ``f_hp = 1/(2π·τd·16)``, ``f_lp = min(4/(2π·τr),
    fs/2)``; raised-cosine tapers over ``[0.5 f, 1.5 f]``.  Skipped when neither side is
    enabled, ``n < 8``, a parameter is not positive, or both sides are on and
    ``f_hp >= f_lp``.
    """
    if not (hp or lp) or n < MIN_FILTER_LENGTH or tau_rise <= 0 or tau_decay <= 0 or fs <= 0:
        return None
    f_hp = 1.0 / (2.0 * math.pi * tau_decay * HP_MARGIN)
    f_lp = min(LP_MARGIN / (2.0 * math.pi * tau_rise), fs / 2.0)
    if hp and lp and f_hp >= f_lp:
        return None
    freq = np.arange(n // 2 + 1, dtype=np.float64) * (fs / n)
    gain = np.ones_like(freq)
    if hp:
        rising = 0.5 * (1.0 - np.cos(np.pi * (freq - 0.5 * f_hp) / f_hp))
        gain *= np.where(freq < 0.5 * f_hp, 0.0, np.where(freq < 1.5 * f_hp, rising, 1.0))
    if lp:
        falling = 0.5 * (1.0 + np.cos(np.pi * (freq - 0.5 * f_lp) / f_lp))
        gain *= np.where(freq < 0.5 * f_lp, 1.0, np.where(freq < 1.5 * f_lp, falling, 0.0))
    return gain.astype(np.float32)


def filter_batch(backend: Any, batch: Any, tau_rise: float, tau_decay: float, fs: float, hp: bool, lp: bool) -> Any:
    """Band-pass a ``(B, n)`` float32 batch (unchanged when the filter is skipped)."""
    gain = filter_gain(batch.shape[-1], tau_rise, tau_decay, fs, hp, lp)
    if gain is None:
        return batch
    return apply_gain(backend, batch, gain).astype(backend.xp.float32)


@functools.lru_cache(maxsize=32)
def probe_signal(length: int) -> np.ndarray:
    """The reference's fixed noise probe: ``length`` LCG samples in ``[−1, 0)``, float32.

    ``s ← s·6364136223846793005 + 1442695040888963407 (mod 2⁶⁴)`` before each sample,
    value ``(s >> 33)/2³¹ − 1``.  Generated in blocks with jump-ahead multipliers so the
    64-bit wrap-around is done by NumPy's uint64 arithmetic.
    """
    block = 1024
    mul = np.empty(block, dtype=np.uint64)
    inc = np.empty(block, dtype=np.uint64)
    a, c = 1, 0
    for k in range(block):  # s_{k+1} = A_k s_0 + C_k
        a, c = (a * _LCG_MUL) & _MASK64, (c * _LCG_MUL + _LCG_INC) & _MASK64
        mul[k], inc[k] = a, c
    states = np.empty(length, dtype=np.uint64)
    current = np.uint64(_LCG_SEED)
    with np.errstate(over="ignore"):
        for start in range(0, length, block):
            count = min(block, length - start)
            chunk = mul[:count] * current + inc[:count]
            states[start : start + count] = chunk
            current = chunk[-1]
    values = (states >> np.uint64(33)).astype(np.float64) / 2.0**31 - 1.0
    return values.astype(np.float32)


@functools.lru_cache(maxsize=64)
def probe_variance_gain(length: int, factor: int, tau_rise: float, tau_decay: float, fs_up: float, hp: bool, lp: bool) -> float:
    """Noise-variance gain of upsample → band-pass → take every ``u``-th sample (host, cached).

    Returns ``Var(grid)/Var(probe)`` (population variances), or NaN when ``Var(probe) <= 0``.
    """
    from calab.backends import get_backend
    from calab.indeca.resample import upsample_traces

    probe = probe_signal(length)
    up = upsample_traces(np, probe[None, :], factor)
    cpu = get_backend("numpy")
    filtered = np.asarray(filter_batch(cpu, up, tau_rise, tau_decay, fs_up, hp, lp))
    grid = filtered[0, :: max(factor, 1)].astype(np.float64)
    variance = float(np.var(probe.astype(np.float64)))
    if variance <= 0:
        return math.nan
    return float(np.var(grid)) / variance


def noise_sigma(
    backend: Any, raw: Any, factor: int, tau_rise: float, tau_decay: float, fs_up: float, hp: bool, lp: bool
) -> np.ndarray:
    """Noise level of the working trace at original-rate positions, per row (§2.4).

    Parameters
    ----------
    raw : device array, shape (B, T), float32
        The raw traces at the original rate.

    Returns
    -------
    numpy.ndarray, shape (B,), float64
    """
    xp = backend.xp
    rows, length = raw.shape
    if length < 8:
        return np.zeros(rows)
    centred = raw.astype(xp.float64) - xp.mean(raw.astype(xp.float64), axis=1, keepdims=True)
    spectrum = xp.fft.rfft(centred, axis=1)
    bins = length // 2 + 1
    upper = spectrum[:, bins // 2 :]
    power = (upper.real * upper.real + upper.imag * upper.imag) / length
    sigma_raw = np.sqrt(np.asarray(backend.to_numpy(xp.mean(power, axis=1)), dtype=np.float64))
    sigma = np.where(sigma_raw > 0, sigma_raw, 0.0)
    if not (hp or lp):
        return sigma
    gain = probe_variance_gain(length, factor, float(tau_rise), float(tau_decay), float(fs_up), bool(hp), bool(lp))
    if math.isnan(gain):
        return sigma
    return sigma * math.sqrt(max(gain, 0.0))
