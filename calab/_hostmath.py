"""Host arithmetic that every layer shares: the reference's rounding, the rolling rank,
the Gram boundary of a truncated kernel.

Plain NumPy and ``math`` only; nothing here imports another calab module, so the backends
(the lowest compute layer) can use it without reaching up to :mod:`calab.kernel`,
:mod:`calab.filters` or :mod:`calab.engine`, which re-export these names.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BASELINE_QUANTILE", "gram_boundary", "rolling_rank", "round_half_away"]

#: quantile of the rolling baseline (the 20th percentile of the causal window)
BASELINE_QUANTILE = 0.2


def round_half_away(value: float) -> float:
    """Round half away from zero (Rust's ``f64::round``), unlike Python's banker's rounding."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def rolling_rank(window_length: int, quantile: float = BASELINE_QUANTILE) -> int:
    """0-based rank of the order statistic in a full window of ``window_length`` samples."""
    return int(min(round_half_away((window_length - 1) * quantile), window_length - 1))


def gram_boundary(kernel: np.ndarray) -> np.ndarray:
    """Correction that turns the untruncated Gram operator into ``KᵀK`` for ``K`` truncated to n.

    ``KᵀK y`` equals the full autocorrelation filter ``(h̃ * h) * y`` except on the last
    ``m = N_k − 1`` samples, which miss the part of ``K y`` that falls beyond the end of the
    trace.  That part is ``y[:, n−m:] @ M`` with ``M = H Hᵀ``, ``H[p, q] = h[q + m − p]``
    for ``p ≥ q``.

    Parameters
    ----------
    kernel : numpy.ndarray
        ``(N_k,)`` kernel taps.

    Returns
    -------
    numpy.ndarray
        ``(m, m)`` float32 matrix ``M``.
    """
    taps = kernel.astype(np.float64)
    m = taps.size - 1
    p = np.arange(m)[:, None]
    q = np.arange(m)[None, :]
    index = q + m - p
    tail = np.where(p >= q, taps[np.clip(index, 0, m)], 0.0)
    return (tail @ tail.T).astype(np.float32)
