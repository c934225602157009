"""Numba-compiled CPU kernels for the NumPy backend.

They are the CPU twins of the CUDA kernels (``calab/backends/cuda/kernels/*.cu``):

* ``ar2_forward`` / ``ar2_adjoint`` — the banded AR(2) recursions in the reference's
  float32 operation order.  A recursion is latency-bound (each sample waits for the
  previous one), so a group of rows is advanced together: the independent chains fill
  the CPU pipeline and run ~10x faster than ``scipy.signal.lfilter`` row by row.
* ``proximal_pass`` + ``accumulate`` — the FISTA proximal step and extrapolation
  (exact float32, vectorised) and the per-cell float64 accumulators of the restart and
  convergence tests, in two passes over memory instead of a dozen NumPy passes.

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

__all__ = ["GROUP", "HAVE_NUMBA", "NUMBA_ERROR", "accumulate", "ar2_adjoint", "ar2_forward", "proximal_pass"]

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

    @njit(nogil=True, cache=True)
    def proximal_pass(x, y, gradient, step, threshold, momentum, box, x_new, y_new):  # pragma: no cover
        """Proximal step and extrapolation into ``x_new``/``y_new``, exactly in float32.

        No reductions here, so the loop vectorises without changing any rounding.
        """
        rows, n = x.shape
        zero = np.float32(0.0)
        one = np.float32(1.0)
        for b in range(rows):
            shrink = threshold[b]
            mu = momentum[b]
            if box:
                for i in range(n):
                    new = min(max((y[b, i] - step * gradient[b, i]) - shrink, zero), one)
                    x_new[b, i] = new
                    y_new[b, i] = min(max(new + mu * (new - x[b, i]), zero), one)
            else:
                for i in range(n):
                    new = max((y[b, i] - step * gradient[b, i]) - shrink, zero)
                    x_new[b, i] = new
                    y_new[b, i] = max(new + mu * (new - x[b, i]), zero)

    @njit(nogil=True, cache=True, fastmath={"reassoc"})
    def accumulate(x_old, y_old, x_new, change, size, restart_signal):  # pragma: no cover
        """Per-row float64 sums ``Σ Δ²``, ``Σ x_old²``, ``Σ (y − x_new) Δ``.

        Reassociation lets the float64 sums vectorise; it changes them only at the 1e-16
        relative level, far below the 1e-8 convergence test they feed.
        """
        rows, n = x_old.shape
        for b in range(rows):
            c = 0.0
            s = 0.0
            r = 0.0
            for i in range(n):
                old = np.float64(x_old[b, i])
                new = np.float64(x_new[b, i])
                delta = new - old
                c += delta * delta
                s += old * old
                r += (np.float64(y_old[b, i]) - new) * delta
            change[b] = c
            size[b] = s
            restart_signal[b] = r

else:  # pragma: no cover
    ar2_forward = ar2_adjoint = proximal_pass = accumulate = None
