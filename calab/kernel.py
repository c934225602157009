"""Calcium-kernel maths on the host, in float64, shared bit for bit by every backend.

Everything here follows the published calab 0.3.0 (spec ``numerics.md`` §2–3, §8.2):
the double-exponential kernel, its DC gain and Lipschitz constant, the AR(2)
coefficients and impulse peak of the banded operator, and the parameter validation
with its messages.
"""

from __future__ import annotations

import math

import numpy as np

from calab._hostmath import round_half_away
from calab._validate import (
    check_kernel_parameters,
    check_real_array,
    check_real_scalar,
    format_number,
)
from calab._validate import _scalar_value as _number

__all__ = [
    "KERNEL_LENGTH_CONSTANT",
    "MAX_KERNEL_SAMPLES",
    "ar2_coefficients",
    "ar2_impulse_peak",
    "ar2_impulse_response",
    "ar2_lipschitz",
    "baseline_window",
    "build_kernel",
    "compute_lipschitz",
    "compute_upsample_factor",
    "dc_gain",
    "format_number",
    "round_half_away",
    "tau_to_ar2",
    "validate_parameters",
]

#: -ln(1e-6): the kernel is truncated where the decay has fallen to 1e-6 of its peak.
KERNEL_LENGTH_CONSTANT = 13.815510557964274
#: Longest kernel the solver accepts (a guard against tau/fs given in the wrong units).
MAX_KERNEL_SAMPLES = 1 << 20
#: Largest usable upsampling factor.
MAX_UPSAMPLE_FACTOR = 1 << 26


def validate_parameters(fs: float, tau_rise: float, tau_decay: float, lam: float = 0.0) -> None:
    """Check sampling rate, time constants and λ as the reference does.

    Raises
    ------
    ValueError
        ``"invalid parameter: ..."`` naming the first failing parameter and the fix.
    TypeError
        If a parameter is not a real number (bool, str, None, complex and arrays with more
        than one element included); see :func:`calab._validate.check_kernel_parameters`.
    """
    check_kernel_parameters(fs, tau_rise, tau_decay, lam)


def _clamp_near_equal(tau_rise: float, tau_decay: float) -> float:
    # Equal time constants make the double exponential vanish; the reference then uses
    # half the decay so the kernel stays well defined.
    if abs(tau_rise - tau_decay) < 1e-6 * max(tau_decay, tau_rise, 1e-12):
        return 0.5 * tau_decay
    return tau_rise


def build_kernel(tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    """Build the peak-normalised double-exponential calcium kernel.

    ``h[i] = exp(-i dt / tau_decay) - exp(-i dt / tau_rise)``, ``dt = 1/fs``, sampled from
    t = 0 (so ``h[0] = 0``: the response starts one sample after the spike), truncated
    where the decay reaches 1e-6, divided by its maximum.

    Parameters
    ----------
    tau_rise, tau_decay : float
        Rise and decay time constants in seconds, ``0 < tau_rise < tau_decay``.
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    numpy.ndarray
        Shape ``(N_k,)``, float32, ``N_k = max(2, ceil(13.8155 tau_decay fs))``; maximum 1.

    Raises
    ------
    ValueError
        For non-finite or non-positive parameters, ``tau_rise >= tau_decay``, or a kernel
        longer than 2**20 samples.
    """
    validate_parameters(fs, tau_rise, tau_decay, 0.0)
    return _kernel_unchecked(float(tau_rise), float(tau_decay), float(fs))


def _kernel_float64(tau_rise: float, tau_decay: float, fs: float) -> tuple[np.ndarray, float, float, float]:
    """``build_kernel`` before rounding: ``(h, decay, rise, peak)`` with
    ``h[j] = (decay**j − rise**j)/peak`` (float64), ``decay = exp(−dt/τd)``, ``rise = exp(−dt/τr)``."""
    tau_rise = _clamp_near_equal(tau_rise, tau_decay)
    dt = 1.0 / fs
    length = max(2, math.ceil(KERNEL_LENGTH_CONSTANT * tau_decay / dt))
    t = np.arange(length, dtype=np.float64) * dt
    h = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    peak = max(0.0, float(h.max()))
    if peak > 0:
        h = h / peak
    return h, math.exp(-dt / tau_decay), math.exp(-dt / tau_rise), peak if peak > 0 else 1.0


def _kernel_unchecked(tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    return _kernel_float64(tau_rise, tau_decay, fs)[0].astype(np.float32)


def dc_gain(kernel: np.ndarray) -> float:
    """Sum of the kernel taps in float64 (the DC gain ``G``; λ is scaled by it)."""
    return float(np.asarray(kernel, dtype=np.float32).astype(np.float64).sum())


def compute_lipschitz(kernel: np.ndarray) -> float:
    """Lipschitz constant of the gradient of ``½‖K s − y‖²`` for a causal kernel.

    For a non-negative kernel ``|H(ω)| ≤ H(0)``, so ``L = (Σh)²``; otherwise the maximum
    of ``|H(ω)|²`` over a DFT grid of ``next_pow2(2 N_k)`` points.

    Parameters
    ----------
    kernel : array_like
        1-D kernel taps, real integers or floats (cast to float32).

    Returns
    -------
    float
        ``L >= 1e-10``.

    Raises
    ------
    ValueError
        If the kernel is not 1-D (calab 0.3.0 flattened 0-d input), is empty or contains
        NaN/inf (including float64 values that overflow float32).
    TypeError
        If the kernel is boolean, complex, object or text data.
    """
    kernel = check_real_array(kernel, "kernel", ndim=1)
    with np.errstate(over="ignore"):  # float64 taps beyond float32 become inf, reported below
        taps = np.ascontiguousarray(np.asarray(kernel, dtype=np.float32))
    if taps.size == 0:
        raise ValueError("invalid input: kernel must not be empty")
    bad = np.flatnonzero(~np.isfinite(taps))
    if bad.size:
        raise ValueError(
            f"invalid input: kernel contains a non-finite value (NaN or infinity) at index {bad[0]}"
        )
    taps64 = taps.astype(np.float64)
    if np.all(taps >= 0):
        return max(float(taps64.sum()) ** 2, 1e-10)
    size = 1 << max(0, math.ceil(math.log2(2 * taps.size)))
    omega = 2.0 * np.pi * np.arange(size // 2 + 1) / size
    k = np.arange(taps.size)
    phase = np.outer(omega, k)
    re = (taps64 * np.cos(phase)).sum(axis=1)
    im = (taps64 * np.sin(phase)).sum(axis=1)
    return max(float(np.max(re * re + im * im)), 1e-10)


def tau_to_ar2(tau_rise: float, tau_decay: float, fs: float) -> tuple[float, float, float, float]:
    """Derive AR(2) coefficients from the time constants (no clamp).

    Returns
    -------
    tuple of float
        ``(g1, g2, d, r)`` with ``d = exp(-dt/tau_decay)``, ``r = exp(-dt/tau_rise)``,
        ``g1 = d + r``, ``g2 = -(d r)``, ``dt = 1/fs``.

    Raises
    ------
    TypeError
        If a parameter is not a real number (bool and str included).
    ValueError
        If a parameter is NaN, infinite or zero, or a negative one makes the exponential
        overflow (calab 0.3.0 raised ZeroDivisionError/OverflowError there).  Other
        negative values are computed as in 0.3.0 (a negative ``tau_rise`` gives
        ``r > 1``).
    """
    values = {}
    for name, value in (("tau_rise", tau_rise), ("tau_decay", tau_decay), ("fs", fs)):
        number = check_real_scalar(value, name)
        if number == 0:
            raise ValueError(f"{name} must not be 0 (tau_to_ar2 divides by it)")
        values[name] = number
    try:
        return _ar2_unchecked(values["tau_rise"], values["tau_decay"], values["fs"])
    except OverflowError:
        # Only for negative values (as in calab 0.3.0, they are not rejected as such).
        raise ValueError(
            f"tau_to_ar2({format_number(values['tau_rise'])}, {format_number(values['tau_decay'])}, "
            f"{format_number(values['fs'])}): exp(-1/(fs*tau)) overflows; time constants and fs "
            "must be positive"
        ) from None


def _ar2_unchecked(tau_rise: float, tau_decay: float, fs: float) -> tuple[float, float, float, float]:
    dt = 1.0 / fs
    d = math.exp(-dt / tau_decay)
    r = math.exp(-dt / tau_rise)
    return d + r, -(d * r), d, r


def ar2_coefficients(tau_rise: float, tau_decay: float, fs: float) -> tuple[float, float]:
    """``(g1, g2)`` of the banded operator, with the near-equal clamp of the kernel."""
    g1, g2, _, _ = _ar2_unchecked(_clamp_near_equal(tau_rise, tau_decay), tau_decay, fs)
    return g1, g2


def ar2_impulse_peak(g1: float, g2: float, tau_decay: float, fs: float) -> float:
    """Peak of the AR(2) impulse response, used to normalise the banded operator to 1."""
    steps = math.ceil(5.0 * tau_decay * fs) + 10
    previous, current, peak = 0.0, 1.0, 1.0
    for _ in range(1, steps):
        new = g1 * current + g2 * previous
        peak = max(peak, new)
        if new < 0.95 * peak:
            break
        previous, current = current, new
    return max(peak, 1.0)


def ar2_lipschitz(g1: float, g2: float, impulse_peak: float) -> float:
    """Lipschitz constant of the peak-normalised banded operator (frequency-grid maximum)."""
    omega = np.pi * np.arange(4097) / 4096.0
    cos, sin = np.cos(omega), np.sin(omega)
    re = 1.0 - g1 * cos - g2 * (2.0 * cos * cos - 1.0)
    im = g1 * sin + g2 * (2.0 * sin * cos)
    power = re * re + im * im
    power = power[power > 1e-30]
    best = float(np.max(1.0 / power)) if power.size else 0.0
    return max(1e-10, best) / (impulse_peak * impulse_peak)


def ar2_impulse_response(g1: float, g2: float, gain: float, max_length: int, rel_tol: float = 1e-9) -> np.ndarray:
    """Impulse response of the banded operator, for evaluating it as a convolution.

    ``h[0] = 0`` and ``h[t] = gain · c_{t−1}`` with ``c_0 = 1``, ``c_1 = g1``,
    ``c_t = g1 c_{t−1} + g2 c_{t−2}`` (float64), cut where it has decayed below
    ``rel_tol`` of its peak, and never longer than ``max_length``.  Convolving with it
    is the banded recursion up to that cut and float rounding.

    Returns
    -------
    numpy.ndarray
        ``(length,)`` float32, ``2 <= length <= max(max_length, 2)``.
    """
    values = [0.0, float(gain)]
    previous, current, peak = 0.0, 1.0, 1.0
    while len(values) < max_length:
        previous, current = current, g1 * current + g2 * previous
        peak = max(peak, abs(current))
        values.append(gain * current)
        if abs(current) < rel_tol * peak and abs(previous) < rel_tol * peak:
            break
    return np.asarray(values, dtype=np.float32)


def baseline_window(tau_decay: float, fs: float) -> int:
    """Rolling-baseline window in samples: ``5 max(ceil(5 tau_decay fs), 1)``."""
    return 5 * max(math.ceil((5.0 * tau_decay) * fs), 1)


def compute_upsample_factor(fs: float, target_fs: float) -> int:
    """Compute the upsample factor for a given sampling rate and target.

    Parameters
    ----------
    fs : float
        Original sampling rate in Hz.
    target_fs : float
        Target sampling rate in Hz.

    Returns
    -------
    int
        ``max(1, round(target_fs / fs))`` with halves rounded away from zero (>= 1).

    Raises
    ------
    ValueError
        If ``fs`` or ``target_fs`` is not finite and positive, or the ratio is unusably large.
    TypeError
        If ``fs`` or ``target_fs`` is not a real number (bool and str included).
    """
    fs_value, target = (float(_number(v, n, integer=False)) for v, n in ((fs, "fs"), (target_fs, "target_fs")))
    fmt = format_number
    if not (math.isfinite(fs_value) and fs_value > 0):
        raise ValueError(f"invalid parameter: fs must be a finite sampling rate > 0 Hz, got {fmt(fs_value)}")
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"invalid parameter: target_fs must be finite and > 0 Hz, got {fmt(target)}")
    factor = round_half_away(target / fs_value)
    if factor > MAX_UPSAMPLE_FACTOR:
        raise ValueError(
            f"invalid parameter: target_fs / fs = {fmt(target / fs_value)} is not a usable upsample factor"
        )
    return int(max(1.0, factor))
