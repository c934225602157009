"""Results back in the caller's array library (the return-type policy, in one place).

NumPy (and anything that is not a device array: lists, memory maps, HDF5/Zarr datasets)
→ NumPy of the requested dtype; a CuPy or JAX caller gets float32 arrays of its own
library, on the device.  The only module outside a backend that names array libraries.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from calab.backends import array_library

__all__ = ["caller_library", "concatenate_in", "is_device_library", "to_library", "vector_to_library"]

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
