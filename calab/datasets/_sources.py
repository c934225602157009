"""Trace sources read in blocks of cells, without loading the whole recording.

A :class:`TraceSource` presents a recording as a ``(n_cells, n_timepoints)`` array and
reads any block of consecutive cells on request.  Each format keeps the file open lazily
and re-opens it after pickling, so a source can be shipped to Dask workers, which read
their own chunks straight from the file.

==============  =========================================================  ===============
kind            input                                                      sliced by
==============  =========================================================  ===============
``zarr``        a Zarr array, a group holding one (``key``, default ``C``)  zarr
                or Minian's ``C.zarr`` layout (time-major arrays are
                transposed, as :func:`calab.load_minian` does)
``hdf5``        an HDF5 dataset (CaImAn ``estimates/C`` by default)        h5py
``npy``         a ``.npy`` file, memory-mapped                              numpy.memmap
``suite2p``     a suite2p plane folder: ``F - c·Fneu`` of the ``iscell``   numpy.memmap
                rows, as :func:`calab.load_suite2p` computes it
``nwb``         an NWB 2 ``RoiResponseSeries`` (time-major, transposed)    h5py
``array``       any array-like with ``shape``/``dtype``/slicing (NumPy,    its own slicing
                memmap, zarr/h5py arrays, a dask array)
==============  =========================================================  ===============

Blocks come back in the source's own real dtype (float64 for suite2p and scaled NWB
data, which are computed in float64 as the loaders do), so the streamed numbers are the
ones the in-memory loaders would have produced.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from calab.loaders._common import check_real_dtype, require_module

__all__ = ["SOURCE_KINDS", "DatasetDamageWarning", "TraceSource", "check_finite", "open_source"]

#: Accepted ``fmt=`` values (with the loaders' format names as aliases).
SOURCE_KINDS = ("zarr", "hdf5", "npy", "suite2p", "nwb", "array")
_ALIASES = {"minian": "zarr", "caiman": "hdf5", "h5": "hdf5", "hdf": "hdf5"}


class DatasetDamageWarning(UserWarning):
    """Part of a dataset is missing or damaged: chunks of a Zarr input that are not stored,
    or a finished chunk of an output found damaged on resume (it is solved again)."""


class TraceSource:
    """A ``(n_cells, n_timepoints)`` recording read one block of cells at a time.

    Attributes
    ----------
    kind : str
        One of :data:`SOURCE_KINDS`.
    shape : tuple of int
        ``(n_cells, n_timepoints)``.
    dtype : numpy.dtype
        dtype of the blocks :meth:`read` returns.
    fs : float or None
        Sampling rate stored in the file (Hz), if any.
    """

    kind = "array"

    def __init__(self, where: str) -> None:
        self.where = where
        self.shape: tuple[int, int] = (0, 0)
        self.dtype = np.dtype(np.float64)
        self.fs: float | None = None

    # ------------------------------------------------------------------ reading
    def _read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, start: int, stop: int) -> np.ndarray:
        """Cells ``start:stop`` as a C-contiguous ``(stop - start, n_timepoints)`` array."""
        try:
            block = self._read(start, stop)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(
                f"could not read cells {start}-{stop - 1} of {self.where}: {type(exc).__name__}: {exc}. "
                "The file may be incomplete or corrupt."
            ) from exc
        return np.ascontiguousarray(block)

    # ------------------------------------------------------------------ identity
    def describe(self) -> dict:
        """JSON-able identity recorded in an output's manifest."""
        return {"kind": self.kind, "where": self.where, "shape": list(self.shape), "dtype": self.dtype.str}

    def fingerprint(self) -> str:
        """SHA-256 of the first and last cells' samples: tells a different recording of the
        same shape apart from the one an output was started with (a moved or copied file
        keeps its fingerprint)."""
        digest = hashlib.sha256()
        n_cells = self.shape[0]
        for index in sorted({0, n_cells - 1}):
            digest.update(np.ascontiguousarray(self.read(index, index + 1), dtype="<f8").tobytes())
        return digest.hexdigest()

    def close(self) -> None:
        """Release open file handles (they are re-opened on the next read)."""

    def _finish(self, shape: tuple[int, ...], dtype: Any) -> None:
        """Check rank, dtype and size of the cells x time view and record them."""
        dtype = np.dtype(dtype)
        check_real_dtype(dtype, self.where)
        if len(shape) == 1:
            shape = (1, shape[0])
        if len(shape) != 2:
            raise ValueError(
                f"{self.where} must be 2-D (n_cells, n_timepoints) or 1-D (one trace), got "
                f"{len(shape)}-D with shape {tuple(shape)}. Extract ROI traces from an imaging "
                "movie first, or pass the traces array (key=)."
            )
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"{self.where} is empty (shape {tuple(shape)}); there are no traces to deconvolve.")
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in ("_handle", "_array", "_f", "_fneu"):
            if name in state and self._reopenable():
                state[name] = None
        return state

    def _reopenable(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<calab {self.kind} source {self.where} shape={self.shape}>"


class ArraySource(TraceSource):
    """An array already in hand: NumPy, memmap, zarr/h5py array or dask array."""

    kind = "array"

    def __init__(self, array: Any) -> None:
        super().__init__(f"the {type(array).__module__.split('.')[0]}.{type(array).__name__} source")
        if not (hasattr(array, "shape") and hasattr(array, "dtype")):
            array = np.asarray(array)
        self._array = array
        self._one_dimensional = len(array.shape) == 1
        self._finish(tuple(array.shape), array.dtype)

    def _reopenable(self) -> bool:
        return False

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._one_dimensional:
            return np.asarray(self._array[...], dtype=self.dtype).reshape(1, -1)
        return np.asarray(self._array[start:stop], dtype=self.dtype)


class NpySource(TraceSource):
    """A ``.npy`` file, memory-mapped read-only."""

    kind = "npy"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        self._array = None
        array = self._open()
        self._finish(array.shape, array.dtype)

    def _open(self) -> np.ndarray:
        if self._array is None:
            self._array = open_npy(self.path)
        return self._array

    def _read(self, start: int, stop: int) -> np.ndarray:
        array = self._open()
        if array.ndim == 1:
            return np.asarray(array, dtype=self.dtype).reshape(1, -1)
        return np.asarray(array[start:stop], dtype=self.dtype)

    def close(self) -> None:
        self._array = None


def open_npy(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` file with the loaders' clear errors for damaged files.

    The header is checked first (:func:`calab.loaders._common.check_npy_header`): a file
    that is not a ``.npy`` at all is reported as such, not as "a pickled object array"
    (NumPy takes any file without its magic bytes for a pickle).
    """
    from calab.loaders._common import check_npy_header

    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a .npy file; pass the .npy file itself (or fmt= its format).")
    if not path.is_file():
        raise FileNotFoundError(f"File not found: {path}")
    try:
        with open(path, "rb") as handle:
            check_npy_header(handle, path)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except TypeError:
        raise
    except ValueError as exc:
        text = str(exc)
        if text.startswith(str(path)):
            raise  # already one of our messages
        raise ValueError(
            f"{path} could not be memory-mapped as a .npy file ({text}); it may be truncated or "
            "not a .npy file. Re-create it with numpy.save."
        ) from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} could not be read as a .npy file: {exc}") from None
    if not isinstance(array, np.ndarray):  # pragma: no cover - np.load of .npz
        raise ValueError(f"{path} is not a single-array .npy file.")
    return array


class ZarrSource(TraceSource):
    """A Zarr array (v2 or v3), located like :func:`calab.load_minian` locates ``C``."""

    kind = "zarr"

    def __init__(self, path: Path, key: str | None) -> None:
        super().__init__(str(path))
        self.path, self.key = path, key
        self._array = None
        array = self._open()
        self._transposed = _time_major(array)
        shape = tuple(array.shape)
        self._finish(shape[::-1] if self._transposed else shape, array.dtype)
        self._one_dimensional = len(shape) == 1
        _warn_missing_chunks(array, self.where)

    def _open(self) -> Any:
        if self._array is None:
            from calab.loaders.minian import _find_array

            zarr = require_module("zarr", "stream Zarr arrays")
            self._array = _find_array(zarr, self.path, self.key or "C")
        return self._array

    def describe(self) -> dict:
        return {**super().describe(), "key": self.key, "time_major": self._transposed}

    def _read(self, start: int, stop: int) -> np.ndarray:
        array = self._open()
        if self._one_dimensional:
            return np.asarray(array[...], dtype=self.dtype).reshape(1, -1)
        if self._transposed:
            return np.asarray(array[:, start:stop], dtype=self.dtype).T
        return np.asarray(array[start:stop], dtype=self.dtype)

    def close(self) -> None:
        self._array = None


def _warn_missing_chunks(array: Any, where: str) -> None:
    """Warn when chunks of a Zarr input are not stored: they read as the fill value.

    Not an error: zarr leaves out chunks that equal the fill value (zarr 3 by default), so
    a block of all-zero traces is legitimately absent.  But a deleted chunk file reads the
    same way, and a fill value of 0 would then pass for real samples (NaN is caught as a
    non-finite sample when the chunk is read).
    """
    import warnings

    try:
        total, stored = int(array.nchunks), int(array.nchunks_initialized)
    except Exception:  # noqa: BLE001 - a store that cannot list its keys: nothing to report
        return
    if stored < total:
        fill = array.fill_value
        fill = fill.item() if hasattr(fill, "item") else fill
        warnings.warn(
            f"{where}: {total - stored} of its {total} Zarr chunks are not stored, so those samples read "
            f"as the fill value {fill!r}. zarr leaves out chunks equal to the fill value, but a "
            "deleted or lost chunk file reads the same way; check the store if you did not expect this.",
            DatasetDamageWarning, stacklevel=4,
        )


def _time_major(array: Any) -> bool:
    from calab.loaders.minian import _TIME_DIMS, _dimension_names

    dims = _dimension_names(array)
    return bool(len(array.shape) == 2 and dims and dims[0] in _TIME_DIMS and dims[1] not in _TIME_DIMS)


class Hdf5Source(TraceSource):
    """An HDF5 dataset (default CaImAn's ``estimates/C``), sliced by h5py."""

    kind = "hdf5"

    def __init__(self, path: Path, key: str | None) -> None:
        super().__init__(str(path))
        self.path, self.key = path, key or "estimates/C"
        self._handle = None
        dataset = self._dataset()
        self._one_dimensional = dataset.ndim == 1
        self._finish(dataset.shape, dataset.dtype)
        from calab.loaders.caiman import read_hdf5_rate

        self.fs = read_hdf5_rate(self._handle, "params/data/fr")

    def _dataset(self) -> Any:
        from calab.loaders.caiman import hdf5_dataset, open_hdf5

        if self._handle is None:
            self._handle = open_hdf5(self.path, "HDF5")
        return hdf5_dataset(self._handle, self.key, self.path, "HDF5")

    def describe(self) -> dict:
        return {**super().describe(), "key": self.key}

    def _read(self, start: int, stop: int) -> np.ndarray:
        dataset = self._dataset()
        if self._one_dimensional:
            return np.asarray(dataset[()], dtype=self.dtype).reshape(1, -1)
        return np.asarray(dataset[start:stop], dtype=self.dtype)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class NwbSource(TraceSource):
    """An NWB 2 ``RoiResponseSeries``: ``data`` is ``(time, rois)``, read by ROI columns."""

    kind = "nwb"

    def __init__(self, path: Path, series: str | None) -> None:
        super().__init__(str(path))
        self.path, self.requested = path, series
        self._handle = None
        from calab.loaders.nwb import _find_series, _rate_from_timestamps, _select

        handle = self._open()
        if "nwb_version" not in handle.attrs:
            raise ValueError(f"{path} is an HDF5 file but not an NWB file (no nwb_version attribute).")
        self.series = _select(_find_series(handle), series, str(path))
        group = handle[self.series]
        if "data" not in group:
            raise ValueError(f"{path}: series '{self.series}' has no 'data' dataset.")
        dataset = group["data"]
        self.where = f"{path}:{self.series}/data"
        conversion, offset = dataset.attrs.get("conversion"), dataset.attrs.get("offset")
        self._scaling = (
            1.0 if conversion is None else float(conversion),
            0.0 if offset is None else float(offset),
        )
        shape = tuple(dataset.shape)
        self._one_dimensional = len(shape) == 1
        dtype = dataset.dtype if self._scaling == (1.0, 0.0) else np.float64
        check_real_dtype(dataset.dtype, self.where)
        self._finish(shape[::-1], dtype)
        if "starting_time" in group:
            rate = group["starting_time"].attrs.get("rate")
            self.fs = float(rate) if rate is not None and np.isfinite(rate) and rate > 0 else None
        elif "timestamps" in group:
            self.fs = _rate_from_timestamps(group["timestamps"][()], self.where)

    def _open(self) -> Any:
        if self._handle is None:
            h5py = require_module("h5py", "stream NWB files")
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise ValueError(f"{self.path} is not a readable NWB (HDF5) file ({exc}).") from None
        return self._handle

    def describe(self) -> dict:
        return {**super().describe(), "series": self.series}

    def fingerprint(self) -> str:
        # NWB stores time first: the first frames of every ROI are one contiguous read,
        # whereas one ROI's column would touch every chunk of the file.
        digest = hashlib.sha256()
        data = self._open()[self.series]["data"]
        frames = min(self.shape[1], 256)
        head = data[:frames] if not self._one_dimensional else data[:frames][:, None]
        digest.update(np.ascontiguousarray(head, dtype="<f8").tobytes())
        return digest.hexdigest()

    def _read(self, start: int, stop: int) -> np.ndarray:
        from calab.loaders.nwb import _scale

        data = self._open()[self.series]["data"]
        block = data[()].reshape(-1, 1) if self._one_dimensional else data[:, start:stop]
        return np.asarray(_scale(block, *self._scaling), dtype=self.dtype).T

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Suite2pSource(TraceSource):
    """A suite2p plane: ``F - c·Fneu`` (float64) of the rows ``iscell`` keeps."""

    kind = "suite2p"

    def __init__(
        self,
        path: Path,
        *,
        subtract_neuropil: bool = True,
        neuropil_coefficient: float | None = None,
        cells_only: bool = True,
        cell_probability: float | None = None,
    ) -> None:
        from calab.loaders.suite2p import (
            DEFAULT_NEUCOEFF,
            _cell_mask,
            _positive_number,
            _read_ops,
            resolve_plane_dir,
        )

        plane = resolve_plane_dir(path)
        super().__init__(str(plane))
        self.plane = plane
        self._f = self._fneu = None
        f_values = self._open_f()
        if f_values.ndim != 2:
            raise ValueError(f"{plane / 'F.npy'} must be 2-D (n_rois, n_frames), got shape {f_values.shape}.")
        check_real_dtype(f_values.dtype, str(plane / "F.npy"))
        ops = _read_ops(plane)
        self.coefficient: float | None = None
        if subtract_neuropil:
            neuropil = self._open_fneu()
            if neuropil.shape != f_values.shape:
                raise ValueError(
                    f"{plane / 'Fneu.npy'} has shape {neuropil.shape} but F.npy has {f_values.shape}; "
                    "the files come from different runs."
                )
            self.coefficient = (
                _positive_number(ops.get("neucoeff")) or DEFAULT_NEUCOEFF
                if neuropil_coefficient is None
                else float(neuropil_coefficient)
            )
        keep = np.arange(f_values.shape[0])
        if cells_only:
            mask = _cell_mask(plane, f_values.shape[0], cell_probability)
            if mask is not None:
                if not mask.any():
                    raise ValueError(f"No ROI in {plane} is classified as a cell (iscell.npy); pass cells_only=False.")
                keep = np.flatnonzero(mask)
        self.roi_indices = keep
        self._finish((keep.size, f_values.shape[1]), np.float64)
        self.fs = _positive_number(ops.get("fs"))

    def _open_f(self) -> np.ndarray:
        if self._f is None:
            self._f = open_npy(self.plane / "F.npy")
        return self._f

    def _open_fneu(self) -> np.ndarray:
        if self._fneu is None:
            path = self.plane / "Fneu.npy"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found, so neuropil cannot be subtracted. Pass subtract_neuropil=False to use raw F."
                )
            self._fneu = open_npy(path)
        return self._fneu

    def describe(self) -> dict:
        return {**super().describe(), "neuropil_coefficient": self.coefficient, "n_rois_kept": int(self.roi_indices.size)}

    def _read(self, start: int, stop: int) -> np.ndarray:
        rows = self.roi_indices[start:stop]
        contiguous = rows.size and rows[-1] - rows[0] == rows.size - 1
        take = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows
        values = np.asarray(self._open_f()[take], dtype=np.float64)
        if self.coefficient is not None:
            values = values - self.coefficient * np.asarray(self._open_fneu()[take], dtype=np.float64)
        return values

    def close(self) -> None:
        self._f = self._fneu = None


#: what :func:`calab.loaders.detect_format` names a path, as a source kind here (a Zarr
#: store is any Zarr array, not only Minian's; an HDF5 file any dataset, not only CaImAn's)
_KIND_OF_FORMAT = {"suite2p": "suite2p", "minian": "zarr", "nwb": "nwb", "caiman": "hdf5"}


def _detect_kind(path: Path) -> str:
    from calab.loaders.detect import detect_format

    if path.is_file() and path.suffix.lower() == ".npy" and path.name != "F.npy":
        return "npy"
    try:
        return _KIND_OF_FORMAT[detect_format(path)]
    except ValueError:
        raise ValueError(
            f"Cannot tell what kind of recording {path} is. Pass fmt= one of {', '.join(SOURCE_KINDS)} "
            "(calab deconvolve: --format)."
        ) from None


def open_source(
    source: Any,
    *,
    key: str | None = None,
    fmt: str | None = None,
    **options: Any,
) -> TraceSource:
    """Open a recording for block-wise reading.

    Parameters
    ----------
    source : str, os.PathLike, TraceSource or array-like
        A Zarr store, HDF5/NWB file, ``.npy`` file or suite2p folder; or an array with
        ``shape``, ``dtype`` and slicing (NumPy, memmap, zarr/h5py array, dask array).
    key : str, optional
        Zarr array name (default ``"C"``), HDF5 dataset path (default ``"estimates/C"``)
        or NWB series name.
    fmt : str, optional
        One of :data:`SOURCE_KINDS` (``"minian"`` and ``"caiman"`` are accepted
        aliases); detected from the path when None.
    **options
        suite2p options of :func:`calab.load_suite2p` (``subtract_neuropil``,
        ``neuropil_coefficient``, ``cells_only``, ``cell_probability``).

    Returns
    -------
    TraceSource

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    KeyError
        ``key`` is not in the file (the message lists what is).
    ValueError
        Unknown format, not 1-D/2-D, empty, or an unreadable file.
    TypeError
        Complex or non-numeric data.
    """
    if isinstance(source, TraceSource):
        return source
    if fmt is not None:
        fmt = _ALIASES.get(fmt.lower(), fmt.lower())
        if fmt not in SOURCE_KINDS:
            raise ValueError(f"Unknown source format {fmt!r}; choose one of {', '.join(SOURCE_KINDS)}.")
    if not isinstance(source, (str, os.PathLike)):
        if fmt not in (None, "array"):
            raise ValueError(f"fmt={fmt!r} needs a path; got a {type(source).__name__}.")
        return ArraySource(source)
    path = Path(source)
    kind = fmt or _detect_kind(path)
    if not path.exists():
        raise FileNotFoundError(f"Input not found: {path}")
    if options and kind != "suite2p":
        raise TypeError(f"options {sorted(options)} apply to suite2p folders only, not to a {kind} source.")
    if kind == "zarr":
        if not path.is_dir():
            raise ValueError(
                f"{path} is a file, not a Zarr store (a Zarr store is a directory). Pass fmt= the file's "
                f"format ({', '.join(k for k in SOURCE_KINDS if k not in ('zarr', 'array'))}) or leave fmt "
                "out to detect it."
            )
        return ZarrSource(path, key)
    if kind == "hdf5":
        return Hdf5Source(path, key)
    if kind == "npy":
        return NpySource(path)
    if kind == "nwb":
        return NwbSource(path, key)
    if kind == "suite2p":
        if key:
            raise ValueError("suite2p folders have no trace key; drop key=.")
        return Suite2pSource(path, **options)
    raise ValueError(f"fmt='array' needs an array, got the path {path}.")


def check_finite(block: np.ndarray, start: int, where: str) -> None:
    """Raise a ValueError naming the first NaN/inf sample's cell and frame."""
    finite = np.isfinite(block)
    if finite.all():
        return
    row, frame = (int(v[0]) for v in np.nonzero(~finite))
    value = block[row, frame]
    raise ValueError(
        f"{where}: cell {start + row}, frame {frame} is {value} (not a finite number). Replace or drop "
        "NaN/inf samples (for example by interpolation) before deconvolving; nothing was written."
    )
