"""Compiled host kernels for the InDeCa threshold search (Numba; used on host-array backends).

:func:`threshold_sse` evaluates candidate thresholds of many rows in one pass per
candidate: spike train, AR(2) forward recursion (the reference's float32 operation
order), the float64 least-squares sums, then a second pass for the residual sum of
squares — the same arithmetic the array path does, without materialising
``(rows·candidates, n)`` temporaries.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HAVE_NUMBA", "threshold_sse"]

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False
    njit = None

if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def threshold_sse(xhat, target, thetas, g1, g2, gain, lo, hi, grid_start, grid_stride, noise_mode, alpha_out, base_out, sse_out):  # pragma: no cover
        rows, n = xhat.shape
        columns = thetas.shape[1]
        model = np.empty(n, dtype=np.float32)
        count = hi - lo
        for b in range(rows):
            sy = 0.0
            for i in range(lo, hi):
                sy += np.float64(target[b, i])
            for j in range(columns):
                theta = thetas[b, j]
                if not np.isfinite(theta):
                    alpha_out[b, j] = 0.0
                    base_out[b, j] = 0.0
                    sse_out[b, j] = np.inf
                    continue
                previous = np.float32(0.0)
                before = np.float32(0.0)
                model[0] = np.float32(0.0)
                for t in range(1, n):
                    spike = np.float32(1.0) if xhat[b, t - 1] >= theta else np.float32(0.0)
                    value = (g1 * previous + g2 * before) + spike * gain
                    model[t] = value
                    before = previous
                    previous = value
                sc = 0.0
                scc = 0.0
                scy = 0.0
                for i in range(lo, hi):
                    c = np.float64(model[i])
                    sc += c
                    scc += c * c
                    scy += c * np.float64(target[b, i])
                alpha = 0.0
                base = 0.0
                if count > 0:
                    det = scc * count - sc * sc
                    if abs(det) < 1e-30:
                        alpha, base = 0.0, sy / count
                    else:
                        alpha = (scy * count - sc * sy) / det
                        base = (scc * sy - sc * scy) / det
                        if alpha < 0:
                            alpha, base = 0.0, sy / count
                sse = 0.0
                if noise_mode:
                    i = grid_start
                    while i < n - grid_start:
                        r = np.float64(target[b, i]) - alpha * np.float64(model[i]) - base
                        sse += r * r
                        i += grid_stride
                else:
                    for i in range(lo, hi):
                        r = np.float64(target[b, i]) - alpha * np.float64(model[i]) - base
                        sse += r * r
                alpha_out[b, j] = alpha
                base_out[b, j] = base
                sse_out[b, j] = sse

else:  # pragma: no cover
    threshold_sse = None
