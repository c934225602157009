"""The block-level entry point: one chunk of cells in, results out.

:func:`solve_block` is what every caller of the solver uses — the public
``run_deconvolution`` functions, the command line, the streaming/Dask path, the bridge
server and InDeCa/CaDecon.  It converts only the block it is given (float32 on the
backend's device, NaN/inf rejected), fetches the compiled plan of the problem from a
bounded cache, subtracts the rolling baseline when the problem asks for one, runs the
backend's FISTA driver and assembles the outputs.  It knows no backend by name.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from calab.backends import resolve_backend
from calab.backends.interop import to_backend_f32
from calab.engine.fista import SolvePlan, make_operator, plan_for_problem, solve_batch
from calab.engine.problem import Problem
from calab.filters import BASELINE_QUANTILE

if TYPE_CHECKING:  # pragma: no cover
    from calab.backends.base import Backend

__all__ = ["BlockResult", "PLAN_CACHE_SIZE", "apply_operator", "clear_plan_cache", "get_plan", "solve_block"]

#: compiled plans kept per process (each holds a few kernel-sized host/device arrays)
PLAN_CACHE_SIZE = 32

_plans: OrderedDict[tuple, SolvePlan] = OrderedDict()
_plans_lock = threading.Lock()


def get_plan(backend: Backend, problem: Problem, n_timepoints: int) -> SolvePlan:
    """The plan of ``problem`` for activity rows of ``n_timepoints`` (bounded LRU cache).

    Keyed by what changes the plan: the backend (and whether it evaluates the banded
    operator by FFT), the problem's identity and the length.
    """
    key = (backend.name, bool(backend.banded_by_fft), problem.key, int(n_timepoints))
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    plan = plan_for_problem(backend, problem, int(n_timepoints))
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def clear_plan_cache() -> None:
    """Drop every cached plan (and the device constants they hold)."""
    with _plans_lock:
        _plans.clear()


@dataclass
class BlockResult:
    """Per-cell results of one block.

    Attributes
    ----------
    activity : array, shape (n_cells, upsample·T), float32
        Solution, on the backend's device (NumPy for the NumPy backend).
    reconvolution : array, shape (n_cells, T), float32, or None
        The model fit in the data's frame: ``R K x`` plus, with a rolling baseline, the
        offset and the removed baseline (CaTune's reconvolution).  None when not asked for.
    baseline : numpy.ndarray, shape (n_cells,), float64
        CaTune's baseline level with a rolling baseline; zeros without.
    iterations : numpy.ndarray, shape (n_cells,), int64
    converged : numpy.ndarray, shape (n_cells,), bool
    backend : Backend
        The backend that solved the block.
    """

    activity: Any
    reconvolution: Any
    baseline: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    backend: Any = field(repr=False, default=None)

    def to_numpy(self) -> BlockResult:
        """The same result with ``activity``/``reconvolution`` as host NumPy float32 arrays."""
        convert = self.backend.to_numpy
        return BlockResult(
            convert(self.activity),
            None if self.reconvolution is None else convert(self.reconvolution),
            self.baseline,
            self.iterations,
            self.converged,
            self.backend,
        )


def _lambda_vector(lam: Any, n_cells: int) -> np.ndarray:
    values = np.asarray(lam, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(n_cells, float(values))
    if values.shape != (n_cells,):
        raise ValueError(f"lam must be a number or one value per cell (shape ({n_cells},)), got shape {values.shape}")
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if bad.size:
        raise ValueError(f"lam must be finite and >= 0, got {values[bad[0]]} for cell {bad[0]}")
    return values


def _lengths_vector(lengths: Any, n_cells: int, n_data: int) -> np.ndarray | None:
    if lengths is None:
        return None
    values = np.asarray(lengths)
    if values.shape != (n_cells,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"lengths must be ({n_cells},) integers, got {values.dtype} shape {values.shape}")
    if np.any(values < 0) or np.any(values > n_data):
        raise ValueError(f"lengths must lie in [0, {n_data}] (the block's width)")
    values = values.astype(np.int64)
    return None if np.all(values == n_data) else values


def solve_block(
    problem: Problem,
    data: Any,
    *,
    lam: Any = 0.0,
    x0: Any | None = None,
    lengths: Any | None = None,
    backend: str | Backend | None = None,
    reconvolution: bool = True,
    row_offset: int | None = None,
    what: str = "input array",
) -> BlockResult:
    """Solve ``problem`` for one block of cells.

    Parameters
    ----------
    problem : Problem
        Operator, constraint, upsampling, baseline and stopping rule.
    data : array_like, shape (n_cells, T)
        The block's traces in any array library (NumPy, a memory-mapped or HDF5/Zarr
        slice, CuPy, JAX); converted to float32 on the backend here, block by block.
    lam : float or array_like of shape (n_cells,)
        Per-cell sparsity weight λ (the L1 weight is ``λ·G``).
    x0 : array_like, shape (n_cells, upsample·T), optional
        Per-cell warm start; a row of zeros is a cold start.
    lengths : array_like of int, shape (n_cells,), optional
        True length of each row in data samples (ragged batches, zero-padded on the right).
    backend : str or Backend, optional
        Backend name or instance; None resolves it (see :mod:`calab.backends`).
    reconvolution : bool
        Also compute the reconvolution (one more operator application).
    row_offset : int, optional
        Row number of the block's first cell in the caller's batch, for error messages.
    what : str
        How error messages name the data.

    Returns
    -------
    BlockResult

    Raises
    ------
    ValueError
        For a non-2-D block, NaN/inf samples, or malformed ``lam``/``x0``/``lengths``.
    """
    chosen = backend if hasattr(backend, "run_fista") else resolve_backend(backend, data)
    if getattr(data, "ndim", None) != 2:
        data = np.asarray(data) if not hasattr(data, "ndim") else data
        if data.ndim != 2:
            raise ValueError(f"data must be 2-D (n_cells, n_timepoints), got shape {tuple(data.shape)}")
    n_cells, n_data = (int(v) for v in data.shape)
    n_activity = problem.upsample * n_data
    lam_cells = _lambda_vector(lam, n_cells)
    lengths_cells = _lengths_vector(lengths, n_cells, n_data)
    with chosen.precision_scope():
        block = to_backend_f32(chosen, data, what, row_offset)
        warm = None
        if x0 is not None:
            if not hasattr(x0, "shape"):
                x0 = np.asarray(x0, dtype=np.float32)
            if tuple(x0.shape) != (n_cells, n_activity):
                raise ValueError(
                    f"x0 must have shape ({n_cells}, {n_activity}) (cells, upsample x samples), got {tuple(x0.shape)}"
                )
            warm = to_backend_f32(chosen, x0, "x0")
        if n_data == 0:
            empty = chosen.asarray(np.zeros((n_cells, 0), dtype=np.float32))
            return BlockResult(
                empty, empty if reconvolution else None, np.zeros(n_cells),
                np.zeros(n_cells, dtype=np.int64), np.ones(n_cells, dtype=bool), chosen,
            )  # fmt: skip
        plan = get_plan(chosen, problem, n_activity)
        rolling = None
        if problem.baseline_window is not None:
            rolling = chosen.rolling_quantile(block, problem.baseline_window, BASELINE_QUANTILE)
        out = solve_batch(chosen, plan, block, lam_cells, rolling, x0=warm, lengths=lengths_cells)
    return BlockResult(
        out.activity,
        out.reconvolution if reconvolution else None,
        out.baseline,
        out.iterations,
        out.converged,
        chosen,
    )


def apply_operator(
    problem: Problem,
    activity: Any,
    *,
    adjoint: bool = False,
    backend: str | Backend | None = None,
) -> Any:
    """Apply the problem's operator ``R K`` (or its adjoint ``Kᵀ Rᵀ``) to a batch.

    Parameters
    ----------
    problem : Problem
        Only ``operator`` and ``upsample`` matter here.
    activity : array_like, shape (n_cells, upsample·T) — or (n_cells, T) with ``adjoint``
        Any array library; converted to float32 on the backend.
    adjoint : bool
        Apply the transpose instead (data frame → activity frame).
    backend : str or Backend, optional

    Returns
    -------
    array
        ``(n_cells, T)`` (forward) or ``(n_cells, upsample·T)`` (adjoint) float32 on the
        backend's device, evaluated exactly as inside the solver.
    """
    chosen = backend if hasattr(backend, "run_fista") else resolve_backend(backend, activity)
    with chosen.precision_scope():
        batch = to_backend_f32(chosen, activity, "activity")
        if batch.ndim != 2:
            raise ValueError(f"activity must be 2-D (n_cells, n_timepoints), got shape {tuple(batch.shape)}")
        n_activity = batch.shape[-1] * (problem.upsample if adjoint else 1)
        if n_activity % problem.upsample:
            raise ValueError(f"activity length {n_activity} is not a multiple of upsample={problem.upsample}")
        operator = make_operator(chosen, get_plan(chosen, problem, n_activity))
        return operator.adjoint(batch) if adjoint else operator.forward(batch)
