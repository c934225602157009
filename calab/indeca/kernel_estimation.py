"""Free-form kernel estimation from traces and spike trains (spec ``indeca.md`` §3, §8.1).

Problem per subset: ``min_{h ≥ 0} ½ Σ_traces ‖ỹ − S h‖² (+ TV)`` with ``ỹ = (y − b)/α`` per
trace and ``S`` the per-trace truncated convolution matrix of the spike train.  The Gram
matrix ``G = SᵀS`` (``K × K``) and ``c = Sᵀỹ`` are precomputed once per subset, so a
FISTA gradient ``G e − c`` costs ``O(K²)`` instead of ``O(Σlen·K)`` — identical in exact
arithmetic.  All subsets then iterate together as ``(S, K)`` arrays with per-subset stop
masks.  The work is small (``K`` ≤ a few hundred), so it runs on the host in float64.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from calab._validate import (
    check_dynamic_range,
    check_iterations,
    check_memory,
    check_real_array,
    check_reference_range,
    check_rows,
)
from calab.kernel import MAX_KERNEL_SAMPLES

__all__ = ["KernelSubset", "estimate_kernel", "estimate_kernels", "estimate_memory", "prox_tv"]

POWER_ITERATIONS = 20
TV_ITERATIONS = 100
TV_STEP = 0.249
#: Bytes per Gram-matrix element (float64 plus the products that build it): measured
#: 12-24 bytes per subset·K² with tracemalloc, i.e. 12·(n_subsets + 1)·K².
GRAM_BYTES = 12.0


def estimate_memory(n_subsets: int, kernel_length: int) -> dict[str, float]:
    """Estimated peak bytes of :func:`estimate_kernels`, by part.

    The ``K × K`` Gram matrix of every subset (plus one being built) dominates: 8 TiB for
    one subset at the documented maximum ``K = 2**20``.
    """
    k = float(kernel_length)
    if n_subsets <= 0:
        return {}
    return {
        f"the {int(k)} x {int(k)} Gram matrices of {n_subsets} subset{'s' if n_subsets != 1 else ''}":
            GRAM_BYTES * (n_subsets + 1) * k * k,
        "kernel iterates": 64.0 * n_subsets * k,
    }


class KernelSubset(NamedTuple):
    """One subset's inputs to :func:`estimate_kernels`.

    Attributes
    ----------
    traces : sequence of 1-D arrays, or 2-D array (n_traces, T)
        Traces (in the app: the working traces ``filtered_trace`` of :func:`solve_traces`).
    spikes : same layout as ``traces``
        Spike counts per trace, same lengths.
    alphas, baselines : array_like, shape (n_traces,)
        Per-trace amplitude and baseline (``ỹ = (y − b)/α``; ``|α| < 1e-20`` gives ``ỹ = 0``).
    """

    traces: Any
    spikes: Any
    alphas: Any
    baselines: Any


def _check_settings(kernel_length: Any, max_iters: Any, tol: Any, smooth_lambda: Any) -> tuple[int, int, float, float]:
    k = check_reference_range(
        kernel_length, "kernel_length", f"in 1..={MAX_KERNEL_SAMPLES}", integer=True,
        accept=lambda v: 1 <= v <= MAX_KERNEL_SAMPLES,
    )
    iters = check_iterations(max_iters, "max_iters")
    finite_nonnegative = lambda v: math.isfinite(v) and v >= 0  # noqa: E731
    tol = check_reference_range(tol, "tol", "finite and >= 0", accept=finite_nonnegative)
    lam = check_reference_range(smooth_lambda, "smooth_lambda", "finite and >= 0", accept=finite_nonnegative)
    return k, iters, tol, lam


def _rows(values: Any, what: str) -> list[np.ndarray]:
    return check_rows(values, what, allow_empty_rows=True)[0]


def gram_terms(subset: KernelSubset, kernel_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``G = SᵀS`` ``(K, K)`` and ``c = Sᵀỹ`` ``(K,)`` of one subset (float64).

    ``S[t, k] = s[t − k]`` within each trace (the convolution restarts at every trace
    start and is truncated at its end).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    traces = _rows(subset.traces, "traces")
    spikes = _rows(subset.spikes, "spikes")
    # NaN/inf amplitudes or baselines would turn the whole kernel into NaN
    alphas = check_real_array(np.ravel(subset.alphas), "alphas", ndim=1, finite=True, dtype=np.float64)
    baselines = check_real_array(np.ravel(subset.baselines), "baselines", ndim=1, finite=True, dtype=np.float64)
    if len(spikes) != len(traces):
        raise ValueError(f"invalid input: {len(spikes)} spike trains for {len(traces)} traces; pass one per trace")
    if alphas.size != len(traces) or baselines.size != len(traces):
        raise ValueError(
            f"invalid input: alphas ({alphas.size}) and baselines ({baselines.size}) must have one entry "
            f"per trace ({len(traces)})"
        )
    k = kernel_length
    gram = np.zeros((k, k))
    rhs = np.zeros(k)
    for i, (y, s) in enumerate(zip(traces, spikes)):
        if y.size != s.size:
            raise ValueError(
                f"invalid input: trace {i} has {y.size} samples but its spike train has {s.size}; lengths must match"
            )
        if y.size == 0:
            continue
        y32 = y.astype(np.float32).astype(np.float64)
        s32 = s.astype(np.float32).astype(np.float64)
        alpha = alphas[i]
        target = np.zeros_like(y32) if abs(alpha) < 1e-20 else (y32 - baselines[i]) / alpha
        padded = np.concatenate([np.zeros(k - 1), s32])
        design = sliding_window_view(padded, k)[:, ::-1]  # design[t, j] = s[t − j]
        gram += design.T @ design
        rhs += design.T @ target
    return gram, rhs


def prox_tv(x: np.ndarray, lam: float, iterations: int = TV_ITERATIONS) -> np.ndarray:
    """1-D total-variation prox by Chambolle's dual projected gradient, per row ``(S, K)``."""
    rows, k = x.shape
    if k < 2:
        return x.copy()
    dual = np.zeros((rows, k - 1))

    def primal(u: np.ndarray) -> np.ndarray:
        z = x.copy()
        z[:, :-1] += u
        z[:, 1:] -= u
        return z

    for _ in range(iterations):
        z = primal(dual)
        dual = np.clip(dual + TV_STEP * (z[:, 1:] - z[:, :-1]), -lam, lam)
    return primal(dual)


def estimate_kernels(
    subsets: Sequence[KernelSubset | tuple],
    kernel_length: int,
    *,
    max_iters: int = 200,
    tol: float = 1e-4,
    warm_kernels: Any = None,
    smooth_lambda: float = 0.0,
) -> np.ndarray:
    """Estimate one free-form kernel per subset, all subsets in one batched FISTA.

    Parameters
    ----------
    subsets : sequence of KernelSubset or (traces, spikes, alphas, baselines) tuples
        See :class:`KernelSubset`.
    kernel_length : int
        Kernel length ``K`` in samples (``1 <= K <= 2**20``).
    max_iters : int
        FISTA iterations (no restart, stop on relative change after iteration 5).
    tol : float
        Relative tolerance.
    warm_kernels : array_like (n_subsets, K) or sequence of arrays/None, optional
        Warm start per subset (used when its length is ``K``).
    smooth_lambda : float
        Total-variation weight (not multiplied by the step size, as in the reference).

    Returns
    -------
    numpy.ndarray
        ``(n_subsets, K)`` float32, non-negative.

    Raises
    ------
    ValueError
        Invalid settings or inconsistent inputs (the message names the fix).
    """
    k, iters, tol, lam = _check_settings(kernel_length, max_iters, tol, smooth_lambda)
    subsets = [s if isinstance(s, KernelSubset) else KernelSubset(*s) for s in subsets]
    count = len(subsets)
    if count == 0:
        return np.zeros((0, k), dtype=np.float32)
    check_memory(
        estimate_memory(count, k), f"estimate_kernels(kernel_length={k}) on {count} subset{'s' if count != 1 else ''}",
        advice="a kernel_length of about 5 decay time constants in samples, 5 * tau_decay * fs, is enough",
    )
    grams = np.empty((count, k, k))
    rhs = np.empty((count, k))
    for i, subset in enumerate(subsets):
        grams[i], rhs[i] = gram_terms(subset, k)

    # step size: 20 power iterations on SᵀS from the constant vector
    vector = np.full((count, k), 1.0 / math.sqrt(k))
    eig = np.zeros(count)
    running = np.ones(count, dtype=bool)
    for _ in range(POWER_ITERATIONS):
        w = np.einsum("sij,sj->si", grams, vector.astype(np.float32).astype(np.float64))
        norm = np.sqrt(np.sum(w * w, axis=1))
        tiny = running & (norm < 1e-20)
        eig = np.where(running, np.where(tiny, 1.0, norm), eig)
        update = running & ~tiny
        vector = np.where(update[:, None], w / np.where(norm > 0, norm, 1.0)[:, None], vector)
        running &= ~tiny
    step = 1.0 / np.maximum(eig, 1.0)

    h = np.zeros((count, k), dtype=np.float32)
    if warm_kernels is not None:
        entries = list(warm_kernels) if not isinstance(warm_kernels, np.ndarray) or warm_kernels.ndim == 2 else [warm_kernels]
        if len(entries) != count:
            raise ValueError(f"warm_kernels has {len(entries)} entries for {count} subsets; pass one (or None) per subset")
        for i, warm in enumerate(entries):
            if warm is None:
                continue
            warm = np.asarray(warm, dtype=np.float32).ravel()
            if warm.size == k and np.all(np.isfinite(warm)):
                h[i] = warm
    extrapolated = h.astype(np.float64)
    t = np.ones(count)
    active = np.ones(count, dtype=bool)
    tol2 = tol * tol
    for it in range(iters):
        if not active.any():
            break
        gradient = np.einsum("sij,sj->si", grams, extrapolated) - rhs
        z = extrapolated - step[:, None] * gradient
        if lam > 0 and k > 1:
            z = prox_tv(z, lam)
        h_new = np.maximum(z, 0.0).astype(np.float32)
        delta = h_new.astype(np.float64) - h.astype(np.float64)
        change = np.sum(delta * delta, axis=1)
        size = np.sum(h.astype(np.float64) ** 2, axis=1)
        h = np.where(active[:, None], h_new, h)
        stop = active & (it > 5) & (change < tol2 * (size + 1e-20))
        active &= ~stop
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        moved = np.maximum(h.astype(np.float64) + ((t - 1.0) / t_next)[:, None] * (h.astype(np.float64) - extrapolated), 0.0)
        extrapolated = np.where(active[:, None], moved, extrapolated)
        t = np.where(active, t_next, t)
    return h


def estimate_kernel(
    traces_flat: np.ndarray,
    spikes_flat: np.ndarray,
    trace_lengths: np.ndarray,
    alphas: np.ndarray,
    baselines: np.ndarray,
    kernel_length: int,
    *,
    max_iters: int = 200,
    tol: float = 1e-4,
    warm_kernel: np.ndarray | None = None,
    smooth_lambda: float = 0.0,
) -> np.ndarray:
    """Estimate a free-form kernel from traces and spike trains.

    Parameters
    ----------
    traces_flat : np.ndarray
        Concatenated 1-D traces (all cells flattened).
    spikes_flat : np.ndarray
        Concatenated 1-D spike trains (matching traces_flat).
    trace_lengths : np.ndarray
        Length of each individual trace in the flat arrays.
    alphas, baselines : np.ndarray
        Per-trace amplitude scaling factors and baselines.
    kernel_length : int
        Desired output kernel length in samples.
    max_iters : int
        Maximum FISTA iterations for kernel estimation.
    tol : float
        Convergence tolerance.
    warm_kernel : np.ndarray, optional
        Kernel from a previous iteration for warm-start (ignored unless its length is
        ``kernel_length``).
    smooth_lambda : float
        Total-variation smoothness penalty weight.

    Returns
    -------
    np.ndarray
        Estimated free-form kernel, shape (kernel_length,), float32.

    Raises
    ------
    ValueError
        Invalid settings, or lengths that do not add up (the message names the fix).
    """
    traces_flat = check_real_array(traces_flat, "traces_flat", ndim=1, finite=True, dtype=np.float64)
    spikes_flat = check_real_array(spikes_flat, "spikes_flat", ndim=1, finite=True, dtype=np.float64)
    check_dynamic_range(traces_flat, "traces_flat")
    check_dynamic_range(spikes_flat, "spikes_flat")
    lengths = check_real_array(trace_lengths, "trace_lengths", ndim=1, finite=True)
    alphas = check_real_array(alphas, "alphas", ndim=(0, 1), finite=True, dtype=np.float64)
    baselines = check_real_array(baselines, "baselines", ndim=(0, 1), finite=True, dtype=np.float64)
    _check_settings(kernel_length, max_iters, tol, smooth_lambda)
    if lengths.size and (np.any(lengths < 0) or np.any(lengths != np.floor(lengths))):
        raise ValueError("invalid input: trace_lengths must be non-negative integers")
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    if traces_flat.size != spikes_flat.size:
        raise ValueError(
            f"invalid input: traces_flat ({traces_flat.size}) and spikes_flat ({spikes_flat.size}) must have the same length"
        )
    if total != traces_flat.size:
        raise ValueError(
            f"invalid input: trace_lengths sum to {total} but traces_flat has {traces_flat.size} samples; "
            "they must match"
        )
    edges = np.concatenate([[0], np.cumsum(lengths)])
    traces = [traces_flat[a:b] for a, b in zip(edges[:-1], edges[1:])]
    spikes = [spikes_flat[a:b] for a, b in zip(edges[:-1], edges[1:])]
    warm = None if warm_kernel is None else [warm_kernel]
    kernel = estimate_kernels(
        [KernelSubset(traces, spikes, alphas, baselines)], kernel_length,
        max_iters=max_iters, tol=tol, warm_kernels=warm, smooth_lambda=smooth_lambda,
    )
    return kernel[0]
