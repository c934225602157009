"""Read pickled ``.npy`` files (suite2p's ``ops.npy``) without executing code.

``np.load(..., allow_pickle=True)`` runs whatever callable a pickle names, so opening an
``ops.npy`` from an untrusted source could execute arbitrary code.  suite2p stores its
settings that way, and calab needs one number from it (the frame rate), so this module
unpickles with an allow-list: NumPy array/scalar reconstruction and a few plain data
types.  Any other class or function the pickle names is replaced by an inert
placeholder (:class:`Opaque`) instead of being imported or called.
"""

from __future__ import annotations

import datetime
import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

__all__ = ["Opaque", "load_pickled_npy"]


class Opaque:
    """Stand-in for an object whose class is not on the allow-list (never executed)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<unreadable object>"


def _path_as_text(cls: type):
    def build(*parts: Any) -> str:
        return str(cls(*(str(part) for part in parts)))

    return build


def _numpy_global(name: str) -> Any:
    # `numpy.core` was renamed `numpy._core` in NumPy 2; pickles name either.
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "complex"): complex,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "bytearray"): bytearray,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("pathlib", "PosixPath"): _path_as_text(PurePosixPath),
    ("pathlib", "PurePosixPath"): _path_as_text(PurePosixPath),
    ("pathlib", "WindowsPath"): _path_as_text(PureWindowsPath),
    ("pathlib", "PureWindowsPath"): _path_as_text(PureWindowsPath),
    ("pathlib", "Path"): _path_as_text(PurePosixPath),
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    for _name in ("_reconstruct", "scalar"):
        _ALLOWED[(_module, _name)] = _numpy_global(_name)


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "_codecs" and name == "encode":  # protocol-2 bytes
            import codecs

            return codecs.encode
        if module == "numpy.dtypes" and name.endswith("DType"):
            # dtype classes (numpy >= 1.25); constructing one only builds a dtype.
            import numpy.dtypes

            return getattr(numpy.dtypes, name, Opaque)
        return Opaque


def load_pickled_npy(path: str | os.PathLike[str]) -> Any:
    """Load a ``.npy`` file that may hold a pickled object array, safely.

    Parameters
    ----------
    path : str or os.PathLike
        The file (e.g. suite2p's ``ops.npy``).

    Returns
    -------
    object
        The stored array; a 0-d object array is unwrapped to its content (suite2p's ops
        dict).

    Raises
    ------
    ValueError
        If the file is not a readable ``.npy`` file or its pickle is damaged.
    """
    path = Path(path)
    data = path.read_bytes()
    handle = io.BytesIO(data)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(handle)
        else:
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npy file ({exc}).") from None
    if not dtype.hasobject:
        handle.seek(0)
        try:
            return np.load(handle, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path} could not be read as a .npy file: {exc}") from None
    try:
        array = _AllowListUnpickler(handle, encoding="latin1").load()
    except Exception as exc:  # any damage inside the pickle stream
        raise ValueError(f"{path} holds a damaged pickle ({type(exc).__name__}: {exc}).") from None
    if isinstance(array, np.ndarray) and array.shape == () and array.dtype.hasobject:
        return array.item()
    return array
