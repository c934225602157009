"""Batched threshold search of the InDeCa pipeline (spec ``indeca.md`` §2.3, §2.4, §8.1).

The reference scans candidate thresholds one at a time with early stopping.  The scans
have no side effects, so here every candidate of every row is evaluated in parallel
(``(rows·candidates, n)`` spike trains in memory-bounded chunks through one forward
operator call), and the sequential scan rule is then *replayed* on the ``(rows,
candidates)`` error matrix to find the candidate the reference would have kept.  Rows
differ in their number of candidates: padded arrays with masks.  The replays loop over
candidate columns (at most 50 or 256), never over cells.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from calab.indeca._chain import CHAIN_GAP, candidate_values

__all__ = ["ThresholdOutcome", "interior_bounds", "least_squares", "search_thresholds"]

COARSE_CANDIDATES = 50
FINE_CANDIDATES = 50
PATIENCE = 10
NOISE_CANDIDATES = 256
#: elements of one candidate-evaluation chunk (rows × candidates × n)
CHUNK_ELEMENTS = 1 << 23
#: model values below this (the operator's peak response to one spike is 1) are FFT round-off
SNAP_LEVEL = 1e-6


class ThresholdOutcome(NamedTuple):
    """Per-row results: ``binary`` ``(B, n)`` float32 on the device; host float64
    ``alpha``, ``baseline``, ``threshold``, ``pve`` of shape ``(B,)``."""

    binary: Any
    alpha: np.ndarray
    baseline: np.ndarray
    threshold: np.ndarray
    pve: np.ndarray


def interior_bounds(n: int, pad: int) -> tuple[int, int]:
    """``[pad, n − pad)`` if non-empty, else the whole array."""
    if n - pad > pad:
        return pad, n - pad
    return 0, n


def least_squares(sc, sy, scc, scy, count, alpha_max=math.inf):
    """Vectorised ``LS(c, y)`` of §2.3 from float64 sums; returns ``(alpha, baseline)``."""
    sc, sy, scc, scy = (np.asarray(a, dtype=np.float64) for a in (sc, sy, scc, scy))
    if count == 0:
        return np.zeros_like(sc), np.zeros_like(sc)
    det = scc * count - sc * sc
    flat = np.abs(det) < 1e-30
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = (scy * count - sc * sy) / det
        base = (scc * sy - sc * scy) / det
    fallback = sy / count
    negative = ~flat & (alpha < 0)
    capped = ~flat & ~negative & (alpha > alpha_max)
    alpha_out = np.where(flat | negative, 0.0, np.where(capped, alpha_max, alpha))
    with np.errstate(invalid="ignore"):
        capped_base = (sy - alpha_max * sc) / count if math.isfinite(alpha_max) else base
    base_out = np.where(flat | negative, fallback, np.where(capped, capped_base, base))
    return alpha_out, base_out


class _Evaluator:
    """Evaluates ``(alpha, baseline, SSE)`` of candidate thresholds for a batch of rows."""

    def __init__(self, backend: Any, forward: Any, xhat: Any, target: Any, pad: int, grid_stride: int | None, ar2: Any = None):
        xp = backend.xp
        self.backend, self.xp, self.forward = backend, xp, forward
        self.xhat, self.target = xhat, target
        rows, n = xhat.shape
        self.n = n
        self.lo, self.hi = interior_bounds(n, pad)
        self.count = self.hi - self.lo
        inner = target[:, self.lo : self.hi].astype(xp.float64)
        self.inner_target = inner
        self.sy = np.asarray(backend.to_numpy(xp.sum(inner, axis=1)), dtype=np.float64)
        # noise-floor mode sums residuals only at original-rate grid positions
        self.grid = None
        self.noise_mode = grid_stride is not None
        self.pad, self.stride = pad, grid_stride or 1
        # host arrays + banded recursion: one compiled pass per candidate (no temporaries)
        self.compiled = None
        self.exact = ar2 is not None  # the forward operator is the recursion itself
        if getattr(backend, "host_arrays", False) and ar2 is not None:
            from calab.indeca._compiled import threshold_sse

            if threshold_sse is not None:
                self.compiled = threshold_sse
                self.ar2 = ar2
                self.xhat = np.ascontiguousarray(xhat, dtype=np.float32)
                self.target = np.ascontiguousarray(target, dtype=np.float32)
        if grid_stride is not None:
            positions = np.arange(pad, n - pad, grid_stride) - self.lo
            self.grid = backend.asarray(positions, dtype=np.int64) if positions.size else None
            self.grid_count = positions.size

    def evaluate(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``thresholds`` ``(B, C)`` float64 (NaN = absent) → alpha, baseline, sse ``(B, C)``."""
        xp, backend = self.xp, self.backend
        rows, columns = thresholds.shape
        if self.compiled is not None:
            theta32 = np.where(np.isnan(thresholds), np.inf, thresholds).astype(np.float32)
            alpha = np.zeros((rows, columns))
            base = np.zeros((rows, columns))
            sse = np.zeros((rows, columns))
            g1, g2, gain = self.ar2

            def evaluate_rows(rows_: slice) -> None:  # the compiled kernel releases the GIL
                self.compiled(self.xhat[rows_], self.target[rows_], theta32[rows_], g1, g2, gain, self.lo, self.hi,
                              self.pad, self.stride, self.noise_mode, alpha[rows_], base[rows_], sse[rows_])

            backend.for_row_blocks(evaluate_rows, rows)
            return alpha, base, sse
        alpha = np.zeros((rows, columns))
        base = np.zeros((rows, columns))
        sse = np.full((rows, columns), np.inf)
        per_column = max(1, CHUNK_ELEMENTS // max(1, rows * self.n))
        present_any = ~np.isnan(thresholds)
        for start in range(0, columns, per_column):
            stop = min(columns, start + per_column)
            if not present_any[:, start:stop].any():
                continue
            theta32 = np.where(np.isnan(thresholds[:, start:stop]), np.inf, thresholds[:, start:stop]).astype(np.float32)
            theta_d = backend.asarray(theta32, dtype=np.float32)
            width = stop - start
            spikes = (self.xhat[:, None, :] >= theta_d[:, :, None]).astype(xp.float32).reshape(rows * width, self.n)
            model = self._snap(self.forward(spikes)).reshape(rows, width, self.n)[:, :, self.lo : self.hi].astype(xp.float64)
            inner = self.inner_target[:, None, :]
            sc = np.asarray(backend.to_numpy(xp.sum(model, axis=2)))
            scc = np.asarray(backend.to_numpy(xp.sum(model * model, axis=2)))
            scy = np.asarray(backend.to_numpy(xp.sum(model * inner, axis=2)))
            a, b = least_squares(sc, self.sy[:, None], scc, scy, self.count)
            a_d = backend.asarray(a, dtype=np.float64)
            b_d = backend.asarray(b, dtype=np.float64)
            residual = inner - a_d[:, :, None] * model - b_d[:, :, None]
            if not self.noise_mode:
                err = np.asarray(backend.to_numpy(xp.sum(residual * residual, axis=2)))
            elif self.grid is not None:
                residual = residual[:, :, self.grid]
                err = np.asarray(backend.to_numpy(xp.sum(residual * residual, axis=2)))
            else:  # noise mode with an empty grid: nothing is summed
                err = np.zeros((rows, width))
            present = present_any[:, start:stop]
            alpha[:, start:stop] = np.where(present, a, 0.0)
            base[:, start:stop] = np.where(present, b, 0.0)
            sse[:, start:stop] = np.where(present, err, np.inf)
        return alpha, base, sse

    def _snap(self, model: Any) -> Any:
        """Zero FFT round-off in a model evaluated by FFT (``ar2`` unknown): the recursion
        gives exact zeros where no spike reaches, and the fit's degenerate case needs them."""
        if self.exact:
            return model
        xp = self.xp
        return xp.where(xp.abs(model) < SNAP_LEVEL, xp.float32(0.0), model)

    def final(self, theta: np.ndarray, empty: np.ndarray) -> ThresholdOutcome:
        """Recompute spike trains, fit and PVE at each row's threshold (§2.3 *Final*)."""
        xp, backend = self.xp, self.backend
        theta32 = backend.asarray(np.where(empty, np.inf, theta).astype(np.float32), dtype=np.float32)
        binary = (self.xhat >= theta32[:, None]).astype(xp.float32)
        model = self._snap(self.forward(binary))[:, self.lo : self.hi].astype(xp.float64)
        inner = self.inner_target
        sc = np.asarray(backend.to_numpy(xp.sum(model, axis=1)))
        scc = np.asarray(backend.to_numpy(xp.sum(model * model, axis=1)))
        scy = np.asarray(backend.to_numpy(xp.sum(model * inner, axis=1)))
        alpha, base = least_squares(sc, self.sy, scc, scy, self.count)
        a_d = backend.asarray(alpha, dtype=np.float64)
        b_d = backend.asarray(base, dtype=np.float64)
        residual = inner - a_d[:, None] * model - b_d[:, None]
        ss_res = np.asarray(backend.to_numpy(xp.sum(residual * residual, axis=1)))
        centred = inner - xp.asarray(self.sy / max(self.count, 1))[:, None]
        ss_tot = np.asarray(backend.to_numpy(xp.sum(centred * centred, axis=1)))
        with np.errstate(divide="ignore", invalid="ignore"):
            pve = np.where((ss_tot > 1e-20) & (self.count > 0), 1.0 - ss_res / ss_tot, 0.0)
        # rows without candidates: no spikes, alpha 0, baseline = mean over all samples
        if empty.any():
            full_mean = np.asarray(backend.to_numpy(xp.mean(self.target.astype(xp.float64), axis=1)))
            alpha = np.where(empty, 0.0, alpha)
            base = np.where(empty, full_mean, base)
            pve = np.where(empty, 0.0, pve)
            theta = np.where(empty, 0.0, theta)
        return ThresholdOutcome(binary, alpha, base, np.asarray(theta, dtype=np.float64), pve)


def _replay_scan(errors: np.ndarray, present: np.ndarray, best_err: np.ndarray, best_index: np.ndarray):
    """Replay the sequential scan (strict improvement, stop after 10 misses) per row."""
    rows, columns = errors.shape
    best_err = best_err.copy()
    best_index = best_index.copy()
    streak = np.zeros(rows, dtype=np.int64)
    running = np.ones(rows, dtype=bool)
    for j in range(columns):
        look = running & present[:, j]
        better = look & (errors[:, j] < best_err)
        worse = look & ~better
        best_err = np.where(better, errors[:, j], best_err)
        best_index = np.where(better, j, best_index)
        streak = np.where(better, 0, np.where(worse, streak + 1, streak))
        running &= streak < PATIENCE
    return best_err, best_index


def _dedup_columns(candidates: np.ndarray) -> np.ndarray:
    """Drop candidates within 1e-10 of the previously kept one (NaN marks dropped)."""
    out = candidates.copy()
    last = np.full(candidates.shape[0], np.nan)
    for j in range(candidates.shape[1]):
        value = candidates[:, j]
        close = ~np.isnan(last) & (np.abs(value - last) < CHAIN_GAP)
        out[:, j] = np.where(close, np.nan, value)
        last = np.where(~np.isnan(value) & ~close, value, last)
    return out


def _compact_left(candidates: np.ndarray) -> np.ndarray:
    """Move the present (non-NaN) entries of each row to the front, keeping their order."""
    order = np.argsort(np.isnan(candidates), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def search_thresholds(
    backend: Any,
    forward: Any,
    xhat: Any,
    target: Any,
    pad: int,
    factor: int,
    *,
    noise_sigma: np.ndarray | None = None,
    ar2: tuple | None = None,
) -> ThresholdOutcome:
    """Threshold search for every row of a batch.

    Parameters
    ----------
    backend : Backend
    forward : callable
        ``K`` on ``(rows, n)`` float32 device batches.
    xhat : device array, shape (B, n), float32
        Peak-normalised relaxed solutions.
    target : device array, shape (B, n), float32
        Working traces ``w`` (unscaled).
    pad : int
        Boundary pad; the interior is ``[pad, n − pad)``.
    factor : int
        Upsampling factor ``u`` (``θ_min = 0.5/u``; noise grid stride ``u``).
    noise_sigma : numpy.ndarray, shape (B,), optional
        Noise level per row: selects the noise-floor rule (§2.4) instead of max-PVE.
    ar2 : tuple of numpy.float32, optional
        ``(g1, g2, 1/P)`` of ``forward`` when it is the banded recursion: lets host-array
        backends evaluate candidates with one compiled pass each.

    Returns
    -------
    ThresholdOutcome
    """
    rows, n = xhat.shape
    theta_min = 0.5 / max(factor, 1)
    values, lengths = candidate_values(np.asarray(backend.to_numpy(xhat)))
    empty = lengths == 0
    stride = max(factor, 1)
    evaluator = _Evaluator(backend, forward, xhat, target, pad, stride if noise_sigma is not None else None, ar2)
    row_index = np.arange(rows)
    safe_len = np.maximum(lengths, 1)

    if noise_sigma is None:
        m = np.minimum(COARSE_CANDIDATES, lengths)
        step = np.where(lengths == 1, 1.0, (lengths - 1) / np.maximum(m - 1, 1))
        j = np.arange(COARSE_CANDIDATES)[None, :]
        index = np.minimum(np.sign(j * step[:, None]) * np.floor(np.abs(j * step[:, None]) + 0.5), (lengths - 1)[:, None])
        index = np.clip(index, 0, None).astype(np.int64)
        coarse = np.where(j < m[:, None], values[row_index[:, None], np.minimum(index, values.shape[1] - 1)], np.nan)
        coarse = _dedup_columns(coarse)
        coarse = np.where(coarse >= theta_min, coarse, np.nan)
        coarse = _compact_left(coarse)
        none_left = np.all(np.isnan(coarse), axis=1)
        coarse[none_left, 0] = theta_min
        _, _, err = evaluator.evaluate(coarse)
        best_err, best_index = _replay_scan(err, ~np.isnan(coarse), np.full(rows, np.inf), np.full(rows, -1))
        theta_best = np.where(best_index >= 0, coarse[row_index, np.maximum(best_index, 0)], theta_min)

        v_min = values[:, 0]
        v_max = values[row_index, safe_len - 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = np.where(lengths > 1, 2.0 * (v_max - v_min) / np.maximum(m, 1), 0.2 * theta_best)
        lo = np.maximum(theta_best - spread, theta_min)
        hi = theta_best + spread
        k = np.arange(FINE_CANDIDATES)[None, :]
        fine = lo[:, None] + k * (hi - lo)[:, None] / (FINE_CANDIDATES - 1)
        fine = np.where(fine >= 0, fine, np.nan)
        fine[empty] = np.nan
        _, _, err_fine = evaluator.evaluate(fine)
        _, fine_index = _replay_scan(err_fine, ~np.isnan(fine), best_err, np.full(rows, -1))
        theta = np.where(fine_index >= 0, fine[row_index, np.maximum(fine_index, 0)], theta_best)
        return evaluator.final(theta, empty)

    # ---------------------------------------------------------------- noise floor (§2.4)
    sigma = np.asarray(noise_sigma, dtype=np.float64)
    grid_count = len(range(pad, n - pad, stride))
    budget = sigma * sigma * grid_count
    big = lengths > NOISE_CANDIDATES
    walk_step = np.where(big, lengths / NOISE_CANDIDATES, 1.0)
    # ι accumulates by repeated addition, as the reference's loop does
    width = int(min(values.shape[1], NOISE_CANDIDATES + 2))
    increments = np.broadcast_to(walk_step[:, None], (rows, width)).copy()
    increments[:, 0] = 0.0
    iota = np.cumsum(increments, axis=1)
    position = np.floor(iota).astype(np.int64)
    inside = position < lengths[:, None]
    picked = np.where(inside, values[row_index[:, None], np.minimum(position, values.shape[1] - 1)], np.nan)
    picked = np.where(picked >= theta_min, picked, np.nan)
    # scan from the highest candidate down: reverse each row's present entries
    descending = np.sort(np.where(np.isnan(picked), -np.inf, picked), axis=1)[:, ::-1]
    descending = np.where(np.isinf(descending), np.nan, descending)
    chosen = np.full(rows, np.nan)
    fallback_theta = np.full(rows, theta_min)
    fallback_err = np.full(rows, np.inf)
    pending = ~empty
    block = 32
    for start in range(0, descending.shape[1], block):
        if not pending.any():
            break
        part = descending[:, start : start + block].copy()
        part[~pending] = np.nan
        _, _, err = evaluator.evaluate(part)
        for j in range(part.shape[1]):
            present = pending & ~np.isnan(part[:, j])
            feasible = present & (err[:, j] <= budget)
            chosen = np.where(feasible, part[:, j], chosen)
            improve = present & ~feasible & (err[:, j] < fallback_err)
            fallback_err = np.where(improve, err[:, j], fallback_err)
            fallback_theta = np.where(improve, part[:, j], fallback_theta)
            pending &= ~feasible
    theta = np.where(np.isnan(chosen), fallback_theta, chosen)
    return evaluator.final(theta, empty)
