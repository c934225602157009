"""Guess a pipeline output's format and dispatch to its loader (used by ``calab convert``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMATS", "detect_format", "load_any"]

#: Format names accepted by :func:`load_any` and ``calab convert --format``.
FORMATS: tuple[str, ...] = ("caiman", "minian", "suite2p", "nwb")

_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json", ".zmetadata")


def _is_nwb_hdf5(path: Path) -> bool:
    try:
        import h5py
    except ImportError:
        return False
    try:
        with h5py.File(path, "r") as handle:
            return "nwb_version" in handle.attrs
    except OSError:
        return False


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the loader for ``path``: one of :data:`FORMATS`.

    Rules: ``.nwb`` files, and HDF5 files with an ``nwb_version`` attribute, are NWB;
    other ``.hdf5``/``.h5`` files are CaImAn; a folder holding ``F.npy`` (or one
    ``plane*/F.npy``) is suite2p; a Zarr store, or a folder of ``*.zarr`` datasets, is
    Minian.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the format cannot be recognised (the message says how to choose one).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input not found: {path}")
    if path.is_dir():
        if (path / "F.npy").is_file() or any(path.glob("plane*/F.npy")):
            return "suite2p"
        if path.suffix == ".zarr" or any((path / marker).exists() for marker in _ZARR_MARKERS):
            return "minian"
        if any(child.suffix == ".zarr" and child.is_dir() for child in path.iterdir()):
            return "minian"
    else:
        suffix = path.suffix.lower()
        if suffix == ".nwb":
            return "nwb"
        if suffix in (".hdf5", ".h5", ".hdf", ".he5"):
            return "nwb" if _is_nwb_hdf5(path) else "caiman"
        if path.name == "F.npy":
            return "suite2p"
    raise ValueError(
        f"Cannot tell which pipeline wrote {path}. Choose the format explicitly: "
        f"{', '.join(FORMATS)} (calab convert -f FORMAT)."
    )


def load_any(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    fs: float | None = None,
    key: str | None = None,
    **options: Any,
) -> tuple[np.ndarray, dict]:
    """Load ``path`` with the loader for ``fmt`` (detected when None).

    Parameters
    ----------
    path : str or os.PathLike
        Pipeline output.
    fmt : str, optional
        One of :data:`FORMATS`; detected with :func:`detect_format` when None.
    fs : float, optional
        Sampling rate override (Hz).
    key : str, optional
        Trace key (CaImAn dataset path, Minian array name) or NWB series name.
    **options
        Extra keyword arguments for the loader (e.g. suite2p's ``subtract_neuropil``).

    Returns
    -------
    traces : numpy.ndarray
        float64 ``(n_cells, n_timepoints)``.
    metadata : dict
        The loader's metadata dict.
    """
    from calab import loaders

    fmt = detect_format(path) if fmt is None else fmt.lower()
    if fmt == "caiman":
        kwargs = {"trace_key": key} if key else {}
        return loaders.load_caiman(path, fs=fs, **kwargs, **options)
    if fmt == "minian":
        kwargs = {"trace_key": key} if key else {}
        return loaders.load_minian(path, fs=fs, **kwargs, **options)
    if fmt == "suite2p":
        if key:
            raise ValueError("suite2p folders have no trace key; drop --key.")
        return loaders.load_suite2p(path, fs=fs, **options)
    if fmt == "nwb":
        return loaders.load_nwb(path, series=key, fs=fs, **options)
    raise ValueError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
