"""CaTune-compatible files: traces for tuning, and the parameters CaTune exports.

Two file kinds cross the Python/browser boundary:

* **Traces for tuning** (:func:`save_for_tuning` / :func:`load_tuning_data`): a ``.npy``
  file holding a C-contiguous little-endian float64 array of shape
  ``(n_cells, n_timepoints)`` plus a ``<stem>_metadata.json`` sidecar.  The bytes are
  identical to what the published ``calab`` 0.3.0 writes, so files move freely between
  the two packages and load in the CaTune web app by drag-and-drop.
* **CaTune export JSON** (:func:`load_export_params` / :func:`deconvolve_from_export`):
  the parameters a user settled on in CaTune (schema 1.0.0 - 1.2.0), applied in batch.

Every write is atomic (temporary file + rename, :mod:`calab._atomic`): a crash never
leaves a half-written ``.npy`` or sidecar behind.

Heavy modules (the deconvolution engine, filters) are imported inside the functions
that need them.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from calab._atomic import atomic_write_many, check_writable
from calab.loaders._common import (
    CalabKeyError,
    as_traces_2d,
    check_real_dtype,
    jsonable,
    read_json_object,
    read_npy,
    validate_fs,
)

if TYPE_CHECKING:  # pragma: no cover
    from calab.deconvolution import DeconvolutionResult

__all__ = [
    "EXPORT_SCHEMA_MAJOR",
    "TUNING_SCHEMA_VERSION",
    "deconvolve_from_export",
    "load_export_params",
    "load_tuning_data",
    "read_parameters",
    "save_for_tuning",
    "tuning_paths",
]

#: ``schema_version`` written into ``<stem>_metadata.json`` (the CaTune sidecar format).
TUNING_SCHEMA_VERSION = "1.0.0"
#: Major version of the CaTune export schema this module understands (1.0.0 - 1.2.x).
EXPORT_SCHEMA_MAJOR = 1

_METADATA_SUFFIX = "_metadata.json"
_REQUIRED_EXPORT_KEYS = ("tau_rise_s", "tau_decay_s", "lambda", "sampling_rate_hz")


# --------------------------------------------------------------------------- paths
def tuning_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return the ``(<stem>.npy, <stem>_metadata.json)`` pair for a path stem.

    The stem is used exactly as given (``"rec"`` -> ``rec.npy``), like the published
    calab.  As a convenience, a path naming one of the two files (``"rec.npy"`` or
    ``"rec_metadata.json"``) is reduced to its stem -- unless a file named
    ``"rec.npy.npy"`` exists, which is what the published calab writes for the stem
    ``"rec.npy"`` and which keeps priority so such files still load.

    Parameters
    ----------
    path : str or os.PathLike
        Stem, or the name of the ``.npy`` or sidecar file.

    Returns
    -------
    tuple of pathlib.Path
    """
    stem = os.fspath(path)
    if stem.endswith(".npy") and not os.path.exists(stem + ".npy"):
        stem = stem[: -len(".npy")]
    elif stem.endswith(_METADATA_SUFFIX) and not os.path.exists(stem + ".npy"):
        stem = stem[: -len(_METADATA_SUFFIX)]
    return Path(stem + ".npy"), Path(stem + _METADATA_SUFFIX)


# --------------------------------------------------------------------------- save / load
def save_for_tuning(
    traces: np.ndarray,
    fs: float,
    path: str | os.PathLike[str],
    metadata: dict | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Save calcium traces in CaTune-compatible format.

    Creates two files:

    * ``{path}.npy`` -- float64 array, shape ``(n_cells, n_timepoints)``, C-contiguous,
      little-endian (``'<f8'``, ``fortran_order: False``), which CaTune's browser
      ``.npy`` parser reads directly;
    * ``{path}_metadata.json`` -- JSON sidecar (2-space indent) with the sampling rate,
      schema version, dimensions and optional user metadata.

    Both files are written to temporary names first and renamed into place only when
    both are complete, so an interrupted save never leaves a truncated file.

    Parameters
    ----------
    traces : array_like
        Calcium traces, shape ``(n_timepoints,)`` for a single trace or
        ``(n_cells, n_timepoints)``; any real numeric dtype (stored as float64).
    fs : float
        Sampling rate in Hz (finite, > 0).  Stored as given: ``30`` is written as ``30``.
    path : str or os.PathLike
        Output path stem (without extension).  A trailing ``.npy`` is dropped, so
        ``"rec.npy"`` writes ``rec.npy`` and ``rec_metadata.json``.
    metadata : dict, optional
        Additional JSON-serialisable metadata for the sidecar.  Keys are merged into the
        output; the built-in keys (``schema_version``, ``sampling_rate_hz``,
        ``num_cells``, ``num_timepoints``, ``dtype``) take precedence.  NumPy scalars and
        arrays are converted to JSON numbers and lists.  Numbers must be finite: NaN and
        infinities are not valid JSON (use None for a missing value).
    overwrite : bool, keyword-only
        Replace existing files (default, as in the published calab).  With False, an
        existing ``.npy`` or sidecar raises :class:`FileExistsError` before anything is
        written.

    Raises
    ------
    ValueError
        If ``traces`` has more than 2 dimensions or is empty, ``fs`` is None, not finite
        or not positive, or ``metadata`` holds NaN or infinite numbers.
    TypeError
        If ``traces`` is boolean, complex, object or text data, ``fs`` is not a number
        (bool and str included), or ``metadata`` is not a dict of JSON-serialisable values.
    FileNotFoundError
        If the output directory does not exist.
    FileExistsError
        If ``overwrite=False`` and an output file exists.

    Examples
    --------
    >>> calab.save_for_tuning(traces, fs=30.0, path="my_recording")  # doctest: +SKIP
    # -> my_recording.npy + my_recording_metadata.json
    """
    # Validate everything before touching the disk: a bad fs or metadata value must not
    # leave a fresh .npy without its sidecar (the published calab does exactly that for
    # fs=np.float32(30), which json cannot serialise).
    array = as_traces_2d(traces)
    fs = validate_fs(fs)
    if metadata is None:
        sidecar: dict[str, Any] = {}
    elif isinstance(metadata, Mapping):
        sidecar = jsonable(dict(metadata), "metadata")
    else:
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}.")
    # Caller keys first, built-ins win (a conflicting key keeps its original position but
    # takes the built-in value) -- the published sidecar layout, byte for byte.
    sidecar.update(
        {
            "schema_version": TUNING_SCHEMA_VERSION,
            "sampling_rate_hz": fs,
            "num_cells": int(array.shape[0]),
            "num_timepoints": int(array.shape[1]),
            "dtype": "<f8",
        }
    )
    # No trailing newline, ASCII-escaped: as published.  allow_nan=False: NaN/Infinity are
    # not JSON (jsonable already refused them in the caller's metadata).
    text = json.dumps(sidecar, indent=2, allow_nan=False)

    npy_path, json_path = tuning_paths(path)
    for destination in (npy_path, json_path):
        check_writable(destination, overwrite=overwrite)
    atomic_write_many(
        [
            (npy_path, "wb", lambda handle: np.lib.format.write_array(handle, array, allow_pickle=False)),
            (json_path, "wb", lambda handle: handle.write(text.encode("utf-8"))),
        ]
    )


def load_tuning_data(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict]:
    """Load calcium traces and metadata saved by :func:`save_for_tuning`.

    Parameters
    ----------
    path : str or os.PathLike
        Path stem (without extension), matching the ``path`` argument used in
        :func:`save_for_tuning`.  ``"rec.npy"`` and ``"rec_metadata.json"`` also work.

    Returns
    -------
    traces : numpy.ndarray
        The stored array, unchanged (float64 ``(n_cells, n_timepoints)`` for files
        written by :func:`save_for_tuning`).
    metadata : dict
        The parsed JSON sidecar.

    Raises
    ------
    FileNotFoundError
        If either ``{path}.npy`` or ``{path}_metadata.json`` is missing.
    ValueError
        If the ``.npy`` file is corrupt or truncated, holds a 0-D or >2-D array, the
        sidecar is not a JSON object, or the sidecar contradicts the array (its
        ``num_cells``/``num_timepoints`` differ from the array's shape, or its
        ``sampling_rate_hz`` is not a positive number).
    TypeError
        If the ``.npy`` file holds complex, object or other non-numeric data.
    """
    npy_path, json_path = tuning_paths(path)
    if not npy_path.is_file():
        raise FileNotFoundError(
            f"Trace data file not found: {npy_path}. Expected .npy file at this location."
        )
    if not json_path.is_file():
        raise FileNotFoundError(
            f"Metadata file not found: {json_path}. Expected _metadata.json sidecar at this "
            "location (save_for_tuning writes it next to the .npy; copy both files together)."
        )
    traces = read_npy(npy_path)
    check_real_dtype(traces.dtype, f"Trace data file {npy_path}")
    if traces.ndim not in (1, 2):
        raise ValueError(
            f"Trace data file {npy_path} holds a {traces.ndim}D array with shape {traces.shape}; "
            "expected 2-D (n_cells, n_timepoints) or 1-D (n_timepoints,)."
        )
    metadata = read_json_object(json_path, "Metadata file")
    _check_sidecar(metadata, traces, json_path)
    return traces, metadata


def _check_sidecar(metadata: dict, traces: np.ndarray, json_path: Path) -> None:
    """Catch a sidecar that does not belong to its ``.npy`` (e.g. one file replaced)."""
    shape2d = traces.shape if traces.ndim == 2 else (1, traces.shape[0])
    for key, actual in (("num_cells", shape2d[0]), ("num_timepoints", shape2d[1])):
        if key not in metadata:
            continue
        stored = metadata[key]
        if isinstance(stored, bool) or not isinstance(stored, int) or stored != actual:
            raise ValueError(
                f"Metadata file {json_path} says {key}={stored!r} but the traces have "
                f"shape {traces.shape}: the .npy and its sidecar do not match. Re-save "
                "them together with calab.save_for_tuning."
            )
    fs = metadata.get("sampling_rate_hz")
    if fs is not None and (
        isinstance(fs, bool) or not isinstance(fs, (int, float)) or not math.isfinite(fs) or fs <= 0
    ):
        raise ValueError(
            f"Metadata file {json_path} has an invalid sampling_rate_hz {fs!r}; it must be a "
            "positive number of Hz (or null when unknown)."
        )


# --------------------------------------------------------------------------- CaTune export
def _export_number(parameters: dict, key: str, path: Path, *, positive: bool) -> Any:
    value = parameters[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(
            f"CaTune export {path}: parameters.{key} must be a finite number, got {value!r}."
        )
    if positive and value <= 0:
        raise ValueError(f"CaTune export {path}: parameters.{key} must be > 0, got {value!r}.")
    if not positive and value < 0:
        raise ValueError(f"CaTune export {path}: parameters.{key} must be >= 0, got {value!r}.")
    return value


def _json_file(path: Path, as_path: str, missing: str, what: str) -> dict:
    """The JSON object in the file ``path``; a directory or a missing file is named plainly."""
    if not path.is_file():
        if path.is_dir():
            raise ValueError(f"{as_path} is a directory, not a file: {path}")
        raise FileNotFoundError(f"{missing}: {path}")
    return read_json_object(path, what)


def load_export_params(path: str | os.PathLike[str]) -> dict:
    """Load deconvolution parameters from a CaTune export JSON.

    Reads the export schema 1.x (1.0.0, 1.1.0 and the current 1.2.0, written by
    CaTune's *Export* button and by :func:`calab.tune`).  ``t_peak_s``, ``fwhm_s``,
    ``ar2_coefficients`` and ``formulation`` are informational and ignored.

    Parameters
    ----------
    path : str or os.PathLike
        Path to the CaTune export JSON file.

    Returns
    -------
    dict
        ``{"tau_rise": float, "tau_decay": float, "lambda_": float, "fs": float,
        "filter_enabled": bool}`` -- values exactly as stored in the file
        (``filter_enabled`` is False for schema 1.0.0 files, which lack it).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    KeyError
        If ``parameters`` or one of ``tau_rise_s``, ``tau_decay_s``, ``lambda``,
        ``sampling_rate_hz`` is missing.
    ValueError
        If the file is not valid JSON, is not an export (wrong structure or types), has
        non-finite or out-of-range values, or declares an unsupported schema major
        version.
    """
    path = Path(path)
    data = _json_file(path, "Export JSON path", "Export JSON not found", "CaTune export")

    version = data.get("schema_version")
    if version is not None:
        major = str(version).split(".", 1)[0]
        if major != str(EXPORT_SCHEMA_MAJOR):
            raise ValueError(
                f"CaTune export {path} has schema_version {version!r}; this calab reads schema "
                f"{EXPORT_SCHEMA_MAJOR}.x. Upgrade calab (pip install -U calab) to read newer exports."
            )
    if "parameters" not in data:
        raise CalabKeyError(
            f"'parameters' not found in {path}: not a CaTune export JSON (top-level keys: "
            f"{list(data)}). Export parameters from CaTune with the Export button."
        )
    parameters = data["parameters"]
    if not isinstance(parameters, dict):
        raise ValueError(
            f"CaTune export {path}: 'parameters' must be a JSON object, got {type(parameters).__name__}."
        )
    missing = [key for key in _REQUIRED_EXPORT_KEYS if key not in parameters]
    if missing:
        raise CalabKeyError(
            f"CaTune export {path} lacks parameter(s) {missing}; present: {list(parameters)}. "
            "Re-export the parameters from CaTune."
        )
    tau_rise = _export_number(parameters, "tau_rise_s", path, positive=True)
    tau_decay = _export_number(parameters, "tau_decay_s", path, positive=True)
    lam = _export_number(parameters, "lambda", path, positive=False)
    fs = _export_number(parameters, "sampling_rate_hz", path, positive=True)
    filter_enabled = parameters.get("filter_enabled", False)
    if not isinstance(filter_enabled, bool):
        raise ValueError(
            f"CaTune export {path}: parameters.filter_enabled must be true or false, got {filter_enabled!r}."
        )
    return {
        "tau_rise": tau_rise,
        "tau_decay": tau_decay,
        "lambda_": lam,
        "fs": fs,
        "filter_enabled": filter_enabled,
    }


def _parameter_number(value: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}.")
    if (positive and value <= 0) or value < 0:
        raise ValueError(f"{where} must be {'> 0' if positive else '>= 0'}, got {value!r}.")
    return float(value)


def read_parameters(path: str | os.PathLike[str]) -> dict:
    """Deconvolution parameters from any of the three files calab users have.

    * a CaTune export (the page's *Export* button; read by :func:`load_export_params`);
    * the dict :func:`calab.tune` returns, saved as JSON (``tau_rise``, ``tau_decay``,
      ``lambda_``, optionally ``fs`` and ``filter_enabled``; what ``calab tune`` prints);
    * ``STEM_results.json`` written by ``calab cadecon -o STEM``: the learned kernel, and
      the λ rule ``run_cadecon`` used for its continuous activity (λ = that many times each
      cell's noise SD).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``tau_rise`` and ``tau_decay`` (s), ``lambda_`` (float, or None when the file gives
        a rule instead), ``lambda_per_noise`` (float or None), ``fs`` (Hz, or None when the
        file does not say), ``filter_enabled`` (bool), ``conv_mode`` (the operator a CaDecon
        result was solved with; absent otherwise) and ``kind`` (``"catune-export"``,
        ``"tune"`` or ``"cadecon-results"``).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Not JSON, none of the three layouts (the message lists what each one holds), or a
        value that is not a valid number.
    """
    path = Path(path)
    data = _json_file(path, "Parameters path", "Parameters file not found", "Parameters file")
    if "parameters" in data:
        params = load_export_params(path)
        return {**params, "lambda_per_noise": None, "kind": "catune-export"}
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and "tau_rise" in metadata and "tau_decay" in metadata:
        if metadata["tau_rise"] is None or metadata["tau_decay"] is None:
            raise ValueError(f"{path} is a CaDecon result without a learned kernel (the run stopped "
                             "before one was fitted); run calab cadecon again.")
        fs = data.get("fs")
        per_noise = metadata.get("continuous_lambda_per_noise", 1.0)
        return {
            "tau_rise": _parameter_number(metadata["tau_rise"], f"{path}: metadata.tau_rise"),
            "tau_decay": _parameter_number(metadata["tau_decay"], f"{path}: metadata.tau_decay"),
            "lambda_": None,
            "lambda_per_noise": _parameter_number(per_noise, f"{path}: metadata.continuous_lambda_per_noise",
                                                  positive=False),
            "fs": None if fs is None else _parameter_number(fs, f"{path}: fs"),
            "filter_enabled": False,  # run_cadecon's continuous solve reads the raw traces
            "conv_mode": metadata.get("continuous_conv_mode", "fft"),
            "kind": "cadecon-results",
        }
    if "tau_rise" in data and "tau_decay" in data and ("lambda_" in data or "lambda" in data):
        fs = data.get("fs")
        enabled = data.get("filter_enabled", False)
        if not isinstance(enabled, bool):
            raise ValueError(f"{path}: filter_enabled must be true or false, got {enabled!r}.")
        return {
            "tau_rise": _parameter_number(data["tau_rise"], f"{path}: tau_rise"),
            "tau_decay": _parameter_number(data["tau_decay"], f"{path}: tau_decay"),
            "lambda_": _parameter_number(data.get("lambda_", data.get("lambda")), f"{path}: lambda_", positive=False),
            "lambda_per_noise": None,
            "fs": None if fs is None else _parameter_number(fs, f"{path}: fs"),
            "filter_enabled": enabled,
            "kind": "tune",
        }
    raise ValueError(
        f"{path} holds no deconvolution parameters (top-level keys: {list(data)}). calab reads a CaTune "
        "export ({'parameters': {'tau_rise_s', 'tau_decay_s', 'lambda', 'sampling_rate_hz'}}), the dict "
        "calab.tune() returns ({'tau_rise', 'tau_decay', 'lambda_', 'fs'}) or STEM_results.json from "
        "'calab cadecon -o STEM' ({'metadata': {'tau_rise', 'tau_decay'}, 'fs'})."
    )


def deconvolve_from_export(
    traces: np.ndarray,
    params_path: str | os.PathLike[str],
    return_full: bool = False,
    *,
    backend: str | None = None,
    progress: bool | Callable[[int], object] | None = None,
) -> np.ndarray | DeconvolutionResult:
    """Run deconvolution using parameters from a CaTune export JSON.

    Loads parameters via :func:`load_export_params`, band-passes each trace when the
    export has ``filter_enabled`` (as CaTune did while tuning), and runs FISTA
    deconvolution with the library defaults (FFT convolution, 2000 iterations,
    non-negative constraint).

    Parameters
    ----------
    traces : array_like
        Calcium traces, shape ``(n_timepoints,)`` or ``(n_cells, n_timepoints)``.
    params_path : str or os.PathLike
        Path to the CaTune export JSON file.
    return_full : bool, optional
        If True, return a :class:`~calab.DeconvolutionResult`; by default return just
        the activity array.
    backend : str, optional, keyword-only
        Compute backend (``"numpy"``, ``"jax"``, ``"cupy"`` or ``"auto"``); None follows
        the usual resolution order (see :func:`calab.use_backend`).
    progress : bool or callable, optional, keyword-only
        As in :func:`calab.run_deconvolution` (the command line's ``calab deconvolve``
        passes its bar here).

    Returns
    -------
    numpy.ndarray or DeconvolutionResult
        Deconvolved activity with the **same shape as the input** (or the full result).
        With filtering on, ``baseline`` and ``reconvolution`` refer to the filtered trace.

    Raises
    ------
    FileNotFoundError, KeyError, ValueError
        As :func:`load_export_params`.
    ValueError, TypeError
        For traces that are not 1-D/2-D real numbers (see :func:`calab.run_deconvolution`).
    """
    params = load_export_params(params_path)
    tau_rise, tau_decay, fs = params["tau_rise"], params["tau_decay"], params["fs"]
    if params["filter_enabled"]:
        from calab._validate import check_real_array
        from calab.filters import bandpass_filter

        # One batched filter call (row by row, as the published calab does, but in one
        # FFT): it keeps the input's array library and device, so CuPy/JAX input stays
        # on its backend.  The published calab returns a (1, n) input as (n,) when
        # filtering is on (and keeps (1, n) when it is off); we keep the input's shape.
        traces = check_real_array(traces, "traces", ndim=(1, 2))
        traces = bandpass_filter(traces, tau_rise, tau_decay, fs, backend=backend)

    from calab.deconvolution import run_deconvolution, run_deconvolution_full

    solve = run_deconvolution_full if return_full else run_deconvolution
    return solve(traces, fs, tau_rise, tau_decay, params["lambda_"], backend=backend, progress=progress)
