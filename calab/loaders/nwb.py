"""Neurodata Without Borders (NWB 2.x) files: ``RoiResponseSeries`` traces.

NWB 2 files are HDF5 files with a documented layout, so they are read with h5py
directly: pynwb is not needed (it is slow to import and rejects files whose extension
namespaces are not installed).  A ``pynwb.NWBFile`` that is already open can be passed
instead of a path.

Layout read here: any group whose ``neurodata_type`` attribute is ``RoiResponseSeries``
(usually ``processing/ophys/Fluorescence/<name>`` or ``processing/ophys/DfOverF/<name>``)
with a ``data`` dataset of shape ``(n_timepoints, n_rois)`` -- NWB stores **time first**,
so it is transposed -- and either ``starting_time`` (attribute ``rate``, Hz) or
``timestamps`` (seconds) for the sampling rate.  ``data`` is scaled by its ``conversion``
and ``offset`` attributes when they are not the identity, as pynwb's
``get_data_in_units()`` does.
"""

from __future__ import annotations

import os
import warnings
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

__all__ = ["load_nwb"]

_SERIES_TYPE = "RoiResponseSeries"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def _find_series(handle: Any) -> list[str]:
    h5py = require_module("h5py", "load NWB files")
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and _text(obj.attrs.get("neurodata_type", "")) == _SERIES_TYPE:
            found.append(name)

    handle.visititems(visit)
    return sorted(found)


def _select(candidates: list[str], series: str | None, where: str) -> str:
    if not candidates:
        raise CalabKeyError(
            f"No {_SERIES_TYPE} found in {where}. calab reads ROI fluorescence traces "
            "(processing/ophys/Fluorescence or DfOverF); this file has none."
        )
    if series is None:
        if len(candidates) == 1:
            return candidates[0]
        raise ValueError(
            f"{where} holds several {_SERIES_TYPE}s: {candidates}. Choose one with "
            "series=<name or path> (calab convert: --key)."
        )
    wanted = series.strip("/")
    matches = [c for c in candidates if c == wanted or c.endswith("/" + wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CalabKeyError(
            f"{_SERIES_TYPE} '{series}' not found in {where}. Available keys: {candidates}."
        )
    raise ValueError(f"'{series}' matches several series in {where}: {matches}; give the full path.")


def _rate_from_timestamps(timestamps: np.ndarray, where: str) -> float | None:
    timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if timestamps.size < 2:
        return None
    steps = np.diff(timestamps)
    step = float(np.median(steps))
    if not np.isfinite(step) or step <= 0:
        return None
    if np.max(np.abs(steps - step)) > 0.05 * step:
        warnings.warn(
            f"{where}: timestamps are irregular (steps {steps.min():.4g}-{steps.max():.4g} s); "
            f"using the median step for sampling_rate_hz.",
            stacklevel=4,
        )
    return 1.0 / step


def _scale(data: np.ndarray, conversion: Any, offset: Any) -> np.ndarray:
    conversion = 1.0 if conversion is None else float(conversion)
    offset = 0.0 if offset is None else float(offset)
    if conversion == 1.0 and offset == 0.0:
        return data  # keep stored values bit for bit
    return np.asarray(data, dtype=np.float64) * conversion + offset


def _to_cells_by_time(data: np.ndarray, where: str) -> np.ndarray:
    check_real_dtype(data.dtype, where)
    if data.ndim == 2:
        return data.T  # NWB: (time, rois)
    return data  # 1-D (time,) is one ROI; other ranks are rejected by as_traces_2d


def _load_h5(path: Path, series: str | None) -> tuple[np.ndarray, float | None, dict]:
    h5py = require_module("h5py", "load NWB files")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable NWB (HDF5) file ({exc}).") from None
    with handle:
        if "nwb_version" not in handle.attrs and _text(handle.attrs.get("neurodata_type", "")) != "NWBFile":
            raise ValueError(
                f"{path} is an HDF5 file but not an NWB file (no nwb_version attribute). "
                "For CaImAn results use calab.load_caiman."
            )
        name = _select(_find_series(handle), series, str(path))
        group = handle[name]
        if "data" not in group:
            raise ValueError(f"{path}: series '{name}' has no 'data' dataset.")
        dataset = group["data"]
        where = f"{path}:{name}/data"
        check_real_dtype(dataset.dtype, where)
        data = _scale(dataset[()], dataset.attrs.get("conversion"), dataset.attrs.get("offset"))
        fs = None
        if "starting_time" in group:
            rate = group["starting_time"].attrs.get("rate")
            fs = float(rate) if rate is not None and np.isfinite(rate) and rate > 0 else None
        elif "timestamps" in group:
            fs = _rate_from_timestamps(group["timestamps"][()], where)
        unit = dataset.attrs.get("unit")
        return _to_cells_by_time(data, where), fs, {
            "series": name,
            "unit": None if unit is None else _text(unit),
        }


def _load_pynwb(nwbfile: Any, series: str | None) -> tuple[np.ndarray, float | None, dict]:
    found = {
        f"{getattr(obj.parent, 'name', '')}/{obj.name}".strip("/"): obj
        for obj in nwbfile.objects.values()
        if type(obj).__name__ == _SERIES_TYPE
    }
    where = f"NWBFile '{getattr(nwbfile, 'identifier', '?')}'"
    name = _select(sorted(found), series, where)
    obj = found[name]
    data = _scale(np.asarray(obj.data[()]), getattr(obj, "conversion", 1.0), getattr(obj, "offset", 0.0))
    fs = getattr(obj, "rate", None)
    if fs is None and getattr(obj, "timestamps", None) is not None:
        fs = _rate_from_timestamps(np.asarray(obj.timestamps[()]), where)
    unit = getattr(obj, "unit", None)
    return _to_cells_by_time(data, where), fs, {"series": name, "unit": unit}


def load_nwb(
    path: str | os.PathLike[str] | Any,
    series: str | None = None,
    fs: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Load ROI traces from an NWB 2.x file.

    Parameters
    ----------
    path : str, os.PathLike or pynwb.NWBFile
        An ``.nwb`` (HDF5) file, or an ``NWBFile`` already opened with pynwb.
    series : str, optional
        Which ``RoiResponseSeries`` to read: its name (``"RoiResponseSeries"``) or path
        (``"processing/ophys/DfOverF/RoiResponseSeries"``).  Required when the file holds
        several.
    fs : float, optional
        Sampling rate in Hz, overriding the series' ``rate`` / timestamps.

    Returns
    -------
    traces : numpy.ndarray
        float64, C-contiguous, shape ``(n_cells, n_timepoints)`` -- transposed from NWB's
        ``(n_timepoints, n_rois)``.
    metadata : dict
        ``{"source": "nwb", "sampling_rate_hz": float | None, "num_cells": int,
        "num_timepoints": int, "series": str, "unit": str | None}``.

    Raises
    ------
    ImportError
        If h5py is not installed (``pip install calab[loaders]``).
    FileNotFoundError
        If the file does not exist.
    KeyError
        If the file has no ``RoiResponseSeries``, or ``series`` names none of them (the
        message lists those available).
    ValueError
        If the file is not NWB/HDF5, several series match, or the data are empty or have
        more than 2 dimensions.
    TypeError
        If the data are complex or non-numeric.
    """
    if hasattr(path, "objects") and hasattr(path, "processing"):  # an open pynwb.NWBFile
        data, stored_fs, extra = _load_pynwb(path, series)
        where = "the NWBFile"
    else:
        require_module("h5py", "load NWB files")
        path = Path(path)
        if not path.is_file():
            if path.is_dir():
                raise ValueError(
                    f"{path} is a directory; calab reads HDF5 NWB files (.nwb), not NWB Zarr stores."
                )
            raise FileNotFoundError(f"NWB file not found: {path}")
        data, stored_fs, extra = _load_h5(path, series)
        where = str(path)
    fs = validate_fs(fs, required=False)
    if fs is None:
        fs = stored_fs
    traces = as_traces_2d(data, f"NWB series '{extra['series']}' in {where}")
    return traces, make_metadata("nwb", traces, fs, **extra)
