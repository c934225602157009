"""Kernel shape maths of the CaDecon loop: peak time / FWHM, shape RMSE, convergence, final selection.

Host-side float64 scalar work (spec ``indeca.md`` §6.5–6.6, ``kernel-shape.ts`` and
``kernel-math.ts`` of the reference app).  Pure functions plus one small state machine
(:class:`ConvergenceTracker`), so the rules are testable without running any solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "ConvergenceTracker",
    "KERNEL_DURATION_MULTIPLE",
    "kernel_shape_rmse",
    "select_final_taus",
    "shape_to_tau",
    "tau_to_shape",
]

#: The shape RMSE compares kernels over this many slowest decay constants.
KERNEL_DURATION_MULTIPLE = 5.0
_BISECTION_STEPS = 60
_BISECTION_WIDTH = 1e-10
_LOOKUP_SIZE = 300
_LOOKUP_K_RANGE = (1.001, 10000.0)


def _biexp(t: float, tau_rise: float, tau_decay: float) -> float:
    return math.exp(-t / tau_decay) - math.exp(-t / tau_rise)


def peak_time(tau_rise: float, tau_decay: float) -> float:
    """Time (s) of the maximum of ``exp(-t/τd) - exp(-t/τr)``; requires ``0 < τr < τd``."""
    return tau_rise * tau_decay / (tau_decay - tau_rise) * math.log(tau_decay / tau_rise)


def peak_normaliser(tau_rise: float, tau_decay: float) -> float:
    """``1 / max_t (exp(-t/τd) - exp(-t/τr))``: the amplitude of the peak-normalised kernel."""
    return 1.0 / _biexp(peak_time(tau_rise, tau_decay), tau_rise, tau_decay)


def _bisect(lo: float, hi: float, level: float, tau_rise: float, tau_decay: float, rising: bool) -> float:
    """The crossing of ``level`` in ``[lo, hi]`` (the kernel rises, or falls, through it there)."""
    for _ in range(_BISECTION_STEPS):
        if hi - lo < _BISECTION_WIDTH:
            break
        mid = 0.5 * (lo + hi)
        above = _biexp(mid, tau_rise, tau_decay) >= level
        if above == rising:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def tau_to_shape(tau_rise: float, tau_decay: float) -> tuple[float, float]:
    """Peak time and full width at half maximum (s) of ``exp(-t/τd) - exp(-t/τr)``.

    Requires ``0 < tau_rise < tau_decay``.
    """
    if not (0 < tau_rise < tau_decay):
        raise ValueError(f"tau_to_shape needs 0 < tau_rise < tau_decay, got {tau_rise}, {tau_decay}")
    t_peak = peak_time(tau_rise, tau_decay)
    half = 0.5 * _biexp(t_peak, tau_rise, tau_decay)
    t_up = _bisect(0.0, t_peak, half, tau_rise, tau_decay, rising=True)
    t_down = _bisect(t_peak, KERNEL_DURATION_MULTIPLE * tau_decay, half, tau_rise, tau_decay, rising=False)
    return t_peak, t_down - t_up


@lru_cache(maxsize=1)
def _ratio_table() -> tuple[np.ndarray, np.ndarray]:
    """``ln k`` and FWHM/peak-time for 300 ratios ``k = τd/τr`` log-spaced on [1.001, 1e4]."""
    log_k = np.linspace(math.log(_LOOKUP_K_RANGE[0]), math.log(_LOOKUP_K_RANGE[1]), _LOOKUP_SIZE)
    ratios = np.empty(_LOOKUP_SIZE)
    for index, value in enumerate(log_k):
        t_peak, fwhm = tau_to_shape(1.0, math.exp(value))
        ratios[index] = fwhm / t_peak
    return log_k, ratios


def shape_to_tau(t_peak: float, fwhm: float) -> tuple[float, float] | None:
    """Taus of the double exponential with this peak time and FWHM, or None if none has it.

    Inverts :func:`tau_to_shape` through a 300-entry lookup of ``FWHM/t_peak`` against
    ``k = τd/τr`` (linear interpolation in ``ln k``), so a round trip carries a ~1e-5
    relative error, as in the reference app.
    """
    if not (0 < t_peak < fwhm) or not math.isfinite(fwhm):
        return None
    log_k, ratios = _ratio_table()
    ratio = fwhm / t_peak
    if ratios[0] < ratios[-1]:
        order_log_k, order_ratios = log_k, ratios
    else:  # FWHM/t_peak falls with k: search the reversed table
        order_log_k, order_ratios = log_k[::-1], ratios[::-1]
    if not (order_ratios[0] <= ratio <= order_ratios[-1]):
        return None
    k = math.exp(float(np.interp(ratio, order_ratios, order_log_k)))
    tau_rise = t_peak * (k - 1) / (k * math.log(k))
    return tau_rise, k * tau_rise


def _degenerate(tau_rise: float, tau_decay: float) -> bool:
    return not (math.isfinite(tau_rise) and math.isfinite(tau_decay) and 0 < tau_rise < tau_decay)


def kernel_shape_rmse(previous: tuple[float, float], current: tuple[float, float], fs: float) -> float | None:
    """RMSE between two peak-normalised kernels, as a fraction of the peak (None if either is degenerate).

    Both are sampled on ``n = max(24, ceil(window·fs))`` points over
    ``window = 5·max(τd_previous, τd_current)`` (spec §6.5).
    """
    (r0, d0), (r1, d1) = previous, current
    if _degenerate(r0, d0) or _degenerate(r1, d1):
        return None
    window = KERNEL_DURATION_MULTIPLE * max(d0, d1)
    n = max(24, math.ceil(window * fs))
    t = np.arange(n) * (window / n)
    a = np.exp(-t / d0) - np.exp(-t / r0)
    b = np.exp(-t / d1) - np.exp(-t / r1)
    a /= a.max()
    b /= b.max()
    return float(np.sqrt(np.mean((a - b) ** 2)))


@dataclass
class ConvergenceTracker:
    """The loop's convergence rule (spec §6.5), fed one merged kernel per iteration.

    An iteration is *stable* when its kernel differs from the previous accepted kernel by a
    shape RMSE below ``tolerance`` and at least ``min_iterations`` iterations have run;
    ``patience`` consecutive stable iterations declare convergence, reported at the first
    iteration of that streak.  Degenerate kernels are never accepted as "previous".
    """

    tolerance: float
    patience: int
    min_iterations: int
    fs: float
    previous: tuple[float, float]
    streak: int = 0
    streak_start: int | None = None
    converged_at: int | None = None
    rmse_history: list[float | None] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.converged_at is not None

    def update(self, iteration: int, taus: tuple[float, float]) -> float | None:
        """Record iteration ``iteration``'s merged ``(tau_rise, tau_decay)``; returns its shape RMSE."""
        rmse = kernel_shape_rmse(self.previous, taus, self.fs)
        self.rmse_history.append(rmse)
        stable = rmse is not None and iteration >= self.min_iterations and rmse < self.tolerance
        if stable:
            if self.streak == 0:
                self.streak_start = iteration
            self.streak += 1
            if self.converged_at is None and self.streak >= self.patience:
                self.converged_at = self.streak_start
        else:
            self.streak, self.streak_start = 0, None
        if not _degenerate(*taus):
            self.previous = (float(taus[0]), float(taus[1]))
        return rmse


def select_final_taus(
    trail: Sequence[tuple[float, float]], window: int, current: tuple[float, float]
) -> tuple[float, float]:
    """Final kernel (spec §6.6): median peak time and FWHM of the last ``window`` kernels.

    ``trail`` holds the non-degenerate merged ``(tau_rise, tau_decay)`` of each iteration in
    order.  Falls back to the medians of the taus when the median shape has no double-
    exponential, and to ``current`` when the trail is empty.
    """
    tail = [taus for taus in trail if not _degenerate(*taus)][-max(1, window):]
    if not tail:
        return current
    shapes = np.array([tau_to_shape(*taus) for taus in tail])
    found = shape_to_tau(float(np.median(shapes[:, 0])), float(np.median(shapes[:, 1])))
    if found is not None:
        return found
    taus = np.array(tail)
    return float(np.median(taus[:, 0])), float(np.median(taus[:, 1]))
