"""Dask support: lazy deconvolution of dask arrays.

Nothing here is imported unless a dask array or a ``client=`` reaches calab, so importing
calab never imports Dask.

* :func:`lazy_deconvolution` — what ``run_deconvolution(dask_array)`` and
  ``run_deconvolution_full(dask_array)`` return: one task per chunk of cells
  (``dask.array.blockwise``), each solved by the in-memory engine on whatever backend
  the worker resolves.  Parameters are checked when the graph is built; NaN/inf samples
  are reported when a chunk is computed, naming the cell (in the whole array) and frame.

``deconvolve_dataset(..., client=)`` lives in :mod:`calab.datasets._stream`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["lazy_deconvolution"]


def lazy_deconvolution(
    traces: Any, fs: float, tau_r: float, tau_d: float, lam: Any, max_iters: Any, conv_mode: str,
    constraint: str, backend: str | None, *, full: bool, api: Any,
) -> Any:
    """Build the lazy result of run_deconvolution(_full) for a dask array.

    Parameters
    ----------
    traces : dask.array.Array, shape (n_timepoints,) or (n_cells, n_timepoints)
        Chunked along cells; chunks along time are merged (each cell is solved whole).
    api : module
        :mod:`calab.deconvolution`, handed over by its dask hook (so that this module
        never imports it: no import cycle).
    full : bool
        False: the activity array.  True: a :class:`calab.DeconvolutionResult` of dask
        arrays (compute them together, ``dask.compute(*result)``, so each chunk is solved
        once).

    Returns
    -------
    dask.array.Array or DeconvolutionResult
        float64 activity with ``traces``' cell chunks (NumPy chunks).
    """
    import dask.array as da

    from calab._validate import check_real_dtype

    check_real_dtype(traces.dtype, "traces")
    if traces.ndim not in (1, 2):
        raise ValueError(
            "traces must be 1-D (n_timepoints,) or 2-D (n_cells, n_timepoints); "
            f"got an array with shape {tuple(traces.shape)}"
        )
    one_trace = traces.ndim == 1
    batch = traces[None, :] if one_trace else traces
    n_cells, n_timepoints = batch.shape
    fs, tau_r, tau_d, lam_cells, max_iters = api.check_solve_settings(
        fs, tau_r, tau_d, lam, max_iters, conv_mode, constraint, n_cells, shape=tuple(traces.shape)
    )
    if len(batch.chunks[1]) > 1:
        batch = batch.rechunk({1: -1})
    cell_chunks = batch.chunks[0]
    lam_blocks = da.from_array(lam_cells, chunks=(cell_chunks,))
    rows = da.arange(n_cells, chunks=(cell_chunks,))
    settings = {"fs": fs, "tau_r": tau_r, "tau_d": tau_d, "max_iters": max_iters, "conv_mode": conv_mode,
                "constraint": constraint, "backend": backend,
                "solve": api.run_deconvolution_full if full else api.run_deconvolution}
    width = 2 * n_timepoints + 3 if full else n_timepoints
    solved = da.blockwise(
        _solve_block, "ij", batch, "ij", lam_blocks, "i", rows, "i",
        settings=settings, dtype=np.float64, adjust_chunks={"j": width},
        meta=np.empty((0, 0), dtype=np.float64),
    )
    if not full:
        return solved[0] if one_trace else solved
    n = n_timepoints
    fields = (
        solved[:, :n],
        solved[:, 2 * n],
        solved[:, n : 2 * n],
        solved[:, 2 * n + 1].astype(np.int64),
        solved[:, 2 * n + 2].astype(bool),
    )
    if one_trace:
        fields = tuple(field[0] for field in fields)
    return api.DeconvolutionResult(*fields)


def _solve_block(block: Any, lam: np.ndarray, rows: np.ndarray, *, settings: dict) -> np.ndarray:
    """One chunk of cells: check, solve, and pack the results into one float64 array.

    Packed layout (full): ``[activity (T) | reconvolution (T) | baseline | iterations |
    converged]`` per row; iteration counts (< 2**32) are exact in float64.
    """
    from calab.backends import array_library
    from calab.backends.interop import is_device_library
    from calab.datasets._sources import check_finite

    if not is_device_library(array_library(block)):  # host chunks: name the bad cell and frame
        block = np.asarray(block)
        check_finite(block, int(rows[0]) if len(rows) else 0, "input array")
    args = (settings["fs"], settings["tau_r"], settings["tau_d"], np.asarray(lam), settings["max_iters"],
            settings["conv_mode"], settings["constraint"])
    result = settings["solve"](block, *args, backend=settings["backend"], progress=False)
    if not hasattr(result, "reconvolution"):  # run_deconvolution: the activity alone
        return np.asarray(result, dtype=np.float64)
    n = block.shape[1]
    packed = np.empty((block.shape[0], 2 * n + 3))
    packed[:, :n] = np.asarray(result.activity)
    packed[:, n : 2 * n] = np.asarray(result.reconvolution)
    packed[:, 2 * n] = np.asarray(result.baseline)
    packed[:, 2 * n + 1] = np.asarray(result.iterations)
    packed[:, 2 * n + 2] = np.asarray(result.converged)
    return packed
