"""suite2p output folders (``suite2p/plane0``: ``F.npy``, ``Fneu.npy``, ``iscell.npy``, ``ops.npy``)."""

from __future__ import annotations

import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from calab._validate import check_bool, check_nonnegative_scalar, check_real_scalar
from calab.loaders._common import as_traces_2d, make_metadata, read_npy, validate_fs
from calab.loaders._pickle import load_pickled_npy

__all__ = ["load_suite2p", "resolve_plane_dir"]

#: suite2p's default neuropil coefficient (``ops["neucoeff"]``).
DEFAULT_NEUCOEFF = 0.7


def resolve_plane_dir(path: str | os.PathLike[str]) -> Path:
    """Find the folder holding ``F.npy``.

    Accepts a plane folder (``suite2p/plane0``), its ``F.npy``, or a ``suite2p`` folder
    with exactly one ``plane*`` subfolder.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or no ``F.npy`` is found.
    ValueError
        If ``path`` holds several planes (one must be chosen).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"suite2p folder not found: {path}")
    if path.is_file():
        if path.name != "F.npy":
            raise ValueError(f"{path} is a file; pass the suite2p plane folder (e.g. suite2p/plane0).")
        return path.parent
    if (path / "F.npy").is_file():
        return path
    planes = sorted(p for p in path.glob("plane*") if (p / "F.npy").is_file())
    if len(planes) == 1:
        return planes[0]
    if len(planes) > 1:
        names = [p.name for p in planes]
        raise ValueError(
            f"{path} holds several suite2p planes {names}; pass one plane folder, "
            f"e.g. {path / names[0]} (each plane has its own frame rate and ROIs)."
        )
    raise FileNotFoundError(
        f"No suite2p output in {path}: F.npy not found. Pass the plane folder that suite2p "
        "wrote (…/suite2p/plane0)."
    )


def _read_ops(plane: Path) -> dict:
    ops_path = plane / "ops.npy"
    if not ops_path.is_file():
        return {}
    ops = load_pickled_npy(ops_path)
    return ops if isinstance(ops, dict) else {}


def _positive_number(value: Any) -> float | None:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _cell_mask(plane: Path, n_rois: int, cell_probability: float | None) -> np.ndarray | None:
    iscell_path = plane / "iscell.npy"
    if not iscell_path.is_file():
        warnings.warn(
            f"{iscell_path} not found: keeping all {n_rois} ROIs (pass cells_only=False to "
            "silence this).",
            stacklevel=3,
        )
        return None
    iscell = np.asarray(read_npy(iscell_path, "iscell"))
    if iscell.ndim == 1:
        iscell = iscell[:, None]
    if iscell.ndim != 2 or iscell.shape[0] != n_rois or iscell.dtype.kind not in "biuf":
        raise ValueError(
            f"{iscell_path} has shape {iscell.shape} and dtype {iscell.dtype}; expected "
            f"({n_rois}, 2) numbers matching F.npy. Pass cells_only=False to ignore it."
        )
    if cell_probability is None:
        return iscell[:, 0] > 0.5
    if iscell.shape[1] < 2:
        raise ValueError(f"{iscell_path} has no probability column; omit cell_probability=.")
    return iscell[:, 1] >= cell_probability


def load_suite2p(
    path: str | os.PathLike[str],
    fs: float | None = None,
    *,
    subtract_neuropil: bool = True,
    neuropil_coefficient: float | None = None,
    cells_only: bool = True,
    cell_probability: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Load fluorescence traces from a suite2p output folder.

    Parameters
    ----------
    path : str or os.PathLike
        A suite2p plane folder (``…/suite2p/plane0``), its ``F.npy``, or a ``suite2p``
        folder holding a single plane.
    fs : float, optional
        Sampling rate in Hz; overrides ``ops["fs"]`` (suite2p's per-plane frame rate).
    subtract_neuropil : bool, keyword-only
        Return ``F - c * Fneu`` (default, what suite2p itself deconvolves) instead of raw
        ``F``.  Computed in float64.
    neuropil_coefficient : float, optional, keyword-only
        The coefficient ``c``; default ``ops["neucoeff"]``, or 0.7 if ops lacks it.
    cells_only : bool, keyword-only
        Keep only ROIs classified as cells in ``iscell.npy`` (default).  Without an
        ``iscell.npy`` all ROIs are kept, with a warning.
    cell_probability : float, optional, keyword-only
        Instead of suite2p's 0/1 label, keep ROIs whose classifier probability
        (``iscell[:, 1]``) is at least this value.

    Returns
    -------
    traces : numpy.ndarray
        float64, C-contiguous, shape ``(n_cells, n_timepoints)`` (suite2p already stores
        ROIs x frames).
    metadata : dict
        ``{"source": "suite2p", "sampling_rate_hz": float | None, "num_cells": int,
        "num_timepoints": int, "roi_indices": list[int], "neuropil_coefficient":
        float | None}`` -- ``roi_indices`` are the kept rows of ``F.npy``.

    Raises
    ------
    FileNotFoundError
        If the folder, ``F.npy``, or (with neuropil subtraction) ``Fneu.npy`` is missing.
    ValueError
        If the files are corrupt, their shapes disagree, no ROI is a cell, several planes
        are found, or a parameter is out of range.
    TypeError
        If ``F.npy`` holds non-numeric data.
    """
    plane = resolve_plane_dir(path)
    fs = validate_fs(fs, required=False)
    subtract_neuropil = check_bool(subtract_neuropil, "subtract_neuropil")
    cells_only = check_bool(cells_only, "cells_only")
    cell_probability = check_real_scalar(
        cell_probability, "cell_probability", minimum=0.0, maximum=1.0, allow_none=True
    )
    neuropil_coefficient = check_nonnegative_scalar(
        neuropil_coefficient, "neuropil_coefficient", allow_none=True
    )

    raw = read_npy(plane / "F.npy", "suite2p fluorescence")
    f_values = as_traces_2d(raw, f"{plane / 'F.npy'}")
    ops = _read_ops(plane)

    coefficient: float | None = None
    if subtract_neuropil:
        fneu_path = plane / "Fneu.npy"
        if not fneu_path.is_file():
            raise FileNotFoundError(
                f"{fneu_path} not found, so neuropil cannot be subtracted. Pass "
                "subtract_neuropil=False to load raw F."
            )
        neuropil = as_traces_2d(read_npy(fneu_path, "suite2p neuropil"), f"{fneu_path}")
        if neuropil.shape != f_values.shape:
            raise ValueError(
                f"{fneu_path} has shape {neuropil.shape} but F.npy has {f_values.shape}; the "
                "files come from different runs."
            )
        if neuropil_coefficient is None:
            coefficient = _positive_number(ops.get("neucoeff")) or DEFAULT_NEUCOEFF
        else:
            coefficient = neuropil_coefficient
        f_values = f_values - coefficient * neuropil

    keep = np.arange(f_values.shape[0])
    if cells_only:
        mask = _cell_mask(plane, f_values.shape[0], cell_probability)
        if mask is not None:
            if not mask.any():
                raise ValueError(
                    f"No ROI in {plane} is classified as a cell (iscell.npy); pass "
                    "cells_only=False to load every ROI."
                )
            keep = np.flatnonzero(mask)
            f_values = f_values[keep]
    if fs is None:
        fs = _positive_number(ops.get("fs"))
    traces = np.ascontiguousarray(f_values, dtype="<f8")
    return traces, make_metadata(
        "suite2p",
        traces,
        fs,
        roi_indices=[int(index) for index in keep],
        neuropil_coefficient=coefficient,
    )
