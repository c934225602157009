"""InDeCa building blocks (spec ``indeca.md`` §1–§5), batched over cells.

* :func:`solve_trace` / :func:`solve_traces` — the single-trace pipeline (§2), one cell or
  many (dense ``(n_cells, T)`` or a list of ragged traces), with the working trace that
  kernel estimation needs.
* :func:`estimate_kernel` / :func:`estimate_kernels` — free-form kernel from traces and
  spike trains (§3), one subset or many in one call.
* :func:`fit_biexponential` / :func:`fit_biexponentials` — bi-exponential fit (§4).
* :func:`seed_traces` — peak-seeded spike detection (§5), batched.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "solve_trace": "calab.indeca.solve",
    "solve_traces": "calab.indeca.solve",
    "estimate_kernel": "calab.indeca.kernel_estimation",
    "estimate_kernels": "calab.indeca.kernel_estimation",
    "fit_biexponential": "calab.indeca.biexp",
    "fit_biexponentials": "calab.indeca.biexp",
    "seed_traces": "calab.indeca.peaks",
    "SolveTraceResult": "calab.indeca.results",
    "SolveTracesResult": "calab.indeca.results",
    "BiexpFitResult": "calab.indeca.results",
    "BiexpFitResults": "calab.indeca.results",
    "SeedResult": "calab.indeca.results",
    "KernelSubset": "calab.indeca.kernel_estimation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'calab.indeca' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
