"""Public FISTA deconvolution API: validate, pick a backend, solve, return.

``run_deconvolution`` / ``run_deconvolution_full`` keep the published calab 0.3.0
signatures, defaults, validation messages and numbers (spec ``numerics.md``), and add a
keyword-only ``backend=`` argument.  The work itself lives in :mod:`calab.engine` and the
backends; this module only handles input checking, cell chunking and output types.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NamedTuple

import numpy as np

from calab._progress import PROGRESS_STEPS, progress_reporter
from calab._validate import (
    IntegerRangeError,
    check_dynamic_range,
    check_iterations,
    check_kernel_parameters,
    check_lambda,
    check_progress,
    check_real_array,
    warn_if_milliseconds,
    warn_if_transposed,
)
from calab.backends import array_library, is_dask_array, resolve_backend
from calab.backends.interop import (
    caller_library,
    concatenate_in,
    host_backend,
    is_device_library,
    to_backend_f32,
    to_library,
    vector_to_library,
)

from calab.engine import CONSTRAINTS, Problem, solve_block
from calab.engine.fista import CONV_MODES
from calab.kernel import build_kernel, dc_gain

__all__ = ["DeconvolutionResult", "run_deconvolution", "run_deconvolution_full"]

class DeconvolutionResult(NamedTuple):
    """Full result from FISTA deconvolution.

    Attributes
    ----------
    activity : numpy.ndarray
        Non-negative deconvolved activity, same shape as the input traces (float64 for
        NumPy input).
    baseline : float or numpy.ndarray
        Estimated baseline level: a float for 1-D input, shape ``(n_cells,)`` float64 for
        2-D input.
    reconvolution : numpy.ndarray
        ``K * activity + baseline`` (including the time-varying rolling baseline): the
        model fit to the trace, same shape as the input.
    iterations : int or numpy.ndarray
        FISTA iterations run (``(n_cells,)`` int64 for 2-D input).
    converged : bool or numpy.ndarray
        Whether the convergence criterion was met (``(n_cells,)`` bool for 2-D input).
    """

    activity: np.ndarray
    baseline: float | np.ndarray
    reconvolution: np.ndarray
    iterations: int | np.ndarray
    converged: bool | np.ndarray

    def plot(self, traces: Any, fs: float, **options: Any) -> Any:
        """Figure of a few cells: the trace with the fit (``reconvolution``) and the activity.

        ``traces`` are the traces that were deconvolved and ``fs`` their sampling rate.
        Options (``cells``, ``count``, ``window``, ``path``, ...) are those of
        :func:`calab.plot.plot_deconvolution`.  Needs matplotlib (``pip install
        "calab[plot]"``).  Returns a matplotlib Figure.
        """
        from calab.plot import plot_deconvolution

        return plot_deconvolution(traces, self, fs, **options)

    def _repr_html_(self) -> str:
        # Jupyter's display: a summary table instead of five raw arrays.
        from calab._display import deconvolution_html

        return deconvolution_html(self)


#: Kept for code that caught it by name: ``max_iters`` outside ``[0, 2**32 - 1]``.
IterationCountError = IntegerRangeError


# --------------------------------------------------------------------------- helpers
# Kept under their old names for callers of the private helpers.
_to_backend_f32 = to_backend_f32
_from_backend = to_library
_vector_to_library = vector_to_library


def _chunk_cells(backend: Any, n_cells: int, n_timepoints: int) -> int:
    override = os.environ.get("CALAB_CHUNK_CELLS", "").strip()
    if override:
        return max(1, int(override))
    return max(1, min(n_cells, backend.max_chunk_cells(n_cells, n_timepoints)))


def _as_batch_source(traces: Any) -> Any:
    """The caller's traces without copying what can be read block by block.

    Floating-point arrays pass through untouched — NumPy arrays and memory maps, 2-D
    HDF5/Zarr datasets, CuPy and JAX arrays — and each block is converted to float32 only
    when it is solved.  Anything else (lists, integer arrays, pandas objects) becomes a
    float64 NumPy array, as before.
    """
    dtype = getattr(traces, "dtype", None)
    floating = dtype is not None and np.dtype(dtype).kind == "f"
    if floating and (isinstance(traces, np.ndarray) or is_device_library(array_library(traces))):
        return traces
    lazy = hasattr(traces, "__array__") and hasattr(traces, "__getitem__") and getattr(traces, "ndim", 0) == 2
    if floating and lazy and not type(traces).__module__.startswith("pandas"):
        return traces  # h5py.Dataset, zarr.Array: rows are read per block
    return np.asarray(traces, dtype=np.float64)


# --------------------------------------------------------------------------- core
def check_solve_settings(
    fs: Any, tau_r: Any, tau_d: Any, lam: Any, max_iters: Any, conv_mode: Any, constraint: Any,
    n_cells: int, *, shape: tuple[int, ...],
) -> tuple[float, float, float, np.ndarray, int]:
    """Validate the scalar settings of a deconvolution run (shared with :mod:`calab.datasets`).

    Returns
    -------
    fs, tau_r, tau_d : float
    lam_cells : numpy.ndarray
        ``(n_cells,)`` float64, one λ per cell.
    max_iters : int
    """
    max_iters = check_iterations(max_iters, "max_iters")
    per_cell_lam = isinstance(lam, (list, tuple)) or np.ndim(lam) > 0
    fs, tau_r, tau_d, _ = check_kernel_parameters(fs, tau_r, tau_d, 0.0 if per_cell_lam else lam)
    if not isinstance(conv_mode, str) or conv_mode not in CONV_MODES:
        raise ValueError(f"conv_mode must be 'fft' or 'banded', got {conv_mode!r}")
    if not isinstance(constraint, str) or constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be 'nonneg' or 'box01', got {constraint!r}")
    if n_cells == 0:
        raise ValueError(f"traces has no cells (shape {shape}); pass at least one trace")
    lam_value = check_lambda(lam, n_cells)
    lam_cells = lam_value if per_cell_lam else np.full(n_cells, lam_value)
    return fs, tau_r, tau_d, lam_cells, max_iters


def _deconvolve(
    traces: Any,
    fs: float,
    tau_r: float,
    tau_d: float,
    lam: Any,
    max_iters: Any,
    conv_mode: str,
    constraint: str,
    backend: str | None,
    want_reconvolution: bool = True,
    progress: Any = None,
) -> tuple[DeconvolutionResult, int, str]:
    # Input validation (calab._validate): reference order and messages, plus the stricter
    # dtype, scalar-form and dynamic-range rules listed in docs/differences.md.  Lazy
    # sources (h5py, Zarr) are checked from their dtype/shape and stay unread here.
    traces = check_real_array(traces, "traces", ndim=(1, 2), lazy=True)
    progress = check_progress(progress)
    library = caller_library(traces)
    traces = _as_batch_source(traces)
    ndim = traces.ndim
    batch = traces.reshape(1, -1) if ndim == 1 else traces
    n_cells, n_timepoints = (int(v) for v in batch.shape)
    fs, tau_r, tau_d, lam_cells, max_iters = check_solve_settings(
        fs, tau_r, tau_d, lam, max_iters, conv_mode, constraint, n_cells, shape=tuple(traces.shape)
    )
    # Likely mistakes warn before the work (the caller is run_deconvolution(_full)'s caller).
    if ndim == 2:
        warn_if_transposed(batch.shape, stacklevel=4)
    warn_if_milliseconds(tau_r, tau_d, ("tau_r", "tau_d"), stacklevel=4)
    kernel = build_kernel(tau_r, tau_d, fs)
    gain = dc_gain(kernel)
    if not gain > 0:
        # exp(-dt/tau_decay) underflows: the kernel is all zeros and every answer would be 0.
        raise ValueError(
            f"invalid parameter: tau_decay * fs = {tau_d * fs:.3g} s·Hz: the calcium kernel decays "
            "to zero within one sample, so no activity can be estimated; check the units of "
            "tau_decay (s) and fs (Hz)"
        )
    check_dynamic_range(batch, "traces", n_terms=n_timepoints + kernel.size, gain=gain)
    chosen = resolve_backend(backend, traces)

    if n_timepoints == 0:
        empty = np.zeros((n_cells, 0))
        if is_device_library(library):
            empty = to_library(chosen, chosen.asarray(empty), library)
        outputs = DeconvolutionResult(
            empty, np.zeros(n_cells), empty, np.zeros(n_cells, dtype=np.int64), np.ones(n_cells, dtype=bool)
        )
        return outputs, ndim, library

    # CaTune's problem: the (τr, τd) kernel, the rolling baseline, tol 1e-4 after 5
    # iterations and the cap rounded up to 100 (numerics.md §7) — data for the engine.
    problem = Problem.catune(fs, tau_r, tau_d, max_iters=max_iters, conv_mode=conv_mode, constraint=constraint)
    chunk = _chunk_cells(chosen, n_cells, n_timepoints)
    advance, close = progress_reporter(progress, n_cells, n_cells * n_timepoints)
    if advance is not None and not chosen.is_gpu:
        # Finer chunks so the display moves; the CPU backend's results do not depend on
        # how cells are batched, and chunks of a few thread blocks keep its cores busy.
        chunk = min(chunk, max(chosen.min_chunk_cells(), -(-n_cells // PROGRESS_STEPS)))
    starts = range(0, n_cells, chunk)
    row_label = None if n_cells == 1 else 0
    # Every row is checked before any is solved, so a bad row late in a huge batch fails
    # fast instead of after minutes of work.  Host data is checked on the host: sending
    # it to a GPU only to check it would double the transfers.
    if len(starts) > 1:
        checker = chosen if is_device_library(library) else host_backend()
        for start in starts:
            to_backend_f32(checker, batch[start : start + chunk], "input array", start)
    # NumPy results are written into preallocated float64 arrays chunk by chunk, so peak
    # memory is the outputs plus one chunk's working set (no concatenation copies, and
    # the input is only ever read one chunk at a time).
    on_host = not is_device_library(library)
    activity_out = np.empty((n_cells, n_timepoints)) if on_host else []
    recon_out = (np.empty((n_cells, n_timepoints)) if on_host else []) if want_reconvolution else None
    baseline = np.empty(n_cells)
    iterations = np.empty(n_cells, dtype=np.int64)
    converged = np.empty(n_cells, dtype=bool)
    try:
        for start in starts:
            stop = min(start + chunk, n_cells)
            out = solve_block(
                problem, batch[start:stop], lam=lam_cells[start:stop], backend=chosen,
                reconvolution=want_reconvolution, row_offset=None if row_label is None else start,
            )  # fmt: skip
            if on_host:
                activity_out[start:stop] = chosen.to_numpy(out.activity)
                if want_reconvolution:
                    recon_out[start:stop] = chosen.to_numpy(out.reconvolution)
            else:
                activity_out.append(to_library(chosen, out.activity, library))
                if want_reconvolution:
                    recon_out.append(to_library(chosen, out.reconvolution, library))
            baseline[start:stop] = out.baseline
            iterations[start:stop] = out.iterations
            converged[start:stop] = out.converged
            del out
            if advance is not None:
                advance(stop - start)
    finally:
        if close is not None:
            close()
    activity, reconvolution = activity_out, recon_out
    if not on_host:
        concat = concatenate_in(library)
        activity = activity[0] if len(activity) == 1 else concat(activity)
        if want_reconvolution:
            reconvolution = reconvolution[0] if len(reconvolution) == 1 else concat(reconvolution)
    return DeconvolutionResult(activity, baseline, reconvolution, iterations, converged), ndim, library


def _lazy(*args: Any, full: bool) -> Any:
    """Dask input: delegate to calab.datasets (imported only now, as is Dask)."""
    from calab.datasets._dask import lazy_deconvolution

    return lazy_deconvolution(*args, full=full, api=sys.modules[__name__])


def run_deconvolution(
    traces: np.ndarray,
    fs: float,
    tau_r: float,
    tau_d: float,
    lam: float,
    max_iters: int = 2000,
    conv_mode: str = "fft",
    constraint: str = "nonneg",
    *,
    backend: str | None = None,
    progress: bool | Callable[[int], object] | None = None,
) -> np.ndarray:
    """Run FISTA deconvolution on one or more calcium traces.

    All cells are solved together as one ``(n_cells, n_timepoints)`` batch on the chosen
    backend (in cell chunks sized to the device memory).

    Parameters
    ----------
    traces : array_like
        Input traces, shape ``(n_timepoints,)`` for a single trace or
        ``(n_cells, n_timepoints)`` for multiple traces.  NumPy arrays and lists are
        accepted; a CuPy or JAX array is processed on its own device.
    fs : float
        Sampling rate in Hz.
    tau_r : float
        Rise time constant in seconds.
    tau_d : float
        Decay time constant in seconds (``> tau_r``).
    lam : float or array_like
        L1 penalty (sparsity regularization strength), scaled internally by the kernel's
        DC gain; a ``(n_cells,)`` array gives each cell its own λ.  It is in the traces'
        units: start at each cell's noise SD, ``lam=calab.noise_sd(traces)``; larger
        keeps fewer, bigger events.
    max_iters : int, optional
        Maximum number of FISTA iterations, by default 2000 (rounded up to a multiple of
        100, as in calab 0.3.0).
    conv_mode : str, optional
        Convolution mode: ``'fft'`` (default) or ``'banded'`` (O(T) AR2 recursion).
    constraint : str, optional
        ``'nonneg'`` (default, L1 + non-negative) or ``'box01'`` (box constraint [0, 1];
        the L1 term still applies, pass ``lam=0`` for a pure box constraint).
    backend : str, optional
        ``'numpy'``, ``'jax'``, ``'cupy'`` or ``'auto'``; None resolves it (argument →
        :func:`calab.use_backend` → ``CALAB_BACKEND`` → input array's library → auto).
    progress : bool or callable, optional
        None (default): a progress bar for long solves on a terminal (stderr) or in a
        Jupyter notebook (a widget), nothing when piped.  True/False force it on/off.  A callable is called with the
        number of cells finished since its previous call.

    Returns
    -------
    numpy.ndarray
        Non-negative activity estimates, same shape as ``traces``; float64 for NumPy
        input, float32 in the input's own library for CuPy/JAX input.

    Raises
    ------
    ValueError
        Bad shape, empty batch, NaN/inf samples, invalid ``fs``/``tau``/``lam``, unknown
        ``conv_mode``/``constraint``/backend.
    TypeError, OverflowError
        ``max_iters`` not an integer, or outside ``[0, 2**32 - 1]``.
    calab.BackendUnavailableError
        The requested backend is not installed (the message names the extra).

    Notes
    -----
    A ``dask.array`` input (chunked along cells) returns a lazy dask array: one task per
    chunk of cells (see :mod:`calab.datasets`).
    """
    if is_dask_array(traces):
        return _lazy(traces, fs, tau_r, tau_d, lam, max_iters, conv_mode, constraint, backend, full=False)
    result, ndim, _ = _deconvolve(
        traces, fs, tau_r, tau_d, lam, max_iters, conv_mode, constraint, backend,
        want_reconvolution=False, progress=progress,
    )
    return result.activity.reshape(-1) if ndim == 1 else result.activity


def run_deconvolution_full(
    traces: np.ndarray,
    fs: float,
    tau_r: float,
    tau_d: float,
    lam: float,
    max_iters: int = 2000,
    conv_mode: str = "fft",
    constraint: str = "nonneg",
    *,
    backend: str | None = None,
    progress: bool | Callable[[int], object] | None = None,
) -> DeconvolutionResult:
    """Run FISTA deconvolution returning full results.

    Parameters are those of :func:`run_deconvolution`.

    Returns
    -------
    DeconvolutionResult
        Namedtuple with fields ``activity``, ``baseline``, ``reconvolution``,
        ``iterations``, ``converged``.  For 1-D input the last three scalars are Python
        ``float``/``int``/``bool``; for 2-D input they are ``(n_cells,)`` arrays of
        float64/int64/bool.  A ``dask.array`` input gives a result of lazy dask arrays.
    """
    if is_dask_array(traces):
        return _lazy(traces, fs, tau_r, tau_d, lam, max_iters, conv_mode, constraint, backend, full=True)
    result, ndim, library = _deconvolve(
        traces, fs, tau_r, tau_d, lam, max_iters, conv_mode, constraint, backend, progress=progress
    )
    if ndim == 1:
        return DeconvolutionResult(
            result.activity.reshape(-1),
            float(result.baseline[0]),
            result.reconvolution.reshape(-1),
            int(result.iterations[0]),
            bool(result.converged[0]),
        )
    return DeconvolutionResult(
        result.activity,
        vector_to_library(result.baseline, library),
        result.reconvolution,
        vector_to_library(result.iterations, library),
        vector_to_library(result.converged, library),
    )
