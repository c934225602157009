"""Data in and out of the backends: caller blocks onto a device, results back in the
caller's array library (the return-type policy, in one place).

NumPy (and anything that is not a device array: lists, memory maps, HDF5/Zarr datasets)
→ NumPy of the requested dtype; a CuPy or JAX caller gets float32 arrays of its own
library, on the device.  The only module outside a backend that names array libraries.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from calab.backends import array_library, get_backend

__all__ = [
    "caller_library",
    "concatenate_in",
    "host_backend",
    "is_device_library",
    "to_backend_f32",
    "to_library",
    "vector_to_library",
]

#: array libraries whose arrays live on a device and are returned in kind
_DEVICE_LIBRARIES = ("cupy", "jax")


def is_device_library(library: str | None) -> bool:
    """True for libraries whose inputs come back as their own (device) arrays."""
    return library in _DEVICE_LIBRARIES


def caller_library(array: Any) -> str:
    """The library results go back to: the array's own for device arrays, else ``"numpy"``."""
    library = array_library(array)
    return library if is_device_library(library) else "numpy"


def _library_module(library: str) -> Any:
    if library == "cupy":
        import cupy

        return cupy
    import jax.numpy as jnp

    return jnp


def to_library(backend: Any, array: Any, library: str, dtype: Any = np.float64) -> Any:
    """A backend array in the caller's library: NumPy → ``dtype``; CuPy/JAX → float32 as is."""
    if library == "numpy":
        return backend.to_numpy(array).astype(dtype, copy=False)
    if library == backend.name:
        return array
    return _library_module(library).asarray(backend.to_numpy(array))


def vector_to_library(values: np.ndarray, library: str) -> Any:
    """A host vector in the caller's library."""
    if library == "numpy":
        return values
    return _library_module(library).asarray(values)


def concatenate_in(library: str) -> Callable[..., Any]:
    """``concatenate`` of the caller's library."""
    if library == "numpy":
        return np.concatenate
    return _library_module(library).concatenate


def host_backend() -> Any:
    """The CPU backend (host-side checks and work)."""
    return get_backend("numpy")


def to_backend_f32(backend: Any, array: Any, what: str, row_offset: int | None = None) -> Any:
    """Move a ``(B, n)`` block onto ``backend`` as float32 and reject NaN/inf.

    Only this block is converted: a memory-mapped or lazily loaded input is read one
    block at a time.  ``row_offset`` (for multi-row batches) adds ``row r,`` to the error,
    as the reference does for batches of two or more traces.

    Raises
    ------
    ValueError
        If the block holds NaN or infinity; the message gives the position and the fix.
    """
    library = array_library(array)
    if not is_device_library(library):
        with np.errstate(over="ignore", invalid="ignore"):
            host = np.asarray(array, dtype=np.float32)
        device = backend.asarray(host)
    else:
        device = backend.asarray(array)
    finite = backend.xp.isfinite(device)
    if not bool(backend.to_numpy(finite.all())):
        mask = ~backend.to_numpy(finite)
        row, index = (int(v[0]) for v in np.nonzero(mask))
        where = f"index {index}" if row_offset is None else f"row {row + row_offset}, index {index}"
        raise ValueError(
            f"{what} contains a non-finite value (NaN or infinity) at {where}; "
            "replace or drop NaN/inf samples (for example with numpy.nan_to_num or by "
            "interpolation) before calling this function"
        )
    return device
