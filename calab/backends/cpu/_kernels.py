"""Numba-compiled CPU kernels for the NumPy backend.

They are the CPU twins of the CUDA kernels (``calab/backends/cuda/kernels/*.cu``):

* ``ar2_forward`` / ``ar2_adjoint`` — the banded AR(2) recursions in the reference's
  float32 operation order.  A recursion is latency-bound (each sample waits for the
  previous one), so a group of rows is advanced together: the independent chains fill
  the CPU pipeline and run ~10x faster than ``scipy.signal.lfilter`` row by row.
* ``fused_update`` — the FISTA proximal step, momentum, float64 accumulators, restart
  and convergence test in one pass over memory instead of a dozen NumPy passes.

All functions release the GIL (``nogil``) so the backend's thread pool runs cell blocks
on every core.  When Numba is missing (or ``CALAB_DISABLE_NUMBA=1``) the backend falls
back to SciPy/NumPy array code with the same results.
"""

from __future__ import annotations

import os

import numpy as np

try:
    if os.environ.get("CALAB_DISABLE_NUMBA", "").strip() not in ("", "0"):
        raise ImportError("disabled by CALAB_DISABLE_NUMBA")
    from numba import njit

    NUMBA_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised with CALAB_DISABLE_NUMBA=1
    njit = None
    NUMBA_ERROR = str(exc)

HAVE_NUMBA = njit is not None
#: rows advanced together by the recursions (enough independent chains to hide latency)
GROUP = 8

__all__ = ["GROUP", "HAVE_NUMBA", "NUMBA_ERROR", "ar2_adjoint", "ar2_forward", "fused_update"]

if HAVE_NUMBA:

    @njit(nogil=True, cache=True)
    def ar2_forward(source, g1, g2, gain, out):  # pragma: no cover - compiled
        """``out[b, t] = (g1·out[b, t−1] + g2·out[b, t−2]) + source[b, t−1]·gain``, ``out[b, 0] = 0``."""
        rows, n = source.shape
        zero = np.float32(0.0)
        for first in range(0, rows, GROUP):
            count = min(GROUP, rows - first)
            last1 = np.zeros(GROUP, np.float32)
            last2 = np.zeros(GROUP, np.float32)
            for j in range(count):
                if n > 0:
                    out[first + j, 0] = zero
            for t in range(1, n):
                for j in range(count):
                    value = (g1 * last1[j] + g2 * last2[j]) + source[first + j, t - 1] * gain
                    out[first + j, t] = value
                    last2[j] = last1[j]
                    last1[j] = value

    @njit(nogil=True, cache=True)
    def ar2_adjoint(residual, g1, g2, gain, out):  # pragma: no cover - compiled
        """Transpose of :func:`ar2_forward`: ``a_t = (e_t·gain + g1·a_{t+1}) + g2·a_{t+2}``,
        ``out[t−1] = a_t``, ``out[n−1] = 0``."""
        rows, n = residual.shape
        zero = np.float32(0.0)
        for first in range(0, rows, GROUP):
            count = min(GROUP, rows - first)
            next1 = np.zeros(GROUP, np.float32)
            next2 = np.zeros(GROUP, np.float32)
            for j in range(count):
                if n > 0:
                    out[first + j, n - 1] = zero
            for t in range(n - 1, 0, -1):
                for j in range(count):
                    value = (residual[first + j, t] * gain + g1 * next1[j]) + g2 * next2[j]
                    out[first + j, t - 1] = value
                    next2[j] = next1[j]
                    next1[j] = value

    @njit(nogil=True, cache=True, inline="always")
    def _element(x, y, gradient, b, i, step, shrink, momentum, box):  # pragma: no cover
        """Update element ``i`` of row ``b``; return its float64 accumulator terms."""
        zero = np.float32(0.0)
        one = np.float32(1.0)
        old = x[b, i]
        at = y[b, i]
        value = (at - step * gradient[b, i]) - shrink
        new = min(max(value, zero), one) if box else max(value, zero)
        ahead = new + momentum * (new - old)
        ahead = min(max(ahead, zero), one) if box else max(ahead, zero)
        x[b, i] = new
        y[b, i] = ahead
        delta = np.float64(new) - np.float64(old)
        return delta * delta, np.float64(old) * np.float64(old), (np.float64(at) - np.float64(new)) * delta

    @njit(nogil=True, cache=True)
    def fused_update(x, y, gradient, t, k, threshold, step, box, cap, active, converged):  # pragma: no cover
        """One FISTA update of every row, in place on ``x``, ``y``, ``t``, ``k``, flags."""
        rows, n = x.shape
        for b in range(rows):
            t_next = (1.0 + np.sqrt(1.0 + 4.0 * t[b] * t[b])) / 2.0
            momentum = np.float32((t[b] - 1.0) / t_next)
            shrink = threshold[b]
            # Two interleaved partial sums per accumulator: independent float64 add
            # chains the CPU overlaps, instead of one chain that waits on every add.
            c0 = c1 = s0 = s1 = r0 = r1 = 0.0
            pairs = n // 2
            for half in range(pairs):
                i = 2 * half
                dc, ds, dr = _element(x, y, gradient, b, i, step, shrink, momentum, box)
                c0 += dc
                s0 += ds
                r0 += dr
                dc, ds, dr = _element(x, y, gradient, b, i + 1, step, shrink, momentum, box)
                c1 += dc
                s1 += ds
                r1 += dr
            if n % 2:
                dc, ds, dr = _element(x, y, gradient, b, n - 1, step, shrink, momentum, box)
                c0 += dc
                s0 += ds
                r0 += dr
            change, size, restart_signal = c0 + c1, s0 + s1, r0 + r1
            k[b] += 1
            if k[b] > 1 and restart_signal > 0.0:
                t[b] = 1.0
                for i in range(n):
                    y[b, i] = x[b, i]
            else:
                t[b] = t_next
            done = k[b] > 5 and change < 1e-8 * (size + 1e-20)
            converged[b] = converged[b] or done
            active[b] = (not converged[b]) and k[b] < cap

else:  # pragma: no cover
    ar2_forward = ar2_adjoint = fused_update = None
