"""Automated deconvolution of a whole recording: learn the kernel on a sample, stream the rest.

:func:`cadecon_dataset` is ``calab cadecon BIG --native --out OUT.zarr``: the CaDecon loop
(:func:`calab.run_cadecon`) learns the kernel from an evenly spaced sample of cells read
chunk by chunk, then every cell is solved with that kernel (InDeCa's finalisation, spec
``indeca.md`` §6.7) and streamed to a resumable Zarr store by the same machinery as
:func:`calab.datasets.deconvolve_dataset`.  The learned kernel is part of the manifest, so a
resumed run does not learn it again and solves the remaining chunks exactly as the first
run would have.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from calab.datasets._sources import TraceSource, check_finite, open_source
from calab.datasets._store import OutputStore
from calab.datasets._stream import MANIFEST_VERSION_KEY, DatasetRun, stream_dataset

__all__ = ["DEFAULT_SAMPLE_CELLS", "cadecon_dataset", "sample_rows"]

#: Cells the kernel is learned from (the CaDecon loop itself uses subsets of them).
DEFAULT_SAMPLE_CELLS = 1000


def sample_rows(data: TraceSource, count: int, chunk_cells: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``count`` evenly spaced cells of ``data``, read one chunk of cells at a time.

    Returns
    -------
    rows : numpy.ndarray, shape (count, n_timepoints), float64
    index : numpy.ndarray, shape (count,), int64
        Their cell numbers in ``data``.
    """
    n_cells = data.shape[0]
    count = max(1, min(int(count), n_cells))
    index = np.unique(np.linspace(0, n_cells - 1, count).round().astype(np.int64))
    rows = np.empty((index.size, data.shape[1]))
    for start in range(0, n_cells, chunk_cells):
        stop = min(n_cells, start + chunk_cells)
        wanted = index[(index >= start) & (index < stop)]
        if wanted.size == 0:
            continue
        block = data.read(start, stop)
        check_finite(block, start, data.where)
        rows[np.searchsorted(index, wanted)] = block[wanted - start]
    return rows, index


def cadecon_dataset(
    source: Any,
    output: str | os.PathLike[str],
    *,
    fs: float | None = None,
    config: Any = None,
    sample_cells: int = DEFAULT_SAMPLE_CELLS,
    key: str | None = None,
    fmt: str | None = None,
    backend: str | None = None,
    chunk_cells: int | None = None,
    memory_budget: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    prescan: bool = True,
    progress: bool | Callable[[int], object] | None = None,
    client: Any = None,
    source_options: dict | None = None,
    **overrides: Any,
) -> DatasetRun:
    """Learn the calcium kernel from a sample of cells, then deconvolve every cell to Zarr.

    Parameters
    ----------
    source : path or array-like
        As for :func:`calab.datasets.deconvolve_dataset` (Zarr, HDF5/CaImAn, ``.npy``,
        suite2p, NWB, or a sliceable ``(n_cells, n_timepoints)`` array).
    output : path
        The Zarr store to write (``activity`` spike counts float32, ``alpha``,
        ``baseline``, ``pve`` float64 per cell, and ``calab_manifest.json`` with the
        learned kernel).
    fs : float, optional
        Sampling rate in Hz when the source does not store it.
    config : calab.DeconConfig, optional
        Loop settings; ``**overrides`` replace single fields (as for :func:`calab.run_cadecon`).
    sample_cells : int
        Evenly spaced cells the kernel is learned from (default 1,000; all cells of a
        smaller recording).
    key, fmt, source_options
        Which dataset of the source, and how to read it (see :func:`open_source`).
    backend, chunk_cells, memory_budget, resume, overwrite, prescan, progress, client
        As for :func:`calab.datasets.deconvolve_dataset`.  ``progress`` also shows the
        CaDecon loop's progress while the kernel is learned.

    Returns
    -------
    DatasetRun
        ``metadata``-free summary of the streamed run; the learned kernel is in the
        manifest's ``parameters`` (``tau_r``, ``tau_d``) and ``parameters["learned"]``.

    Raises
    ------
    ValueError
        Bad settings (pydantic's error names the field), NaN/inf in the sample (the
        message names the cell and frame), or no kernel could be learned.
    FileExistsError, PermissionError, calab.DatasetLockedError, calab.DatasetMismatchError
        As for :func:`calab.datasets.deconvolve_dataset`.
    """
    from calab._validate import check_integer
    from calab.cadecon import DeconConfig, run_cadecon
    from calab.loaders._common import validate_fs

    began = time.perf_counter()
    output = Path(output)
    sample_cells = check_integer(sample_cells, "sample_cells", minimum=1)
    # 0 must not fall through to "choose for me", and 2.5 is not truncated
    chunk_cells = check_integer(chunk_cells, "chunk_cells", minimum=None, allow_none=True)
    if chunk_cells is not None and chunk_cells < 1:
        raise ValueError(f"chunk_cells must be a positive number of cells, got {chunk_cells!r}")
    if config is not None and not isinstance(config, DeconConfig):
        raise TypeError(f"config must be a calab.DeconConfig, got {type(config).__name__}")
    merged = DeconConfig(**{**(config.model_dump() if config is not None else {}), **overrides})
    data = open_source(source, key=key, fmt=fmt, **(source_options or {}))
    try:
        n_cells = data.shape[0]
        fs = validate_fs(fs, required=False)
        if fs is None:
            fs = data.fs
        if fs is None:
            raise ValueError(f"{data.where} does not store its sampling rate; pass fs= (Hz).")
        settings = _learned_settings(output, data, resume and not overwrite, merged, fs)
        if settings is None:
            rows, index = sample_rows(data, sample_cells)
            # a callable counts streamed cells; the loop's own events are not cell counts
            result = run_cadecon(rows, fs, config=merged, backend=backend,
                                 progress=False if callable(progress) else progress)
            settings = _cadecon_settings(result, merged, fs, index, n_cells)
    except BaseException:
        data.close()
        raise
    return stream_dataset(data, output, settings, np.zeros(n_cells), chunk_cells=chunk_cells, backend=backend,
                          memory_budget=memory_budget, resume=resume, overwrite=overwrite, prescan=prescan,
                          progress=progress, client=client, began=began)


def _cadecon_settings(result: Any, config: Any, fs: float, index: np.ndarray, n_cells: int) -> dict:
    """The manifest parameters of a CaDecon stream: the learned kernel and the solve settings."""
    meta = result.metadata
    tau_r, tau_d = meta.get("tau_rise"), meta.get("tau_decay")
    if tau_r is None or tau_d is None:
        raise ValueError(
            "no kernel could be learned from the sample (no activity found in its cells); "
            "pass a larger sample_cells, or deconvolve with a known kernel (calab deconvolve -p export.json)"
        )
    import calab

    return {
        "method": "cadecon",
        "fs": float(fs),
        "tau_r": float(tau_r),
        "tau_d": float(tau_d),
        "cadecon": config.model_dump(mode="json"),
        "save_reconvolution": False,
        "learned": {
            "sample_cells": int(index.size),
            "of_cells": int(n_cells),
            "num_iterations": meta.get("num_iterations"),
            "converged": meta.get("converged"),
            "beta": meta.get("beta"),
            "upsample_factor": meta.get("upsample_factor"),
        },
        MANIFEST_VERSION_KEY: calab.__version__,
    }


def _learned_settings(output: Path, data: TraceSource, resume: bool, config: Any, fs: float) -> dict | None:
    """The parameters of an existing CaDecon output of this recording and config, to resume it."""
    if not (resume and output.is_dir()):
        return None
    manifest = OutputStore(output).read_manifest()
    if not manifest or manifest.get("parameters", {}).get("method") != "cadecon":
        return None
    parameters = manifest["parameters"]
    same = (
        parameters.get("cadecon") == config.model_dump(mode="json")
        and parameters.get("fs") == float(fs)
        and manifest.get("source", {}).get("fingerprint") == data.fingerprint()
    )
    return parameters if same else None

