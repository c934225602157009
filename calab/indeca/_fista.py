"""Batched box-constrained FISTA for InDeCa (spec ``indeca.md`` §1.6), isolated for a swap.

This is the minimal solver the InDeCa pipeline needs until the generalised solver core of
issue #8 lands: ``min_x ½‖z − K x‖² + θ‖x‖₁`` over ``x ∈ [0, 1]^n`` per row, with ``K``
the peak-normalised banded AR(2) operator at the upsampled rate (built by
:func:`calab.fista.make_plan` / :func:`calab.fista.build_operator`, so every backend
evaluates it the way it evaluates the CaTune banded mode), no baseline (the trace is
"filtered"), a per-row warm start, and the InDeCa stopping rule as data: relative change
``‖Δx‖² < tol²(‖x_old‖² + 1e-20)`` after iteration 5, cap ``50·ceil(max_iters/50)``.

Rows are independent: a converged row is frozen by a mask (its iteration count stops),
so a cell gives the same result alone and in a batch.  Swapping in the engine means
replacing :func:`solve_box01` only.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["BATCH_ITERATIONS", "BoxOutcome", "iteration_cap", "solve_box01"]

#: the reference drives its solver in batches of 50 iterations
BATCH_ITERATIONS = 50
#: convergence is only tested after this many iterations
MIN_ITERATIONS = 5


def iteration_cap(max_iters: int) -> int:
    """Effective cap ``50·ceil(max_iters/50)`` (e.g. 150 for 120)."""
    return BATCH_ITERATIONS * math.ceil(max(int(max_iters), 0) / BATCH_ITERATIONS)


class BoxState(NamedTuple):
    x: Any
    v: Any
    t: Any
    k: Any
    active: Any
    converged: Any


class BoxOutcome(NamedTuple):
    """``x`` ``(B, n)`` float32 on the device; host ``iterations`` int64 and ``converged`` bool."""

    x: Any
    iterations: np.ndarray
    converged: np.ndarray


def _step(backend: Any, operator: Any, z: Any, threshold: Any, step32: Any, tol2: Any, cap: Any, state: BoxState, freeze: bool = True) -> BoxState:
    xp = backend.xp
    f64 = xp.float64
    gradient = operator.adjoint_of_difference(operator.forward(state.v), z)
    t_next = (1.0 + xp.sqrt(1.0 + 4.0 * state.t * state.t)) / 2.0
    momentum = ((state.t - 1.0) / t_next).astype(xp.float32)
    x_new, v_new, change, size, signal = backend.box_fista_pass(state.x, state.v, gradient, step32, threshold, momentum)
    k_new = state.k + 1
    restart = (k_new > 1) & (signal > 0)
    if not freeze:  # host arrays: only restarting rows need the copy
        if bool(restart.any()):
            v_new[restart] = x_new[restart]
    else:
        v_new = xp.where(restart[:, None], x_new, v_new)
    t_new = xp.where(restart, xp.asarray(1.0, dtype=f64), t_next)
    converged_now = (k_new > MIN_ITERATIONS) & (change < tol2 * (size + 1e-20))
    if not freeze:  # every row is active (checked by the caller): no masking passes
        converged = state.converged | converged_now
        return BoxState(x_new, v_new, t_new, k_new, ~converged & (k_new < cap), converged)
    active = state.active
    x_new = xp.where(active[:, None], x_new, state.x)
    v_new = xp.where(active[:, None], v_new, state.v)
    t_new = xp.where(active, t_new, state.t)
    k_new = xp.where(active, k_new, state.k)
    converged = state.converged | (active & converged_now)
    still = active & ~converged & (k_new < cap)
    return BoxState(x_new, v_new, t_new, k_new, still, converged)


_SEGMENTS: dict = {}


def _compiled_segment(backend: Any, conv_mode: str, n: int, fft_size: int) -> Any:
    """One compiled program per (backend, operator kind, length): constants are arguments."""
    key = (backend.name, conv_mode, n, fft_size)
    if key not in _SEGMENTS:
        from calab.fista import build_operator

        def segment(state, z, threshold, arrays, ar2, step32, tol2, cap):
            operator = build_operator(backend, conv_mode, n, fft_size, arrays, ar2)
            return backend.fori_loop(
                BATCH_ITERATIONS, lambda _, s: _step(backend, operator, z, threshold, step32, tol2, cap, s), state
            )

        _SEGMENTS[key] = backend.jit(segment)
    return _SEGMENTS[key]


def solve_box01(
    backend: Any,
    plan: Any,
    z: Any,
    threshold: Any,
    tol: float,
    max_iters: int,
    warm: Any | None = None,
) -> BoxOutcome:
    """Run box-constrained FISTA on a ``(B, n)`` float32 batch until every row stops.

    Parameters
    ----------
    backend : Backend
    plan : calab.fista.SolvePlan
        Banded plan at the upsampled rate (operator constants and ``1/L``).
    z : device array, shape (B, n), float32
        Scaled working traces.
    threshold : device array, shape (B,), float32
        Soft threshold ``f32(η·λ·G_dc)`` per row.
    tol : float
        Relative tolerance.
    max_iters : int
        Requested cap (rounded up to a multiple of 50).
    warm : device array, shape (B, n), float32, optional
        Warm start per row (zeros for rows without one).

    Returns
    -------
    BoxOutcome
    """
    from calab.fista import make_operator, operator_arrays

    xp = backend.xp
    rows = z.shape[0]
    cap = iteration_cap(max_iters)
    x0 = xp.zeros_like(z) if warm is None else warm.astype(xp.float32)
    state = BoxState(
        x=x0,
        v=x0,
        t=xp.ones((rows,), dtype=xp.float64),
        k=xp.zeros((rows,), dtype=xp.int32),
        active=xp.full((rows,), cap > 0, dtype=bool),
        converged=xp.zeros((rows,), dtype=bool),
    )
    if cap == 0 or rows == 0:
        return BoxOutcome(x0, np.zeros(rows, dtype=np.int64), np.zeros(rows, dtype=bool))
    tol2 = float(tol) * float(tol)
    if backend.compiles_loops:
        segment = _compiled_segment(backend, plan.conv_mode, plan.n_timepoints, plan.fft_size)
        arrays = operator_arrays(backend, plan)
        ar2 = tuple(backend.asarray(np.asarray(v), dtype=np.float32) for v in plan.ar2)
        step32 = backend.asarray(np.asarray(plan.step32), dtype=np.float32)
        tol2_d = backend.asarray(np.asarray(tol2), dtype=np.float64)
        cap_d = backend.asarray(np.asarray(cap), dtype=np.int32)
        while bool(np.any(backend.to_numpy(state.active))):
            state = segment(state, z, threshold, arrays, ar2, step32, tol2_d, cap_d)
    else:
        operator = make_operator(backend, plan)
        step32 = plan.step32
        while True:
            active = backend.to_numpy(state.active)
            if not active.any():
                break
            state = _step(backend, operator, z, threshold, step32, tol2, cap, state, freeze=not bool(active.all()))
    return BoxOutcome(state.x, backend.to_numpy(state.k).astype(np.int64), backend.to_numpy(state.converged).astype(bool))
