"""Minian output (Zarr, format v2 or v3).

Minian's ``save_minian`` writes every variable as its own xarray/Zarr dataset inside the
output directory -- ``minian_output/C.zarr/C`` with dimensions ``("unit_id", "frame")``
and coordinate arrays ``unit_id`` and ``frame``.  Stores that hold ``C`` at the top level
(``zarr.open("minian_output")["C"]``, as the published calab and ad-hoc exports do) and a
path pointing straight at a ``C.zarr`` dataset or at the array itself work as well.
"""

from __future__ import annotations

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

__all__ = ["load_minian"]

#: Dimension names that mean "time" in xarray-written stores; a 2-D array whose *first*
#: dimension is one of these is stored time-major and gets transposed.
_TIME_DIMS = frozenset({"frame", "frames", "time", "t"})


#: Zarr metadata documents (v3 and v2); a node with none of them is not a Zarr node
_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")


def _raise_if_damaged(path: Path, error: BaseException) -> None:
    """Name the damaged metadata file when opening the node at ``path`` failed with ``error``.

    zarr reports a corrupt ``zarr.json`` as a bare ``JSONDecodeError`` (or, for valid JSON
    that is not Zarr metadata, an error about a field), without saying which file.
    """
    import json

    for name in _METADATA_FILES:
        candidate = path / name
        if not candidate.is_file():
            continue
        try:
            json.loads(candidate.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{candidate} is corrupt (not valid JSON: {exc}); the Zarr store is damaged. Restore it "
                "from a backup or re-create it."
            ) from None
        except OSError as exc:
            raise ValueError(f"{candidate} cannot be read ({exc}); the Zarr store is damaged.") from None
        if name != ".zattrs":
            raise ValueError(
                f"{candidate} is not valid Zarr metadata ({type(error).__name__}: {error}); the Zarr "
                "store is damaged. Restore it from a backup or re-create it."
            ) from None


def _open_node(zarr: Any, path: Path) -> Any | None:
    """Open a Zarr group or array read-only; None if ``path`` is not a Zarr node.

    Raises
    ------
    ValueError
        ``path`` holds Zarr metadata that is corrupt (the message names the file).
    """
    try:
        return zarr.open(str(path), mode="r")
    except (FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        # zarr 3 raises GroupNotFoundError (a FileNotFoundError/ValueError); zarr 2 raises
        # PathNotFoundError / ValueError.  Without metadata files they mean "no Zarr node
        # here"; with them, the metadata is damaged.
        _raise_if_damaged(path, exc)
        return None


def _child(node: Any, name: str, path: Path) -> Any | None:
    """``node[name]`` (None when absent), naming a damaged child's metadata file instead of
    letting zarr's bare ``JSONDecodeError`` through.  ``path``: the directory of ``node``."""
    try:
        return node[name] if name in node else None
    except (KeyError, FileNotFoundError):
        return None
    except (ValueError, TypeError) as exc:
        _raise_if_damaged(path / name, exc)
        raise


def _is_array(node: Any) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype") and not hasattr(node, "group_keys")


def _group_keys(node: Any) -> list[str]:
    try:
        return sorted(node.keys())
    except Exception:  # pragma: no cover - exotic stores
        return []


def _dimension_names(array: Any) -> tuple[str, ...] | None:
    """xarray's dimension names: ``_ARRAY_DIMENSIONS`` (v2) or ``dimension_names`` (v3)."""
    names = None
    try:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    except Exception:  # pragma: no cover - defensive: attrs of odd stores
        names = None
    if not names:
        names = getattr(getattr(array, "metadata", None), "dimension_names", None)
    if not names or any(name is None for name in names):
        return None
    return tuple(str(name) for name in names)


def _find_array(zarr: Any, root: Path, trace_key: str) -> Any:
    """Locate the trace array for every layout Minian users have."""
    # 1. Minian's own layout: <root>/<key>.zarr is an xarray dataset holding <key>.
    dataset_dir = root / f"{trace_key}.zarr"
    if dataset_dir.is_dir():
        node = _open_node(zarr, dataset_dir)
        if node is not None:
            if _is_array(node):
                return node
            found = _child(node, trace_key, dataset_dir)
            if found is not None:
                return found
    # 2. <root> itself: a group holding <key>, a <key>.zarr dataset, or the array.
    node = _open_node(zarr, root)
    if node is not None and _is_array(node):
        return node
    found = _child(node, trace_key, root) if node is not None else None
    if found is not None:
        if _is_array(found):
            return found
        inner = _child(found, trace_key, root / trace_key)  # <root>/<key>: a group holding <key>
        if inner is not None:
            return inner
    available = _group_keys(node) if node is not None else []
    available += sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and entry.name.endswith(".zarr")
    )
    if node is None and not available:
        raise ValueError(
            f"{root} is not a Zarr store (no .zgroup/.zarray/zarr.json metadata) and holds no "
            "*.zarr datasets. Pass the Minian output directory (the one containing C.zarr)."
        )
    raise CalabKeyError(
        f"Trace key '{trace_key}' not found in {root}. Available keys: {available}. "
        "Pass the right one as trace_key= (Minian's denoised traces are 'C')."
    )


def load_minian(
    path: str | os.PathLike[str],
    trace_key: str = "C",
    fs: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Load traces from a Minian Zarr output directory.

    Parameters
    ----------
    path : str or os.PathLike
        Minian output directory (the folder holding ``C.zarr``), a ``C.zarr`` dataset,
        or any Zarr group with a ``C`` array.  Zarr format v2 and v3 are both read.
    trace_key : str
        Name of the traces array.  Default ``"C"``.
    fs : float, optional
        Sampling rate in Hz.  Minian does not store it, so pass it if you know it;
        otherwise ``metadata["sampling_rate_hz"]`` is None.

    Returns
    -------
    traces : numpy.ndarray
        float64, C-contiguous, shape ``(n_cells, n_timepoints)``.  Minian's ``C`` is
        ``(unit_id, frame)``; an array whose dimension names say time comes first
        (``frame``/``time``) is transposed.  A 1-D array becomes one row.
    metadata : dict
        ``{"source": "minian", "sampling_rate_hz": fs, "num_cells": int,
        "num_timepoints": int}``.

    Raises
    ------
    ImportError
        If zarr is not installed (``pip install calab[loaders]``).
    FileNotFoundError
        If ``path`` does not exist.
    KeyError
        If ``trace_key`` is not found; the message lists the available keys.
    ValueError
        If ``path`` is not a Zarr store, the data cannot be decoded (corrupt chunks),
        the array is empty or has more than 2 dimensions, or ``fs`` is not positive.
    TypeError
        If the array is complex or non-numeric.
    """
    zarr = require_module("zarr", "load Minian files")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Minian Zarr directory not found: {path}")
    if not path.is_dir():
        raise ValueError(f"Minian output must be a Zarr directory, but {path} is a file.")
    fs = validate_fs(fs, required=False)
    array = _find_array(zarr, path, trace_key)
    check_real_dtype(np.dtype(array.dtype), f"Zarr array '{trace_key}' in {path}")
    try:
        data = np.asarray(array[...])
    except Exception as exc:  # codec / chunk errors surface from deep inside zarr
        raise ValueError(
            f"Could not read Zarr array '{trace_key}' from {path}: {type(exc).__name__}: {exc}. "
            "The store may be incomplete or corrupt; re-export it from Minian."
        ) from None
    dims = _dimension_names(array)
    if data.ndim == 2 and dims and dims[0] in _TIME_DIMS and dims[1] not in _TIME_DIMS:
        data = data.T
    traces = as_traces_2d(data, f"Zarr array '{trace_key}' in {path}")
    return traces, make_metadata("minian", traces, fs)
