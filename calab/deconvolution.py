"""Public FISTA deconvolution API: validate, pick a backend, solve, return.

``run_deconvolution`` / ``run_deconvolution_full`` keep the published calab 0.3.0
signatures, defaults, validation messages and numbers (spec ``numerics.md``), and add a
keyword-only ``backend=`` argument.  The work itself lives in :mod:`calab.fista` and the
backends; this module only handles input checking, cell chunking and output types.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NamedTuple

import numpy as np

from calab.backends import array_library, get_backend, is_dask_array, resolve_backend
from calab.filters import rolling_baseline
from calab.fista import CONSTRAINTS, CONV_MODES, make_plan, solve_batch
from calab.kernel import format_number, validate_parameters

__all__ = ["DeconvolutionResult", "run_deconvolution", "run_deconvolution_full"]

_MAX_ITERS_LIMIT = 2**32 - 1


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


class IterationCountError(OverflowError, ValueError):
    """``max_iters`` outside ``[0, 2**32 - 1]`` (an OverflowError, as in calab 0.3.0, and a ValueError)."""


class IterationTypeError(TypeError):
    """``max_iters`` is not an integer."""


# --------------------------------------------------------------------------- helpers
def _to_backend_f32(backend: Any, array: Any, what: str, row_offset: int | None = None) -> Any:
    """Move a ``(B, n)`` block onto ``backend`` as float32 and reject NaN/inf.

    ``row_offset`` (for multi-row batches) adds ``row r,`` to the error, as the reference
    does for batches of two or more traces.
    """
    library = array_library(array)
    if library == "numpy" or library is None:
        with np.errstate(over="ignore", invalid="ignore"):
            host = np.asarray(array, dtype=np.float32)
        device = backend.asarray(host)
    else:
        device = backend.asarray(array)
    finite = backend.xp.isfinite(device)
    if not bool(backend.to_numpy(finite.all())):
        mask = ~backend.to_numpy(finite)
        row, index = (int(v[0]) for v in np.nonzero(mask))
        where = f"index {index}" if row_offset is None else f"row {row + row_offset}, index {index}"
        raise ValueError(
            f"{what} contains a non-finite value (NaN or infinity) at {where}; "
            "replace or drop NaN/inf samples (for example with numpy.nan_to_num or by "
            "interpolation) before calling this function"
        )
    return device


def _from_backend(backend: Any, array: Any, library: str, dtype: Any = np.float64) -> Any:
    """Return a backend array in the caller's library: NumPy → ``dtype``; CuPy/JAX → float32."""
    if library == "numpy":
        return backend.to_numpy(array).astype(dtype, copy=False)
    if library == backend.name:
        return array
    host = backend.to_numpy(array)
    if library == "cupy":
        import cupy

        return cupy.asarray(host)
    import jax.numpy as jnp

    return jnp.asarray(host)


def _vector_to_library(values: np.ndarray, library: str) -> Any:
    if library == "numpy":
        return values
    if library == "cupy":
        import cupy

        return cupy.asarray(values)
    import jax.numpy as jnp

    return jnp.asarray(values)


def _check_max_iters(max_iters: Any) -> int:
    if isinstance(max_iters, (bool, np.bool_)) or not isinstance(max_iters, (int, np.integer)):
        raise IterationTypeError(
            f"max_iters must be an integer number of iterations (e.g. 2000), got "
            f"{type(max_iters).__name__} {max_iters!r}"
        )
    value = int(max_iters)
    if not 0 <= value <= _MAX_ITERS_LIMIT:
        raise IterationCountError(
            f"max_iters must be between 0 and {_MAX_ITERS_LIMIT}, got {value}"
        )
    return value


def _check_lambda(lam: Any, n_cells: int) -> np.ndarray:
    """λ as a ``(n_cells,)`` float64 vector: a scalar, or one value per cell."""
    values = np.asarray(lam, dtype=np.float64) if not np.isscalar(lam) else np.float64(lam)
    if np.ndim(values) == 0:
        return np.full(n_cells, float(values))
    if values.ndim != 1 or values.shape[0] != n_cells:
        raise ValueError(
            f"invalid parameter: lambda must be a number or one value per cell "
            f"(shape ({n_cells},)), got shape {values.shape}"
        )
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if bad.size:
        raise ValueError(
            f"invalid parameter: lambda must be finite and >= 0, got "
            f"{format_number(values[bad[0]])} for cell {bad[0]}"
        )
    return values


def _chunk_cells(backend: Any, n_cells: int, n_timepoints: int) -> int:
    override = os.environ.get("CALAB_CHUNK_CELLS", "").strip()
    if override:
        return max(1, int(override))
    return max(1, min(n_cells, backend.max_chunk_cells(n_cells, n_timepoints)))


#: Solves smaller than this many samples (cells x frames) finish in a few seconds on a
#: CPU: no automatic progress bar for them.
PROGRESS_MIN_SAMPLES = 20_000_000
#: With a progress display, a batch is split into at least this many chunks.
PROGRESS_STEPS = 20


def _progress_reporter(progress: Any, n_cells: int, n_timepoints: int) -> tuple[Any, Any]:
    """``(advance, close)`` for the ``progress`` argument, or ``(None, None)`` when silent.

    ``advance(k)`` reports ``k`` more finished cells.  None means automatic: a tqdm bar on
    a terminal for long solves, nothing when stderr is piped.
    """
    if callable(progress):
        return progress, None
    if progress is None:
        progress = n_cells * n_timepoints >= PROGRESS_MIN_SAMPLES and sys.stderr.isatty()
    if not progress:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=n_cells, unit="cell", desc="calab deconvolution", leave=False)
    return bar.update, bar.close


# --------------------------------------------------------------------------- core
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
    library = array_library(traces)
    if library not in ("cupy", "jax"):
        traces = np.asarray(traces, dtype=np.float64)
        library = "numpy"
    ndim = traces.ndim
    if ndim not in (1, 2):
        raise ValueError(
            "traces must be 1-D (n_timepoints,) or 2-D (n_cells, n_timepoints); "
            f"got an array with shape {tuple(traces.shape)}"
        )
    max_iters = _check_max_iters(max_iters)
    validate_parameters(fs, tau_r, tau_d, lam if np.isscalar(lam) else 0.0)
    if conv_mode not in CONV_MODES:
        raise ValueError(f"conv_mode must be 'fft' or 'banded', got {conv_mode!r}")
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be 'nonneg' or 'box01', got {constraint!r}")
    batch = traces.reshape(1, -1) if ndim == 1 else traces
    n_cells, n_timepoints = batch.shape
    if n_cells == 0:
        raise ValueError(
            f"traces has no cells (shape {tuple(traces.shape)}); pass at least one trace"
        )
    lam_cells = _check_lambda(lam, n_cells)
    chosen = resolve_backend(backend, traces)

    if n_timepoints == 0:
        empty = np.zeros((n_cells, 0))
        if library != "numpy":
            empty = _from_backend(chosen, chosen.asarray(empty), library)
        outputs = DeconvolutionResult(
            empty, np.zeros(n_cells), empty, np.zeros(n_cells, dtype=np.int64), np.ones(n_cells, dtype=bool)
        )
        return outputs, ndim, library

    plan = make_plan(chosen, n_timepoints, fs, tau_r, tau_d, conv_mode, constraint, max_iters)
    chunk = _chunk_cells(chosen, n_cells, n_timepoints)
    advance, close = _progress_reporter(progress, n_cells, n_timepoints)
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
        checker = get_backend("numpy") if library == "numpy" else chosen
        for start in starts:
            _to_backend_f32(checker, batch[start : start + chunk], "input array", start)
    # NumPy results are written into preallocated float64 arrays chunk by chunk, so peak
    # memory is the outputs plus one chunk's working set (no concatenation copies).
    on_host = library == "numpy"
    activity_out = np.empty((n_cells, n_timepoints)) if on_host else []
    recon_out = (np.empty((n_cells, n_timepoints)) if on_host else []) if want_reconvolution else None
    baseline = np.empty(n_cells)
    iterations = np.empty(n_cells, dtype=np.int64)
    converged = np.empty(n_cells, dtype=bool)
    try:
        with chosen.precision_scope():
            for start in starts:
                stop = min(start + chunk, n_cells)
                block = _to_backend_f32(
                    chosen, batch[start:stop], "input array", None if row_label is None else start
                )
                rolling = rolling_baseline(chosen, block, float(tau_d), float(fs))
                out = solve_batch(chosen, plan, block, lam_cells[start:stop], rolling)
                if on_host:
                    activity_out[start:stop] = chosen.to_numpy(out.activity)
                    if want_reconvolution:
                        recon_out[start:stop] = chosen.to_numpy(out.reconvolution)
                else:
                    activity_out.append(_from_backend(chosen, out.activity, library))
                    if want_reconvolution:
                        recon_out.append(_from_backend(chosen, out.reconvolution, library))
                baseline[start:stop] = out.baseline
                iterations[start:stop] = out.iterations
                converged[start:stop] = out.converged
                if advance is not None:
                    advance(stop - start)
    finally:
        if close is not None:
            close()
    activity, reconvolution = activity_out, recon_out
    if not on_host:
        concat = _concatenate(library)
        activity = activity[0] if len(activity) == 1 else concat(activity)
        if want_reconvolution:
            reconvolution = reconvolution[0] if len(reconvolution) == 1 else concat(reconvolution)
    return DeconvolutionResult(activity, baseline, reconvolution, iterations, converged), ndim, library


def _lazy(*args: Any, full: bool) -> Any:
    """Dask input: delegate to calab.datasets (imported only now, as is Dask)."""
    from calab.datasets._dask import lazy_deconvolution

    return lazy_deconvolution(*args, full=full, api=sys.modules[__name__])


def _concatenate(library: str):
    if library == "cupy":
        import cupy

        return cupy.concatenate
    if library == "jax":
        import jax.numpy as jnp

        return jnp.concatenate
    return np.concatenate


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
        DC gain; a ``(n_cells,)`` array gives each cell its own λ.
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
        None (default): a progress bar on stderr for long solves when it is a terminal,
        nothing when piped.  True/False force it on/off.  A callable is called with the
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
        _vector_to_library(result.baseline, library),
        result.reconvolution,
        _vector_to_library(result.iterations, library),
        _vector_to_library(result.converged, library),
    )
