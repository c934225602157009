"""The InDeCa building blocks the CaDecon loop calls, in one place.

Every phase of the loop goes through these four functions, so the loop never depends on
how the batched InDeCa functions (``calab.indeca``) spell their arguments.
All arrays cross this boundary on the host (NumPy); the blocks run on ``backend``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["KernelJob", "estimate_kernels", "fit_kernels", "seed", "solve"]


class KernelJob(NamedTuple):
    """One subset's kernel-estimation inputs: equal-length rows (``(n, t_sub)``)."""

    traces: np.ndarray
    counts: np.ndarray
    alphas: np.ndarray
    baselines: np.ndarray


def _indeca() -> Any:
    try:
        import calab.indeca as indeca
    except ImportError as exc:  # pragma: no cover - only before the InDeCa functions are merged
        raise ImportError(
            "run_cadecon needs the batched InDeCa functions (calab.indeca), which are not part "
            f"of this calab build: {exc}"
        ) from exc
    return indeca


def solve(traces: Any, tau_rise: float, tau_decay: float, fs: float, settings: Any,
          warm_counts: Any, backend: Any) -> Any:
    """Batched ``solve_trace`` over rows (a ``(B, T)`` array or a list of 1-D arrays)."""
    from calab.kernel import compute_upsample_factor

    return _indeca().solve_traces(
        traces, tau_rise, tau_decay, fs,
        upsample_factor=compute_upsample_factor(fs, settings.upsample_target),
        max_iters=settings.trace_max_iters, tol=settings.trace_tol,
        hp_enabled=settings.hp_filter_enabled, lp_enabled=settings.lp_filter_enabled,
        warm_counts=warm_counts, lambda_=settings.lambda_,
        noise_constrained=settings.noise_constrained, backend=getattr(backend, "name", backend),
    )


def seed(traces: np.ndarray, fs: float) -> Any:
    """Peak-seeded onsets of every row (spec §5): ``s_counts``, ``alpha`` (1) and ``baseline`` (median)."""
    return _indeca().seed_traces(traces, fs)


def estimate_kernels(jobs: list[KernelJob], kernel_length: int, settings: Any,
                     warm: list[np.ndarray | None] | None, backend: Any) -> np.ndarray:
    """One free kernel per job (spec §3), all jobs in one batched solve: ``(n_jobs, K)`` float32."""
    return _indeca().estimate_kernels(
        [tuple(job) for job in jobs], kernel_length,
        max_iters=settings.kernel_max_iters, tol=settings.kernel_tol,
        warm_kernels=warm, smooth_lambda=settings.kernel_smooth_lambda,
    )


def fit_kernels(kernels: Any, fs: float, warm: Any) -> Any:
    """Bi-exponential fits of every kernel (spec §4; refine on, skip 0, as the app)."""
    return _indeca().fit_biexponentials(kernels, fs, refine=True, skip=0, warm=warm)
