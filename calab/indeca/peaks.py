"""Peak-seeded spike detection (spec ``indeca.md`` §5), batched over cells.

Median/MAD, the candidate-peak mask and the onset thresholds are array operations on the
whole ``(n_cells, T)`` batch.  The greedy spacing rule (keep peaks by descending amplitude,
at least ``round(5·fs)`` samples apart) is sequential by nature; it runs as one compiled
pass over the (few) candidate peaks of all cells (Numba; a plain-Python version of the same
function is the fallback).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calab.indeca.results import SeedResult
from calab.kernel import round_half_away

__all__ = ["seed_traces", "MAD_FACTOR", "ONSET_FRACTION", "WALK_BACK_S", "PEAK_SPACING_S"]

MAD_FACTOR = 4.0
ONSET_FRACTION = 0.10
WALK_BACK_S = 1.0
PEAK_SPACING_S = 5.0


def _select_onsets(x, order, starts, counts, medians, spacing, walk, out):  # pragma: no cover - compiled
    """For every row: greedy spacing over its amplitude-sorted candidates, then onsets."""
    for b in range(starts.shape[0]):
        kept = np.empty(counts[b], dtype=np.int64)
        n_kept = 0
        for j in range(counts[b]):
            peak = order[starts[b] + j]
            ok = True
            for q in range(n_kept):
                if abs(peak - kept[q]) < spacing:
                    ok = False
                    break
            if ok:
                kept[n_kept] = peak
                n_kept += 1
        for q in range(n_kept):
            peak = kept[q]
            level = medians[b] + np.float32(ONSET_FRACTION) * (x[b, peak] - medians[b])
            earliest = max(0, peak - walk)
            onset = -1
            i = peak - 1
            while i >= earliest:
                if x[b, i] <= level:
                    onset = i
                    break
                i -= 1
            if onset < 0 and peak > earliest:
                onset = earliest
            if onset >= 0:
                out[b, onset] = 1.0


try:
    from numba import njit

    _select_onsets_compiled = njit(cache=True, nogil=True)(_select_onsets)
except ImportError:  # pragma: no cover
    _select_onsets_compiled = _select_onsets


def _median32(values: np.ndarray) -> np.ndarray:
    """Row medians in float32 (even length: mean of the two middle values)."""
    n = values.shape[1]
    ordered = np.sort(values, axis=1)
    if n % 2:
        return ordered[:, n // 2]
    return ((ordered[:, n // 2 - 1] + ordered[:, n // 2]) / np.float32(2.0)).astype(np.float32)


def _seed_block(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    rows, n = x.shape
    out = np.zeros((rows, n), dtype=np.float32)
    if n == 0:
        return out, np.zeros(rows)
    median = _median32(x)
    if n < 3:
        return out, median.astype(np.float64)
    mad = _median32(np.abs(x - median[:, None]))
    threshold = median + np.float32(MAD_FACTOR) * mad
    centre = x[:, 1:-1]
    is_peak = (centre > threshold[:, None]) & (centre >= x[:, :-2]) & (centre >= x[:, 2:])
    is_peak &= (mad >= 1e-10)[:, None]
    row, col = np.nonzero(is_peak)
    col = col + 1
    # amplitude-descending within each row (stable: earlier index first among equals)
    order = np.lexsort((col, -x[row, col].astype(np.float64), row))
    counts = np.bincount(row, minlength=rows).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    spacing = int(round_half_away(PEAK_SPACING_S * fs))
    walk = int(round_half_away(WALK_BACK_S * fs))
    _select_onsets_compiled(x, col[order].astype(np.int64), starts, counts, median, spacing, walk, out)
    return out, median.astype(np.float64)


def seed_traces(traces: Any, fs: float) -> SeedResult:
    """Peak-seeded spike detection for many traces (the CaDecon kernel bootstrap).

    For each trace: peaks above ``median + 4·MAD`` (local maxima), kept greedily by
    descending amplitude at least ``round(5·fs)`` samples apart; each kept peak's onset is
    the last sample within ``round(1·fs)`` before it at or below 10 % of its height above
    the median (or the earliest sample of that window).

    Parameters
    ----------
    traces : array_like (n_cells, T) or sequence of 1-D arrays
        Raw traces (cast to float32).
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    SeedResult
        ``s_counts`` (1.0 at each onset, float32, same layout as ``traces``), ``alpha``
        (ones) and ``baseline`` (the medians), both ``(n_cells,)`` float64.

    Raises
    ------
    ValueError
        Non-positive or non-finite ``fs``, NaN/inf in a trace.
    """
    from calab._validate import check_reference_range, check_rows

    fs = check_reference_range(fs, "fs", "a finite sampling rate > 0 Hz", accept=lambda v: np.isfinite(v) and v > 0)
    rows, ragged = check_rows(traces, "traces", dtype=np.float32, allow_empty_rows=True)
    counts: list[np.ndarray | None] = [None] * len(rows)
    baseline = np.zeros(len(rows))
    lengths = np.array([r.size for r in rows], dtype=np.int64)
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        block = np.stack([rows[i] for i in members]) if length else np.zeros((members.size, 0), np.float32)
        spikes, median = _seed_block(block, fs)
        baseline[members] = median
        for j, i in enumerate(members):
            counts[i] = spikes[j]
    s_counts = counts if ragged else (np.stack(counts) if counts else np.zeros((0, 0), np.float32))
    return SeedResult(s_counts, np.ones(len(rows)), baseline)
