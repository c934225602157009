"""The InDeCa building blocks the CaDecon loop calls, in one place.

Every phase of the loop goes through these four functions, so the loop never depends on
how the batched InDeCa functions (``calab.indeca``, issue #9) spell their arguments.
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
    raise NotImplementedError


def seed(traces: np.ndarray, fs: float) -> Any:
    """Peak-seeded onsets of every row (spec §5)."""
    raise NotImplementedError


def estimate_kernels(jobs: list[KernelJob], kernel_length: int, settings: Any,
                     warm: list[np.ndarray | None] | None, backend: Any) -> list[np.ndarray]:
    """One free kernel per job (spec §3)."""
    raise NotImplementedError


def fit_kernels(kernels: list[np.ndarray], fs: float, warm: Any) -> Any:
    """Bi-exponential fits of every kernel (spec §4)."""
    raise NotImplementedError
