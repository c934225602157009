"""Numba-compiled CPU kernels for the NumPy backend.

They are the CPU twins of the CUDA kernels (``calab/backends/cuda/kernels/*.cu``):

* ``ar2_forward`` / ``ar2_adjoint`` — the banded AR(2) recursions in the reference's
  float32 operation order.  A recursion is latency-bound (each sample waits for the
  previous one), so a group of rows is advanced together: the independent chains fill
  the CPU pipeline and run ~10x faster than ``scipy.signal.lfilter`` row by row.
* ``ar2_segment_forward`` / ``ar2_segment_adjoint_residual`` — the segmented recursions
  of :mod:`calab.engine.segments` (opt-in: other float32 rounding).
* ``proximal_accumulate`` — the FISTA proximal step and extrapolation (exact float32,
  vectorised) and the per-cell float64 accumulators of the restart and convergence tests,
  in one pass over memory instead of a dozen NumPy passes (``proximal_pass`` +
  ``accumulate``: the same, in two passes).

All functions release the GIL (``nogil``) so the backend's thread pool runs cell blocks
on every core.  When Numba is missing (or ``CALAB_DISABLE_NUMBA=1``) the backend falls
back to SciPy/NumPy array code with the same results.
"""

from __future__ import annotations

import functools
import os
from typing import Any

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
#: rows advanced together by the recursions: balanced groups of GROUP_MIN..GROUP_MAX
GROUP_MIN = 4
GROUP_MAX = 10
#: segments of the segmented AR(2) kernels (a compile-time constant, so the loop over
#: them vectorises: 128 float32 lanes = eight AVX-512 vectors per time step)
SEGMENT_LANES = 128

__all__ = [
    "GROUP_MAX",
    "GROUP_MIN",
    "HAVE_NUMBA",
    "SEGMENT_LANES",
    "NUMBA_ERROR",
    "accumulate",
    "ar2_adjoint",
    "ar2_adjoint_residual",
    "ar2_forward",
    "ar2_segment_adjoint_residual",
    "ar2_segment_forward",
    "proximal_accumulate",
    "proximal_pass",
    "row_groups",
    "subtract_boundary",
    "expanding_quantile",
]



@functools.lru_cache(maxsize=256)
def row_groups(rows: int) -> tuple[tuple[int, int], ...]:
    """``(first, stop)`` of balanced groups of at most ``GROUP_MAX`` rows covering ``rows``."""
    count = -(-rows // GROUP_MAX)
    edges = [rows * k // count for k in range(count + 1)] if count else [0]
    return tuple(zip(edges[:-1], edges[1:]))


if HAVE_NUMBA:

    # The recursions advance a group of rows together, each row in its own scalar
    # variables so the independent dependency chains stay in registers and overlap in the
    # CPU pipeline (a chain alone waits ~9-12 cycles per sample).  A group costs about
    # max(latency, lanes x throughput): ~4-5 lanes reach the latency floor, beyond that
    # every lane costs (the scalar multiplies are the limit).  So the rows of a call are
    # split into balanced groups of GROUP_MIN..GROUP_MAX rows, and each group size has
    # its own compiled kernel (generated below from one template): 10 rows run as one
    # group of 10 (1.6x faster than 8 + 2 on 8 lanes), 5 rows as one group of 5.  A
    # group of fewer rows than lanes re-reads its last row for the missing lanes (they
    # write the same values twice, which is harmless).  Every row's arithmetic is the
    # same whatever its group: results do not depend on the batch.

    def _generate(template: str, name: str, lanes: int, body: list[str]) -> Any:
        index = range(lanes)
        source = template.format(
            name=name,
            lanes=lanes,
            rows=", ".join(f"r{i}" for i in index),
            clamped=", ".join(f"min(first + {i}, stop - 1)" for i in index),
            a=" = ".join(f"a{i}" for i in index),
            b=" = ".join(f"b{i}" for i in index),
            body="\n".join("        " + line.format(i=i) for line in body for i in index),
            shift_b=", ".join(f"b{i}" for i in index),
            from_a=", ".join(f"a{i}" for i in index),
            shift_a=", ".join(f"a{i}" for i in index),
            from_v=", ".join(f"v{i}" for i in index),
        )
        namespace = {"np": np, "__name__": __name__}
        # compiled with this file's name, so Numba's on-disk cache can hold the kernels
        exec(compile(source, __file__, "exec"), namespace)
        return njit(nogil=True, cache=True)(namespace[name])

    _FORWARD_TEMPLATE = """
def {name}(source, first, stop, g1, g2, gain, out):
    n = source.shape[1]
    zero = np.float32(0.0)
    {rows} = {clamped}
    {a} = zero
    {b} = zero
    if n > 0:
        for r in range(first, stop):
            out[r, 0] = zero
    for t in range(1, n):
{body}
        {shift_b} = {from_a}
        {shift_a} = {from_v}
"""
    _FORWARD_BODY = [
        "v{i} = (g1 * a{i} + g2 * b{i}) + source[r{i}, t - 1] * gain",
        "out[r{i}, t] = v{i}",
    ]
    _ADJOINT_TEMPLATE = """
def {name}(model, data, first, stop, g1, g2, gain, out):
    n = model.shape[1]
    zero = np.float32(0.0)
    {rows} = {clamped}
    {a} = zero
    {b} = zero
    if n > 0:
        for r in range(first, stop):
            out[r, n - 1] = zero
    for t in range(n - 1, 0, -1):
{body}
        {shift_b} = {from_a}
        {shift_a} = {from_v}
"""
    _ADJOINT_BODY = [
        "v{i} = ((model[r{i}, t] - data[r{i}, t]) * gain + g1 * a{i}) + g2 * b{i}",
        "out[r{i}, t - 1] = v{i}",
    ]
    _FORWARD_GROUPS = {
        lanes: _generate(_FORWARD_TEMPLATE, f"ar2_forward_{lanes}", lanes, _FORWARD_BODY)
        for lanes in range(GROUP_MIN, GROUP_MAX + 1)
    }
    _ADJOINT_GROUPS = {
        lanes: _generate(_ADJOINT_TEMPLATE, f"ar2_adjoint_residual_{lanes}", lanes, _ADJOINT_BODY)
        for lanes in range(GROUP_MIN, GROUP_MAX + 1)
    }

    def ar2_forward(source, g1, g2, gain, out):
        """``out[b, t] = (g1·out[b, t−1] + g2·out[b, t−2]) + source[b, t−1]·gain``, ``out[b, 0] = 0``."""
        for first, stop in row_groups(source.shape[0]):
            _FORWARD_GROUPS[max(stop - first, GROUP_MIN)](source, first, stop, g1, g2, gain, out)

    def ar2_adjoint_residual(model, data, g1, g2, gain, out):
        """Transpose of :func:`ar2_forward` applied to ``e = model − data`` (float32):
        ``a_t = (e_t·gain + g1·a_{t+1}) + g2·a_{t+2}``, ``out[t−1] = a_t``, ``out[n−1] = 0``."""
        for first, stop in row_groups(model.shape[0]):
            _ADJOINT_GROUPS[max(stop - first, GROUP_MIN)](model, data, first, stop, g1, g2, gain, out)

    # Segmented recursions (calab/engine/segments.py): rows in the segment-minor layout
    # (element t·S + g is sample g·M + t), so one time step of the S zero-state chains is
    # a contiguous, vectorised inner loop; then the S boundary states (float64) and the
    # correction pass while the row is still in cache.

    @njit(nogil=True, cache=True)
    def ar2_segment_forward(source, g1, g2, gain, p1, p2, p1_64, p2_64, n, out):  # pragma: no cover - compiled
        """``K s`` in the segment layout; padded samples (index >= ``n``) come out as 0."""
        lanes = SEGMENT_LANES
        rows, total = source.shape
        m = total // lanes
        zero = np.float32(0.0)
        first = np.empty(lanes, np.float32)
        second = np.empty(lanes, np.float32)
        for b in range(rows):
            # step 0 of segment g reads the previous segment's last input
            out[b, 0] = zero
            for g in range(1, lanes):
                out[b, g] = source[b, (m - 1) * lanes + g - 1] * gain
            for g in range(lanes):
                out[b, lanes + g] = g1 * out[b, g] + source[b, g] * gain
            for t in range(2, m):
                base = t * lanes
                target = out[b, base : base + lanes]
                previous = out[b, base - lanes : base]
                before = out[b, base - 2 * lanes : base - lanes]
                inputs = source[b, base - lanes : base]
                for g in range(lanes):
                    target[g] = (g1 * previous[g] + g2 * before[g]) + inputs[g] * gain
            # (o[gM − 1], o[gM − 2]) of every segment, float64
            a = 0.0
            c = 0.0
            first[0] = zero
            second[0] = zero
            for g in range(1, lanes):
                last = np.float64(out[b, (m - 1) * lanes + g - 1])
                before = np.float64(out[b, (m - 2) * lanes + g - 1])
                a, c = last + p1_64[m - 1] * a + p2_64[m - 1] * c, before + p1_64[m - 2] * a + p2_64[m - 2] * c
                first[g] = np.float32(a)
                second[g] = np.float32(c)
            for t in range(m):
                q1 = p1[t]
                q2 = p2[t]
                target = out[b, t * lanes : (t + 1) * lanes]
                for g in range(lanes):
                    target[g] = target[g] + (q1 * first[g] + q2 * second[g])
            for i in range(n, total):
                out[b, (i % m) * lanes + i // m] = zero

    @njit(nogil=True, cache=True)
    def ar2_segment_adjoint_residual(model, data, g1, g2, gain, p1, p2, p1_64, p2_64, out):  # pragma: no cover
        """``Kᵀ(model − data)`` in the segment layout (padding of both must be 0)."""
        lanes = SEGMENT_LANES
        rows, total = model.shape
        m = total // lanes
        head = np.empty(lanes, np.float32)
        first = np.empty(lanes, np.float32)
        second = np.empty(lanes, np.float32)
        for b in range(rows):
            # zero-state backward chains: value of step t goes to output t − 1
            base = (m - 1) * lanes
            for g in range(lanes):
                out[b, base - lanes + g] = (model[b, base + g] - data[b, base + g]) * gain
            base = (m - 2) * lanes
            for g in range(lanes):
                out[b, base - lanes + g] = (model[b, base + g] - data[b, base + g]) * gain + g1 * out[b, base + g]
            for k in range(m - 3):
                # slices with non-negative offsets: the loop over segments vectorises
                base = (m - 3 - k) * lanes
                target = out[b, base - lanes : base]
                later = out[b, base : base + lanes]
                latest = out[b, base + lanes : base + 2 * lanes]
                errors_model = model[b, base : base + lanes]
                errors_data = data[b, base : base + lanes]
                for g in range(lanes):
                    target[g] = ((errors_model[g] - errors_data[g]) * gain + g1 * later[g]) + g2 * latest[g]
            for g in range(lanes):
                head[g] = ((model[b, g] - data[b, g]) * gain + g1 * out[b, g]) + g2 * out[b, lanes + g]
            # (a[(g+1)M], a[(g+1)M + 1]) of every segment, from the last one backwards, float64
            c = 0.0
            d = 0.0
            first[lanes - 1] = np.float32(0.0)
            second[lanes - 1] = np.float32(0.0)
            for g in range(lanes - 1, 0, -1):
                c, d = (
                    np.float64(head[g]) + p1_64[m - 1] * c + p2_64[m - 1] * d,
                    np.float64(out[b, g]) + p1_64[m - 2] * c + p2_64[m - 2] * d,
                )
                first[g - 1] = np.float32(c)
                second[g - 1] = np.float32(d)
            for t in range(m - 1):
                q1 = p1[m - 2 - t]
                q2 = p2[m - 2 - t]
                target = out[b, t * lanes : (t + 1) * lanes]
                for g in range(lanes):
                    target[g] = target[g] + (q1 * first[g] + q2 * second[g])
            target = out[b, (m - 1) * lanes : m * lanes]
            for g in range(lanes):
                target[g] = first[g]

    def ar2_adjoint(residual, g1, g2, gain, out):
        """Transpose of :func:`ar2_forward` (``residual − 0`` is exact in float32)."""
        ar2_adjoint_residual(residual, np.zeros_like(residual), g1, g2, gain, out)

    @njit(nogil=True, cache=True)
    def subtract_boundary(batch, boundary, full):  # pragma: no cover - compiled
        """``full[:, n−m:] −= batch[:, n−m:] @ boundary`` in a fixed summation order.

        BLAS picks its blocking by batch size, which made a cell's result depend on how
        many cells it was solved with; this loop gives every row the same arithmetic.
        """
        rows, n = batch.shape
        edge = boundary.shape[0]
        start = n - edge
        correction = np.empty(edge, np.float32)
        for b in range(rows):
            correction[:] = 0.0
            for q in range(edge):
                value = batch[b, start + q]
                if value != 0.0:
                    for p in range(edge):
                        correction[p] += value * boundary[q, p]
            for p in range(edge):
                full[b, start + p] -= correction[p]

    @njit(nogil=True, cache=True, fastmath={"reassoc"})
    def _sum(total, value):  # pragma: no cover - compiled
        """``total + value`` with reassociation allowed: only these additions carry the flag
        once inlined, so a caller's float32 arithmetic keeps its exact order while its
        float64 sums vectorise (as in :func:`accumulate`)."""
        return total + value

    @njit(nogil=True, cache=True)
    def proximal_accumulate(x, y, gradient, step, threshold, momentum, box, x_new, y_new, change, size, restart_signal):  # pragma: no cover
        """:func:`proximal_pass` and :func:`accumulate` in one pass over memory (same results)."""
        rows, n = x.shape
        zero = np.float32(0.0)
        one = np.float32(1.0)
        for b in range(rows):
            shrink = threshold[b]
            mu = momentum[b]
            c = 0.0
            s = 0.0
            r = 0.0
            if box:
                for i in range(n):
                    old = x[b, i]
                    previous = y[b, i]
                    new = min(max((previous - step * gradient[b, i]) - shrink, zero), one)
                    x_new[b, i] = new
                    y_new[b, i] = min(max(new + mu * (new - old), zero), one)
                    old64 = np.float64(old)
                    new64 = np.float64(new)
                    delta = new64 - old64
                    c = _sum(c, delta * delta)
                    s = _sum(s, old64 * old64)
                    r = _sum(r, (np.float64(previous) - new64) * delta)
            else:
                for i in range(n):
                    old = x[b, i]
                    previous = y[b, i]
                    new = max((previous - step * gradient[b, i]) - shrink, zero)
                    x_new[b, i] = new
                    y_new[b, i] = max(new + mu * (new - old), zero)
                    old64 = np.float64(old)
                    new64 = np.float64(new)
                    delta = new64 - old64
                    c = _sum(c, delta * delta)
                    s = _sum(s, old64 * old64)
                    r = _sum(r, (np.float64(previous) - new64) * delta)
            change[b] = c
            size[b] = s
            restart_signal[b] = r

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

    @njit(nogil=True, cache=True)
    def expanding_quantile(traces, count, ranks, out):  # pragma: no cover - compiled
        """``out[b, t]`` = the ``ranks[t]``-th smallest of ``traces[b, :t+1]`` for ``t < count``.

        A sorted buffer grows by binary-search insertion: ``O(count²)`` element moves per
        row (memmove speed) instead of a partition of every prefix.
        """
        rows = traces.shape[0]
        buffer = np.empty(count, dtype=np.float32)
        for b in range(rows):
            for t in range(count):
                value = traces[b, t]
                lo, hi = 0, t
                while lo < hi:
                    mid = (lo + hi) // 2
                    if buffer[mid] <= value:
                        lo = mid + 1
                    else:
                        hi = mid
                for j in range(t, lo, -1):
                    buffer[j] = buffer[j - 1]
                buffer[lo] = value
                out[b, t] = buffer[ranks[t]]

else:  # pragma: no cover
    ar2_forward = ar2_adjoint = ar2_adjoint_residual = ar2_segment_forward = ar2_segment_adjoint_residual = subtract_boundary = proximal_pass = accumulate = None
    proximal_accumulate = None
    expanding_quantile = None
