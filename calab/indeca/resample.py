"""Resampling between the original and the upsampled rate (spec ``indeca.md`` §1.5).

Every function works on a ``(B, n)`` batch in the backend's array namespace ``xp`` and is
pure broadcasting, reshapes and cumulative sums (§8.1): no loop over cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calab.kernel import round_half_away

__all__ = ["average_downsample", "binary_to_counts", "counts_to_binary", "upsample_traces"]


def upsample_traces(xp: Any, traces: Any, factor: int) -> Any:
    """Linear upsampling of a ``(B, T)`` float32 batch to ``(B, T·u)``.

    ``out[i·u + j] = x[i] + (x[i+1] − x[i])·(j/u)`` in float32, ``j/u`` in float32; the
    last sample is held for its ``u`` outputs.  ``u <= 1`` returns the batch unchanged.
    """
    if factor <= 1:
        return traces
    batch, length = traces.shape
    fraction = xp.asarray(np.arange(factor, dtype=np.float32) / np.float32(factor))
    following = xp.concatenate([traces[:, 1:], traces[:, -1:]], axis=1)
    step = following - traces
    out = traces[:, :, None] + step[:, :, None] * fraction[None, None, :]
    return out.reshape(batch, length * factor)


def counts_to_binary(counts: np.ndarray, factor: int, length_up: int) -> np.ndarray:
    """Warm-start spike trains at the upsampled rate from counts at the original rate (host).

    ``u = 1``: 1 where ``c > 0.5``.  ``u > 1``: ``m = min(round(c), u)`` ones (none for
    negative counts) from ``max(0, i·u − floor(m/2))``, clipped to the array.

    Parameters
    ----------
    counts : numpy.ndarray, shape (B, T)
    factor : int
    length_up : int
        Output length (``T·u``).

    Returns
    -------
    numpy.ndarray, shape (B, length_up), float32
    """
    counts = np.asarray(counts, dtype=np.float64)
    batch, length = counts.shape
    if factor <= 1:
        out = np.zeros((batch, length_up), dtype=np.float32)
        keep = min(length, length_up)
        out[:, :keep] = counts[:, :keep] > 0.5
        return out
    rounded = np.sign(counts) * np.floor(np.abs(counts) + 0.5)  # half away from zero
    ones = np.clip(rounded, 0, factor).astype(np.int64)
    start = np.maximum(0, np.arange(length)[None, :] * factor - ones // 2)
    offsets = np.arange(factor)[None, None, :]
    positions = start[:, :, None] + offsets
    valid = (offsets < ones[:, :, None]) & (positions < length_up)
    out = np.zeros((batch, length_up), dtype=np.float32)
    rows = np.broadcast_to(np.arange(batch)[:, None, None], positions.shape)
    out[rows[valid], positions[valid]] = 1.0
    return out


def binary_to_counts(xp: Any, binary: Any, factor: int) -> Any:
    """Counts at the original rate from an upsampled 0/1 train, with centred bins.

    ``n_out = floor(n/u)``, ``h = floor(u/2)``; ``out[i] = Σ s[max(0, i·u − h) :
    min(i·u + u − h, n)]`` (the first bin is narrower, the last ``h`` samples are never
    counted).  Returns float32 ``(B, n_out)``.
    """
    if factor <= 1:
        return binary.astype(xp.float32)
    batch, n = binary.shape
    n_out = n // factor
    half = factor // 2
    cumulative = xp.concatenate(
        [xp.zeros((batch, 1), dtype=xp.int32), xp.cumsum(binary.astype(xp.int32), axis=1)], axis=1
    )
    starts = np.maximum(0, np.arange(n_out) * factor - half)
    ends = np.minimum(np.arange(n_out) * factor + factor - half, n)
    return (cumulative[:, ends] - cumulative[:, starts]).astype(xp.float32)


def average_downsample(xp: Any, batch: Any, factor: int) -> Any:
    """Mean of consecutive non-centred blocks of ``u`` samples: ``(B, floor(n/u))`` float32."""
    if factor <= 1:
        return batch
    rows, n = batch.shape
    n_out = n // factor
    blocks = batch[:, : n_out * factor].reshape(rows, n_out, factor)
    return (xp.sum(blocks.astype(xp.float64), axis=2) / factor).astype(xp.float32)


def upsample_factor_ok(factor: Any) -> int:
    """Validate an integer upsampling factor ``>= 1`` (the reference's message)."""
    from calab.kernel import format_number

    if isinstance(factor, (bool, np.bool_)):  # as every count in calab (True is not 1)
        raise TypeError(f"invalid parameter: upsample_factor must be an integer >= 1, got bool {factor!r}")
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise TypeError(f"invalid parameter: upsample_factor must be an integer >= 1, got {factor!r}") from None
    if not (np.isfinite(value) and value >= 1):
        raise ValueError(f"invalid parameter: upsample_factor must be >= 1, got {format_number(value)}")
    if value != round_half_away(value):
        raise ValueError(f"invalid parameter: upsample_factor must be a whole number >= 1, got {format_number(value)}")
    return int(value)
