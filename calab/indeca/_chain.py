"""Candidate thresholds of the threshold search: sorted, chain-de-duplicated values (host).

Spec ``indeca.md`` §2.3: the entries of ``x̂`` above 1e-10, sorted ascending, an entry
dropped when it lies within 1e-10 of the most recently *kept* entry.  The chain rule is
sequential (whether an entry is kept depends on the last kept one), so it runs as one
compiled pass over all rows (Numba), with a NumPy fallback that only walks the entries
whose gap to their predecessor is below 1e-10 (an entry with a larger gap is always kept).
"""

from __future__ import annotations

import numpy as np

__all__ = ["candidate_values", "VALUE_FLOOR", "CHAIN_GAP"]

#: entries at or below this are not candidates
VALUE_FLOOR = 1e-10
#: chain de-duplication distance
CHAIN_GAP = 1e-10

try:
    from numba import njit
except ImportError:  # pragma: no cover
    njit = None

if njit is not None:

    @njit(cache=True, nogil=True)
    def _chain(sorted_values, lengths, out, out_lengths):  # pragma: no cover - compiled
        rows = sorted_values.shape[0]
        for b in range(rows):
            count = 0
            last = 0.0
            for i in range(lengths[b]):
                value = sorted_values[b, i]
                if count == 0 or not (abs(value - last) < CHAIN_GAP):
                    out[b, count] = value
                    count += 1
                    last = value
            out_lengths[b] = count
else:  # pragma: no cover
    _chain = None


def _chain_numpy(sorted_values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, width = sorted_values.shape
    out = np.full_like(sorted_values, np.nan)
    out_lengths = np.zeros(rows, dtype=np.int64)
    gap = np.diff(sorted_values, axis=1, prepend=-np.inf)
    inside = np.arange(width)[None, :] < lengths[:, None]
    sure = inside & ~(np.abs(gap) < CHAIN_GAP)
    for b in range(rows):  # pragma: no cover - only without Numba
        keep = sure[b].copy()
        close = np.flatnonzero(inside[b] & ~sure[b])
        if close.size:
            last = None
            values = sorted_values[b]
            for i in range(int(lengths[b])):
                if keep[i]:
                    last = values[i]
                elif not (abs(values[i] - last) < CHAIN_GAP):
                    keep[i] = True
                    last = values[i]
        kept = sorted_values[b, keep]
        out[b, : kept.size] = kept
        out_lengths[b] = kept.size
    return out, out_lengths


def candidate_values(xhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, chain-de-duplicated entries ``> 1e-10`` of every row.

    Parameters
    ----------
    xhat : numpy.ndarray, shape (B, n), float32

    Returns
    -------
    values : numpy.ndarray, shape (B, n), float64
        Row ``b`` holds its ``lengths[b]`` kept values first, NaN after.
    lengths : numpy.ndarray, shape (B,), int64
    """
    above = xhat > VALUE_FLOOR
    lengths = above.sum(axis=1).astype(np.int64)
    ordered = np.sort(np.where(above, xhat, np.inf).astype(np.float64), axis=1)
    if _chain is None:
        return _chain_numpy(ordered, lengths)
    out = np.full_like(ordered, np.nan)
    out_lengths = np.zeros(ordered.shape[0], dtype=np.int64)
    _chain(ordered, lengths, out, out_lengths)
    return out, out_lengths
