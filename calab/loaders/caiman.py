"""CaImAn results (HDF5, as written by ``cnm.save("results.hdf5")``)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from calab.loaders._common import (
    CalabKeyError,
    as_traces_2d,
    check_real_dtype,
    make_metadata,
    require_module,
    validate_fs,
)

__all__ = ["load_caiman"]

_MAX_LISTED = 40  # dataset paths listed in a KeyError message


def open_hdf5(path: Path, what: str) -> Any:
    """Open an HDF5 file read-only with a clear error for non-HDF5 files."""
    h5py = require_module("h5py", f"load {what} files")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(
            f"{path} is not a readable HDF5 file ({exc}). Check that it is a complete "
            f"{what} file (a copy may have been cut short)."
        ) from None


def list_datasets(group: Any, limit: int = _MAX_LISTED) -> list[str]:
    """Paths of the datasets below ``group`` (breadth-first, at most ``limit``)."""
    h5py = require_module("h5py", "read HDF5 files")
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and len(found) < limit:
            found.append(name)

    group.visititems(visit)
    return found


def read_hdf5_traces(handle: Any, key: str, path: Path, what: str) -> np.ndarray:
    """Read dataset ``key`` as a real array, with documented errors (see :func:`hdf5_dataset`)."""
    return hdf5_dataset(handle, key, path, what)[()]


def hdf5_dataset(handle: Any, key: str, path: Path, what: str) -> Any:
    """The h5py dataset ``key``, checked but not read (for sliced, streaming access).

    Raises
    ------
    KeyError
        If ``key`` is absent (lists the top-level keys and the datasets present).
    ValueError
        If ``key`` is a group, or holds CaImAn's ``'NoneType'`` placeholder.
    TypeError
        If the data are complex or non-numeric.
    """
    h5py = require_module("h5py", f"load {what} files")
    if key not in handle:
        raise CalabKeyError(
            f"Trace key '{key}' not found in {path}. Available keys: {list(handle.keys())}. "
            f"Datasets in the file: {list_datasets(handle)}. Pass the right one as trace_key=."
        )
    node = handle[key]
    if not isinstance(node, h5py.Dataset):
        raise ValueError(
            f"'{key}' in {path} is a group, not a dataset; its members are {list(node.keys())}. "
            "Pass the dataset path as trace_key=, e.g. 'estimates/C'."
        )
    if node.dtype.kind in "SOU" and node.shape == ():
        value = node[()]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value == "NoneType":
            # CaImAn stores attributes that were never computed as the string 'NoneType'.
            raise ValueError(
                f"'{key}' in {path} is empty (CaImAn wrote 'NoneType': the traces were never "
                "computed). Fit the model (cnm.fit / refit) before cnm.save(), or choose another key."
            )
    check_real_dtype(node.dtype, f"Dataset '{key}' in {path}")
    return node


def read_hdf5_rate(handle: Any, key: str) -> float | None:
    """Read a positive scalar sampling rate, or None if absent or not usable."""
    h5py = require_module("h5py", "read HDF5 files")
    if not key or key not in handle or not isinstance(handle[key], h5py.Dataset):
        return None
    node = handle[key]
    if node.dtype.kind not in "biuf" or node.size != 1:
        return None
    value = float(np.asarray(node[()]).reshape(-1)[0])
    return value if math.isfinite(value) and value > 0 else None


def load_caiman(
    path: str | os.PathLike[str],
    trace_key: str = "estimates/C",
    fs_key: str = "params/data/fr",
    fs: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Load traces from a CaImAn HDF5 results file.

    Parameters
    ----------
    path : str or os.PathLike
        Path to the CaImAn HDF5 file (e.g. ``caiman_results.hdf5``).
    trace_key : str
        HDF5 dataset path of the traces array.  Default ``"estimates/C"`` (denoised
        traces); ``"estimates/F_dff"`` or ``"estimates/YrA"`` are common alternatives.
    fs_key : str
        HDF5 dataset path of the sampling rate.  Default ``"params/data/fr"``.  Ignored
        when ``fs`` is given.
    fs : float, optional
        Sampling rate in Hz, overriding the file's value.

    Returns
    -------
    traces : numpy.ndarray
        float64, C-contiguous, shape ``(n_cells, n_timepoints)`` -- CaImAn's ``C`` is
        already cells x time, so no transpose; a 1-D dataset becomes one row.
    metadata : dict
        ``{"source": "caiman", "sampling_rate_hz": float | None, "num_cells": int,
        "num_timepoints": int}``; ``sampling_rate_hz`` is None when neither ``fs`` nor
        ``fs_key`` gives one.

    Raises
    ------
    ImportError
        If h5py is not installed (``pip install calab[loaders]``).
    FileNotFoundError
        If the file does not exist.
    KeyError
        If ``trace_key`` is not in the file; the message lists the available keys.
    ValueError
        If the file is not HDF5, the dataset is empty, a group, 3-D or larger, or ``fs``
        is not a positive number.
    TypeError
        If the dataset is complex or non-numeric.
    """
    require_module("h5py", "load CaImAn files")
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ValueError(f"CaImAn path {path} is a directory; pass the .hdf5 results file.")
        raise FileNotFoundError(f"CaImAn HDF5 file not found: {path}")
    fs = validate_fs(fs, required=False)
    with open_hdf5(path, "CaImAn") as handle:
        data = read_hdf5_traces(handle, trace_key, path, "CaImAn")
        if fs is None:
            fs = read_hdf5_rate(handle, fs_key)
    traces = as_traces_2d(data, f"Dataset '{trace_key}' in {path}")
    return traces, make_metadata("caiman", traces, fs)
