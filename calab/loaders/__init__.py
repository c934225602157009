"""Loaders for the outputs of common calcium-imaging pipelines.

Every loader returns ``(traces, metadata)``:

* ``traces`` -- ``numpy.ndarray``, float64, C-contiguous, shape ``(n_cells, n_timepoints)``;
* ``metadata`` -- ``{"source": str, "sampling_rate_hz": float | None, "num_cells": int,
  "num_timepoints": int}``, followed by format-specific extras.

=====================  ======================================  =========================
loader                 input                                   needs
=====================  ======================================  =========================
:func:`load_caiman`    CaImAn ``.hdf5`` results file           ``pip install calab[loaders]`` (h5py)
:func:`load_minian`    Minian Zarr output (v2 or v3 stores)    ``pip install calab[loaders]`` (zarr)
:func:`load_suite2p`   suite2p ``plane*`` output folder        nothing extra (NumPy)
:func:`load_nwb`       NWB 2.x file (``RoiResponseSeries``)    ``pip install calab[loaders]`` (h5py)
=====================  ======================================  =========================

:func:`detect_format` guesses which loader a path needs (used by ``calab convert``).
The optional libraries are imported only when a loader runs.
"""

from __future__ import annotations

from calab.loaders.caiman import load_caiman
from calab.loaders.detect import FORMATS, detect_format, load_any
from calab.loaders.minian import load_minian
from calab.loaders.nwb import load_nwb
from calab.loaders.suite2p import load_suite2p

__all__ = [
    "FORMATS",
    "detect_format",
    "load_any",
    "load_caiman",
    "load_minian",
    "load_nwb",
    "load_suite2p",
]
