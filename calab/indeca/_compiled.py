"""Compiled host kernels for the InDeCa threshold search (Numba; used on host-array backends).

:func:`threshold_sse` evaluates candidate thresholds of many rows: for each candidate the
spike train ``1[x̂ ≥ θ]``, the AR(2) forward recursion (the reference's float32 operation
order) and, in the same pass, the float64 sums the least-squares fit needs; the residual
sum of squares then follows from the sums in closed form
(``Σ(y − αc − b)² = Syy − 2αScy − 2bSy + α²Scc + 2αbSc + b²N``), so nothing of length
``n`` is stored per candidate.  Sixteen candidates of a row advance together, one per
lane of explicit SIMD vectors (:mod:`calab.backends.cpu._simd`), so the recursion state
and the sums stay in registers from one sample to the next.  Each candidate's arithmetic
(float32 recursion, float64 sums in sample order) does not depend on its lane, so the
lane count does not change any result.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HAVE_NUMBA", "LANES", "threshold_sse"]

LANES = 16

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False
    njit = None

if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _fit(sc, scc, scy, sy, count):  # pragma: no cover - compiled
        if count == 0:
            return 0.0, 0.0
        det = scc * count - sc * sc
        if abs(det) < 1e-30:
            return 0.0, sy / count
        alpha = (scy * count - sc * sy) / det
        base = (scc * sy - sc * scy) / det
        if alpha < 0:
            return 0.0, sy / count
        return alpha, base

    _SOURCE = """
def threshold_sse(xhat, target, thetas, g1, g2, gain, lo, hi, grid_start, grid_stride, noise_mode, alpha_out, base_out, sse_out):
    W = {lanes}
    rows, n = xhat.shape
    columns = thetas.shape[1]
    count = hi - lo
    theta = np.empty(W, dtype=np.float32)
    sums = np.empty(6 * W)
    G1 = simd.splat(g1, W)
    G2 = simd.splat(g2, W)
    GAIN = simd.splat(gain, W)
    zero = simd.splat(np.float32(0.0), W)
    one = simd.splat(np.float32(1.0), W)
    zero64 = simd.splat(0.0, W)
    for b in range(rows):
        sy = 0.0
        syy = 0.0
        for i in range(lo, hi):
            y = np.float64(target[b, i])
            sy += y
            syy += y * y
        gy = 0.0
        gyy = 0.0
        g_count = 0
        i = grid_start
        while i < n - grid_start:
            y = np.float64(target[b, i])
            gy += y
            gyy += y * y
            g_count += 1
            i += grid_stride
        for first in range(0, columns, W):
            any_finite = False
            for lane in range(W):
                j = first + lane
                theta[lane] = thetas[b, j] if j < columns else np.float32(np.inf)
                if np.isfinite(theta[lane]):
                    any_finite = True
            if not any_finite:
                for lane in range(W):
                    j = first + lane
                    if j < columns:
                        alpha_out[b, j] = 0.0
                        base_out[b, j] = 0.0
                        sse_out[b, j] = np.inf
                continue
            THETA = simd.load(theta, 0, W)
            prev = zero
            before = zero
            sc = zero64
            scc = zero64
            scy = zero64
            gc = zero64
            gcc = zero64
            gcy = zero64
            next_grid = grid_start if noise_mode else n
            if next_grid == 0:
                next_grid += grid_stride  # c[0] = 0 adds nothing
            for t in range(1, n):
                spike = simd.where_greater_equal(simd.splat(xhat[b, t - 1], W), THETA, one, zero)
                value = simd.add(simd.add(simd.mul(G1, prev), simd.mul(G2, before)), simd.mul(spike, GAIN))
                before = prev
                prev = value
                inside = t >= lo and t < hi
                on_grid = t == next_grid and t < n - grid_start
                if t == next_grid:
                    next_grid += grid_stride
                if inside or on_grid:
                    c = simd.widen(value)
                    y = simd.splat(np.float64(target[b, t]), W)
                    cc = simd.mul(c, c)
                    cy = simd.mul(c, y)
                    if inside:
                        sc = simd.add(sc, c)
                        scc = simd.add(scc, cc)
                        scy = simd.add(scy, cy)
                    if on_grid:
                        gc = simd.add(gc, c)
                        gcc = simd.add(gcc, cc)
                        gcy = simd.add(gcy, cy)
            simd.store(sums, 0, sc)
            simd.store(sums, W, scc)
            simd.store(sums, 2 * W, scy)
            simd.store(sums, 3 * W, gc)
            simd.store(sums, 4 * W, gcc)
            simd.store(sums, 5 * W, gcy)
            for lane in range(W):
                j = first + lane
                if j >= columns:
                    continue
                if not np.isfinite(theta[lane]):
                    alpha_out[b, j] = 0.0
                    base_out[b, j] = 0.0
                    sse_out[b, j] = np.inf
                    continue
                alpha, base = _fit(sums[lane], sums[W + lane], sums[2 * W + lane], sy, count)
                if noise_mode:
                    sse = (gyy - 2.0 * alpha * sums[5 * W + lane] - 2.0 * base * gy + alpha * alpha * sums[4 * W + lane]
                           + 2.0 * alpha * base * sums[3 * W + lane] + base * base * g_count)
                else:
                    sse = (syy - 2.0 * alpha * sums[2 * W + lane] - 2.0 * base * sy + alpha * alpha * sums[W + lane]
                           + 2.0 * alpha * base * sums[lane] + base * base * count)
                alpha_out[b, j] = alpha
                base_out[b, j] = base
                sse_out[b, j] = max(sse, 0.0)
"""

    def _compile_threshold_sse():
        from calab.backends.cpu import _simd

        namespace = {"np": np, "simd": _simd, "_fit": _fit, "__name__": __name__}
        # compiled with this file's name, so Numba's on-disk cache can hold the kernel
        exec(compile(_SOURCE.format(lanes=LANES), __file__, "exec"), namespace)
        return njit(cache=True, nogil=True)(namespace["threshold_sse"])

    threshold_sse = _compile_threshold_sse()

else:  # pragma: no cover
    threshold_sse = None
