"""The banded AR(2) operator evaluated in segments: short dependency chains, SIMD lanes.

The recursion ``o_t = g1·o_{t−1} + g2·o_{t−2} + gain·s_{t−1}`` is sequential: each sample
waits for the previous one, so a row of ``n`` samples is one chain of ``n`` dependent
steps.  Cut the row into ``S`` segments of ``M = ceil(n/S)`` samples (zero-padded at the
end).  Inside a segment the output is the *zero-state* response ``z`` (the recursion
started from ``o = 0``) plus the response to the two samples before the segment::

    o[gM + t] = z[g, t] + p1[t]·o[gM − 1] + p2[t]·o[gM − 2]

where ``p1``/``p2`` are the homogeneous responses to the initial states ``(1, 0)`` and
``(0, 1)`` (computed once in float64).  The ``S`` zero-state recursions are independent:
stored *segment-minor* (``S`` consecutive values per time step, the
:func:`to_segments` layout) one step of all of them is a few vector instructions, and
the chain is ``M`` steps long instead of ``n``.  The two boundary values of every
segment then follow from a 2-state recursion over the ``S`` segments (float64), and a
last elementwise pass adds the ``p``-terms.  The adjoint is the same construction run
backwards in time.

The arithmetic is exact; only float32 rounding differs from the sequential recursion
(segment 0 is bit-identical, the others carry the correction's rounding: the same order
of magnitude as the recursion's own, see ``tests/test_engine_segments.py``).  A problem
opts in with ``Problem(reference_rounding=False)`` (InDeCa does); a backend declares its
lane count (:attr:`calab.backends.base.Backend.ar2_segment_lanes`) and may compile the
two passes (the CPU backend's Numba kernels).  The FISTA iterates live in the segment
layout for the whole solve (the iteration is elementwise and its per-cell sums do not
depend on the order of the samples), so the layout changes twice per solve, not per
iteration.

The generic versions below are written over ``xp`` with a loop over the ``M`` steps:
the reference the compiled kernels are tested against, not a fast path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "MIN_SEGMENT_LENGTH",
    "SegmentPlan",
    "from_segments",
    "segment_plan",
    "segmented_adjoint_of_difference",
    "segmented_forward",
    "to_segments",
]

#: shortest segment worth it (shorter rows keep the sequential recursion)
MIN_SEGMENT_LENGTH = 64


class SegmentPlan(NamedTuple):
    """Constants of the segmented AR(2) operator on rows of ``n`` samples.

    ``lanes`` segments (``S``) of ``length`` samples (``M``; ``S·M >= n``, padded rows have
    ``S·M`` samples); ``g1, g2, gain`` the float32 recursion coefficients; ``p1``/``p2``
    the ``(M,)`` homogeneous responses in float32 (the correction pass) and
    ``p1_64``/``p2_64`` in float64 (the boundary recursion).
    """

    lanes: int
    length: int
    n: int
    g1: np.float32
    g2: np.float32
    gain: np.float32
    p1: np.ndarray
    p2: np.ndarray
    p1_64: np.ndarray
    p2_64: np.ndarray

    @property
    def padded(self) -> int:
        return self.lanes * self.length

    def forward(self, xp: Any, batch: Any, to_host: Any = np.asarray) -> Any:
        """:func:`segmented_forward` with these constants (what a backend calls: it gets the
        plan, not this module)."""
        return segmented_forward(xp, batch, self, to_host)

    def adjoint_of_difference(self, xp: Any, model: Any, data: Any, to_host: Any = np.asarray) -> Any:
        """:func:`segmented_adjoint_of_difference` with these constants."""
        return segmented_adjoint_of_difference(xp, model, data, self, to_host)


def segment_plan(g1: np.float32, g2: np.float32, gain: np.float32, n: int, lanes: int) -> SegmentPlan | None:
    """The :class:`SegmentPlan` for rows of ``n`` samples, or None when they are too short."""
    if lanes <= 1 or n < lanes * MIN_SEGMENT_LENGTH:
        return None
    length = -(-int(n) // lanes)
    a1, a2 = float(g1), float(g2)
    p1 = np.empty(length)
    p2 = np.empty(length)
    # responses o_t (t >= 0) of the homogeneous recursion to (o_{-1}, o_{-2}) = (1, 0), (0, 1)
    u1, u2, w1, w2 = 1.0, 0.0, 0.0, 1.0
    for t in range(length):
        u = a1 * u1 + a2 * u2
        w = a1 * w1 + a2 * w2
        u2, u1, w2, w1 = u1, u, w1, w
        p1[t], p2[t] = u, w
    return SegmentPlan(
        int(lanes), int(length), int(n), np.float32(g1), np.float32(g2), np.float32(gain),
        p1.astype(np.float32), p2.astype(np.float32), p1, p2,
    )


def to_segments(xp: Any, batch: Any, plan: SegmentPlan) -> Any:
    """``(B, n)`` → ``(B, S·M)`` segment-minor layout: element ``t·S + g`` is sample ``g·M + t``."""
    rows, n = batch.shape
    padded = plan.padded
    if padded > n:
        batch = xp.concatenate([batch, xp.zeros((rows, padded - n), dtype=batch.dtype)], axis=1)
    moved = xp.swapaxes(batch.reshape(rows, plan.lanes, plan.length), 1, 2)
    return xp.ascontiguousarray(moved).reshape(rows, padded) if xp is np else moved.reshape(rows, padded)


def from_segments(xp: Any, batch: Any, plan: SegmentPlan) -> Any:
    """Inverse of :func:`to_segments`: ``(B, S·M)`` → ``(B, n)``."""
    rows = batch.shape[0]
    moved = xp.swapaxes(batch.reshape(rows, plan.length, plan.lanes), 1, 2).reshape(rows, plan.padded)
    out = moved[:, : plan.n]
    return xp.ascontiguousarray(out) if xp is np else out


def _boundary_forward(z_last: np.ndarray, z_before: np.ndarray, plan: SegmentPlan) -> tuple[np.ndarray, np.ndarray]:
    """``(o[gM − 1], o[gM − 2])`` of every segment from the zero-state ends, float64 (host)."""
    rows, lanes = z_last.shape
    first = np.zeros((rows, lanes))
    second = np.zeros((rows, lanes))
    m = plan.length
    a = np.zeros(rows)
    c = np.zeros(rows)
    for g in range(1, lanes):
        a, c = (
            z_last[:, g - 1] + plan.p1_64[m - 1] * a + plan.p2_64[m - 1] * c,
            z_before[:, g - 1] + plan.p1_64[m - 2] * a + plan.p2_64[m - 2] * c,
        )
        first[:, g], second[:, g] = a, c
    return first, second


def segmented_forward(xp: Any, batch: Any, plan: SegmentPlan, to_host: Any = np.asarray) -> Any:
    """``K s`` in the segment layout (generic version; padded samples come out as 0).

    ``to_host`` copies a device array to NumPy (the boundary recursion runs on the host).
    """
    rows = batch.shape[0]
    lanes, m = plan.lanes, plan.length
    f32 = np.float32
    s = batch.reshape(rows, m, lanes)
    # the input of step t of segment g is s[gM + t − 1]: for t = 0, the previous segment's last
    head = xp.concatenate([xp.zeros((rows, 1), dtype=xp.float32), s[:, m - 1, : lanes - 1]], axis=1)
    out = []
    a = xp.zeros((rows, lanes), dtype=xp.float32)
    b = xp.zeros((rows, lanes), dtype=xp.float32)
    for t in range(m):
        source = head if t == 0 else s[:, t - 1, :]
        v = (plan.g1 * a + plan.g2 * b) + source * plan.gain
        out.append(v)
        a, b = v, a
    z = xp.stack(out, axis=1)
    first, second = _boundary_forward(
        np.asarray(to_host(z[:, m - 1, :]), dtype=np.float64), np.asarray(to_host(z[:, m - 2, :]), dtype=np.float64), plan
    )
    first32 = xp.asarray(first.astype(f32))[:, None, :]
    second32 = xp.asarray(second.astype(f32))[:, None, :]
    p1 = xp.asarray(plan.p1)[None, :, None]
    p2 = xp.asarray(plan.p2)[None, :, None]
    full = (z + (p1 * first32 + p2 * second32)).reshape(rows, plan.padded)
    return full * xp.asarray(_pad_mask(plan))[None, :]


def _pad_mask(plan: SegmentPlan) -> np.ndarray:
    """1 for real samples, 0 for the padding, in the segment layout."""
    mask = np.zeros(plan.padded, dtype=np.float32)
    mask[: plan.n] = 1.0
    return mask.reshape(plan.lanes, plan.length).T.reshape(-1).copy()


def segmented_adjoint_of_difference(xp: Any, model: Any, data: Any, plan: SegmentPlan, to_host: Any = np.asarray) -> Any:
    """``Kᵀ(model − data)`` in the segment layout (generic version).

    The residual is taken as 0 in the padding.  Natural order: ``a_i = (e_i·gain +
    g1·a_{i+1}) + g2·a_{i+2}``, output ``i`` is ``a_{i+1}`` (the last is 0).
    """
    rows = model.shape[0]
    lanes, m = plan.lanes, plan.length
    f32 = np.float32
    e = ((model - data) * xp.asarray(_pad_mask(plan))[None, :]).reshape(rows, m, lanes)
    za = [None] * m
    a = xp.zeros((rows, lanes), dtype=xp.float32)
    b = xp.zeros((rows, lanes), dtype=xp.float32)
    for t in range(m - 1, -1, -1):
        v = (e[:, t, :] * plan.gain + plan.g1 * a) + plan.g2 * b
        za[t] = v
        a, b = v, a
    # boundary values C_g = a[(g+1)M], D_g = a[(g+1)M + 1] from the last segment backwards
    head0 = np.asarray(to_host(za[0]), dtype=np.float64)
    head1 = np.asarray(to_host(za[1]), dtype=np.float64)
    first = np.zeros((rows, lanes))
    second = np.zeros((rows, lanes))
    c = np.zeros(rows)
    d = np.zeros(rows)
    for g in range(lanes - 1, 0, -1):
        c, d = (
            head0[:, g] + plan.p1_64[m - 1] * c + plan.p2_64[m - 1] * d,
            head1[:, g] + plan.p1_64[m - 2] * c + plan.p2_64[m - 2] * d,
        )
        first[:, g - 1], second[:, g - 1] = c, d
    first32 = xp.asarray(first.astype(f32))
    second32 = xp.asarray(second.astype(f32))
    # output t (t < M − 1) is a at t + 1 of the same segment: za + p[M − 2 − t]·(C, D)
    shifted = xp.stack(za[1:], axis=1)
    p1 = xp.asarray(plan.p1[m - 2 :: -1].copy())[None, :, None]
    p2 = xp.asarray(plan.p2[m - 2 :: -1].copy())[None, :, None]
    body = shifted + (p1 * first32[:, None, :] + p2 * second32[:, None, :])
    # output M − 1 of segment g is a[(g+1)M] = C_g (0 for the last segment)
    return xp.concatenate([body, first32[:, None, :]], axis=1).reshape(rows, plan.padded)
