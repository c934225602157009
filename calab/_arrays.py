"""Moving caller data onto a backend, one block at a time, with the documented checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from calab.backends import array_library

__all__ = ["to_backend_f32"]


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
    if library == "numpy" or library is None:
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
