"""Whole datasets: stream recordings bigger than memory, resume after a crash, use Dask.

:func:`deconvolve_dataset` reads a recording (Zarr, HDF5/CaImAn, memory-mapped ``.npy``,
suite2p folder, NWB file, or any sliceable array) one chunk of cells at a time and writes
``activity``, ``baseline``, ``iterations`` and ``converged`` incrementally to a Zarr
store, with a manifest of finished chunks that lets a killed run resume; ``client=``
spreads the chunks over a ``dask.distributed`` cluster.  :func:`cadecon_dataset` does the
same with a kernel the CaDecon loop learns from a sample of cells (``calab cadecon --native --out``).  ``run_deconvolution`` and
``run_deconvolution_full`` also accept a dask array and return a lazy result.

See ``docs/datasets.md`` for a walk-through, the output layout and cluster recipes.
"""

from calab.datasets._cadecon import cadecon_dataset
from calab.datasets._sources import SOURCE_KINDS, TraceSource, open_source
from calab.datasets._store import (
    MANIFEST_NAME,
    DatasetDamagedError,
    DatasetDamageWarning,
    DatasetLockedError,
    DatasetMismatchError,
)
from calab.datasets._stream import DatasetRun, deconvolve_dataset, plan_chunk_cells

__all__ = [
    "MANIFEST_NAME",
    "SOURCE_KINDS",
    "DatasetDamageWarning",
    "DatasetDamagedError",
    "DatasetLockedError",
    "DatasetMismatchError",
    "DatasetRun",
    "TraceSource",
    "cadecon_dataset",
    "deconvolve_dataset",
    "open_source",
    "plan_chunk_cells",
]
