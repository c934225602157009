"""Helpers shared by :mod:`calab.io` and the format loaders.

Everything that turns "some file or array a user handed us" into the
``(n_cells, n_timepoints)`` float64 contract lives here, so every entry point rejects the
same bad inputs (3-D arrays, complex or object data, corrupt ``.npy`` files, nonsense
sampling rates) with the same clear, actionable messages instead of a traceback from deep
inside NumPy, h5py or zarr.

No optional dependency is imported at module import time.
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calab import _validate

__all__ = [
    "LOADERS_EXTRA_HINT",
    "CalabKeyError",
    "as_traces_2d",
    "check_real_dtype",
    "jsonable",
    "make_metadata",
    "read_json_object",
    "read_npy",
    "require_module",
    "validate_fs",
]

LOADERS_EXTRA_HINT = "pip install calab[loaders]"



class CalabKeyError(KeyError):
    """A :class:`KeyError` whose message prints without the extra quotes.

    ``str(KeyError("text"))`` is ``"'text'"``; messages here are sentences, so they are
    shown as written.  ``except KeyError`` still catches it.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def require_module(module: str, what: str, extra: str = LOADERS_EXTRA_HINT) -> Any:
    """Import an optional dependency or raise an ImportError that names the fix.

    Parameters
    ----------
    module : str
        Module to import (``"h5py"``, ``"zarr"``...).
    what : str
        What it is needed for, e.g. ``"load CaImAn files"``.
    extra : str
        The install command to suggest.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        # `from None`: the chained "No module named ..." adds nothing to the fix.
        raise ImportError(f"{module} is required to {what}. Install it with: {extra}") from None


# --------------------------------------------------------------------------- arrays
def check_real_dtype(dtype: np.dtype, what: str) -> None:
    """Reject dtypes that cannot hold fluorescence traces (see :func:`calab._validate.check_real_dtype`).

    Raises
    ------
    TypeError
        For bool, complex, object, string, bytes, structured or datetime dtypes.
    """
    _validate.check_real_dtype(dtype, what)


def as_traces_2d(traces: Any, what: str = "traces", *, allow_empty: bool = False) -> np.ndarray:
    """Coerce input to the ``(n_cells, n_timepoints)`` C-contiguous ``<f8`` contract.

    Parameters
    ----------
    traces : array_like
        1-D ``(n_timepoints,)`` or 2-D ``(n_cells, n_timepoints)`` real numbers.
    what : str
        Name used in error messages.
    allow_empty : bool
        Accept arrays with zero elements.

    Returns
    -------
    numpy.ndarray
        float64 (little-endian), C-contiguous, shape ``(n_cells, n_timepoints)``; a 1-D
        input becomes one row.

    Raises
    ------
    TypeError
        Boolean, complex, object or string data (the dtype policy of
        :mod:`calab._validate`).
    ValueError
        0-D or more than 2-D input, or an empty array (unless ``allow_empty``).
    """
    array = _validate.check_real_array(traces, what, ndim=None)
    if array.ndim not in (1, 2):
        raise ValueError(
            f"{what} must be 1D or 2D, got {array.ndim}D array with shape {array.shape}. "
            "Pass a 1-D (n_timepoints,) trace or a 2-D (n_cells, n_timepoints) array; "
            "extract ROI traces from an imaging movie first."
        )
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{what} is empty (shape {array.shape}); there are no traces to use.")
    if array.ndim == 1:
        array = array.reshape(1, -1)
    # '<f8' explicitly: the CaTune browser parser rejects big-endian data.
    return np.ascontiguousarray(array, dtype="<f8")


def validate_fs(fs: Any, *, what: str = "fs", required: bool = True) -> int | float | None:
    """Check a sampling rate and return it as a plain Python number.

    Parameters
    ----------
    fs : number or None
        Sampling rate in Hz.  NumPy scalars are converted with ``.item()`` (so they can
        be written to JSON); ints stay ints, floats stay floats.
    what : str
        Name used in error messages.
    required : bool
        If False, None is returned unchanged.

    Raises
    ------
    ValueError
        If ``fs`` is None (when required), not finite or not positive.
    TypeError
        If ``fs`` is not a real number (strings and booleans included).
    """
    if fs is None:
        if not required:
            return None
        raise ValueError(
            f"{what} (the sampling rate in Hz) is required but was None. Pass the frame rate "
            "of the recording, e.g. fs=30.0 (Minian output and some files do not store it)."
        )
    if isinstance(fs, np.ndarray) and fs.shape == () and fs.dtype.kind in "iuf":
        fs = fs.item()  # a 0-d array stands for its value
    if isinstance(fs, (bool, np.bool_)) or not isinstance(fs, numbers.Real):
        raise TypeError(f"{what} must be a number in Hz, got {type(fs).__name__} {fs!r}.")
    if isinstance(fs, np.generic):
        fs = fs.item()
    if not math.isfinite(fs) or fs <= 0:
        raise ValueError(f"{what} must be a finite sampling rate > 0 Hz, got {fs!r}.")
    return fs


def make_metadata(source: str, traces: np.ndarray, fs: int | float | None, **extra: Any) -> dict:
    """The loaders' metadata dict: documented keys first, then format-specific extras."""
    meta = {
        "source": source,
        "sampling_rate_hz": None if fs is None else float(fs),
        "num_cells": int(traces.shape[0]),
        "num_timepoints": int(traces.shape[1]),
    }
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------- .npy files
def _npy_header(handle, path: Path) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """Parse a .npy header (versions 1 and 2) or return None for other versions."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
    except ValueError:
        raise ValueError(
            f"{path} is not a valid .npy file (it does not start with the NumPy magic bytes). "
            "Save traces with numpy.save or calab.save_for_tuning."
        ) from None
    try:
        if version == (1, 0):
            return fmt.read_array_header_1_0(handle)
        if version == (2, 0):
            return fmt.read_array_header_2_0(handle)
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{path} is a corrupt .npy file (unreadable header: {exc}).") from None
    return None


def check_npy_header(handle, path: Path) -> None:
    """Refuse a ``.npy`` file before NumPy reads it: not NumPy's magic bytes (NumPy would
    take the file for a pickle), an unreadable header, Python objects, or fewer data
    bytes than the header promises.

    Raises
    ------
    ValueError
        Not a ``.npy`` file, a corrupt header or a truncated file (the message says which).
    TypeError
        The array holds Python objects (a pickle).
    """
    header = _npy_header(handle, path)
    if header is None:  # a format version NumPy reads but whose header we do not parse
        return
    shape, _fortran, dtype = header
    if dtype.hasobject:
        raise TypeError(
            f"{path} stores Python objects (a pickled object array), not numbers. "
            "calab never unpickles data files; re-save the traces as a numeric "
            "array (np.save('traces.npy', np.asarray(traces, dtype=float)))."
        )
    expected = math.prod(shape) * dtype.itemsize
    available = path.stat().st_size - handle.tell()
    if available < expected:
        raise ValueError(
            f"{path} is truncated: its header promises a {dtype} array of shape "
            f"{shape} ({expected} bytes of data) but only {available} bytes follow. "
            "The file was probably not copied or saved completely; re-create it."
        )


def read_npy(path: str | os.PathLike[str], what: str = "traces") -> np.ndarray:
    """Read a ``.npy`` file safely, with clear errors for damaged files.

    Never unpickles (``allow_pickle=False``): a ``.npy`` holding Python objects is
    rejected instead of executing whatever the pickle says.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    what : str
        What the file should contain, for messages.

    Returns
    -------
    numpy.ndarray
        The stored array, dtype and shape unchanged.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a ``.npy`` file, is truncated, or its header is corrupt.
    TypeError
        If it holds Python objects (a pickle).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"File not found: {path}")
    try:
        with open(path, "rb") as handle:
            check_npy_header(handle, path)
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
    except (TypeError, FileNotFoundError):
        raise
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise  # already one of our messages
        raise ValueError(f"{path} could not be read as a .npy file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} could not be read as a .npy file: {exc}") from None


# --------------------------------------------------------------------------- JSON files
def read_json_object(path: str | os.PathLike[str], what: str) -> dict:
    """Read a JSON file whose top level must be an object.

    Raises
    ------
    ValueError
        If the file is not valid UTF-8 JSON or its top level is not an object.  (The
        reference lets ``json.JSONDecodeError`` escape; that is also a ValueError.)
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({exc}). Re-export or re-save it.") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not a text (UTF-8) JSON file.") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{what} {path} must contain a JSON object at the top level, got {type(data).__name__}."
        )
    return data


def jsonable(value: Any, key: str = "metadata") -> Any:
    """Convert NumPy scalars/arrays, tuples and paths to JSON-native values.

    See :func:`calab._validate.to_json_value`.

    Raises
    ------
    ValueError
        For NaN or infinite numbers (not valid JSON; the CaTune page rejects them).
    TypeError
        For values JSON cannot represent, naming the offending key.
    """
    return _validate.to_json_value(value, key)
