"""Bi-exponential fit of free-form kernels (spec ``indeca.md`` §4), batched over kernels.

``h(t) ≈ β_s (e^{−t/τd} − e^{−t/τr}) + β_f (e^{−t/τdf} − e^{−t/τrf})``: a cold grid
(20 × 20 slow pairs, each with a 5 × 8 fast sub-grid) evaluated for all kernels at once
with matrix products and the closed-form two-variable NNLS of §4.2 applied element-wise,
then golden-section coordinate refinement vectorised across kernels (30 bracket steps: the
depth at which the installed calab 0.3.0 results are reproduced, §4.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from calab._validate import (
    check_bool,
    check_memory,
    check_real_array,
    check_real_scalar,
    check_reference_range,
    check_rows,
)
from calab.indeca.results import BiexpFitResult, BiexpFitResults

__all__ = ["fit_biexponential", "fit_biexponentials", "estimate_memory", "GOLDEN_STEPS"]

PHI = 0.6180339887498949
COORDINATE_STEPS = 40
#: bracket-shrinking steps per coordinate (the wheel converges further than the snapshot's 10)
GOLDEN_STEPS = 30
SLOW_POINTS = 20
FAST_RISE_POINTS = 5
FAST_DECAY_POINTS = 8
CEILING_HEADROOM = 2.0
TAU_DECAY_MAX = 5.0
#: calab 0.3.0 keeps the refined rise time inside the grid's range (the snapshot does not)
TAU_RISE_MAX = 0.5
EMPTY = BiexpFitResult(0.02, 0.4, 0.0, math.inf, 0.0, 0.0, 0.0, "Empty")
#: Peak bytes per kernel sample (every grid candidate's template, float64) and per kernel
#: (its residuals over the candidates), measured with tracemalloc for 100-8000 samples
#: and 1-256 kernels: 1.63e5 and about 1.0e6.
TEMPLATE_BYTES_PER_SAMPLE = 1.65e5
RESIDUAL_BYTES_PER_KERNEL = 1.05e6


def estimate_memory(n_kernels: int, longest: int) -> dict[str, float]:
    """Estimated peak bytes of :func:`fit_biexponentials` on ``n_kernels`` of up to ``longest`` samples."""
    if n_kernels <= 0 or longest <= 0:
        return {}
    return {
        f"the grid templates of a {int(longest)}-sample kernel": TEMPLATE_BYTES_PER_SAMPLE * float(longest),
        f"the grid residuals of {n_kernels} kernel{'s' if n_kernels != 1 else ''}": RESIDUAL_BYTES_PER_KERNEL * n_kernels,
    }


def _log_grid(lo: float, hi: float, count: int) -> np.ndarray:
    return np.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * np.arange(count) / (count - 1))


def _templates(times: np.ndarray, tau_rise: np.ndarray, tau_decay: np.ndarray) -> np.ndarray:
    """``(P, n)`` templates ``e^{−t/τd} − e^{−t/τr}`` (zeros where a tau is not positive)."""
    tr = np.asarray(tau_rise, dtype=np.float64)[..., None]
    td = np.asarray(tau_decay, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = np.exp(-times / td) - np.exp(-times / tr)
    return np.where((tr > 0) & (td > 0), out, 0.0)


def _nnls(hh, rs, rf, gss, gff, gsf, active):
    """Closed-form gated two-variable NNLS of §4.2, element-wise; returns (βs, βf, R)."""
    hh, rs, rf, gss, gff, gsf = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (hh, rs, rf, gss, gff, gsf)))
    active = np.broadcast_to(active, hh.shape)
    gff = np.where(active, gff, 0.0)
    gsf = np.where(active, gsf, 0.0)
    rf = np.where(active, rf, 0.0)

    def residual(bs, bf):
        return hh - 2 * bs * rs - 2 * bf * rf + bs * bs * gss + 2 * bs * bf * gsf + bf * bf * gff

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ok_s = gss > 1e-30
        beta0 = np.maximum(np.where(ok_s, rs / gss, 0.0), 0.0)
        has_ceiling = active & ok_s & (gff > 1e-30)
        ceiling = np.where(has_ceiling, CEILING_HEADROOM * np.maximum((rf - beta0 * gsf) / np.where(gff > 1e-30, gff, 1.0), 0.0), np.inf)
        best_s = np.zeros_like(hh)
        best_f = np.zeros_like(hh)
        best_r = hh.copy()
        det = gss * gff - gsf * gsf
        ok_det = np.abs(det) > 1e-30
        safe_det = np.where(ok_det, det, 1.0)
        # 1. both free
        bs = (rs * gff - rf * gsf) / safe_det
        bf = (rf * gss - rs * gsf) / safe_det
        r = residual(bs, bf)
        take = ok_det & (bs >= 0) & (bf >= 0) & (bs >= bf) & (bf <= ceiling) & (r < best_r)
        best_s, best_f, best_r = np.where(take, bs, best_s), np.where(take, bf, best_f), np.where(take, r, best_r)
        # 2. fast clamped at the ceiling
        finite_c = np.isfinite(ceiling)
        c = np.where(finite_c, ceiling, 0.0)
        bs = np.maximum((rs - c * gsf) / np.where(ok_s, gss, 1.0), 0.0)
        r = residual(bs, c)
        take = ok_det & finite_c & ok_s & (bs >= c) & (r < best_r)
        best_s, best_f, best_r = np.where(take, bs, best_s), np.where(take, c, best_f), np.where(take, r, best_r)
        # 3. slow only
        bs = rs / np.where(ok_s, gss, 1.0)
        r = residual(bs, 0.0)
        take = ok_s & (bs >= 0) & (r < best_r)
        best_s, best_f, best_r = np.where(take, bs, best_s), np.where(take, 0.0, best_f), np.where(take, r, best_r)
    return best_s, best_f, best_r


def _decays(times: np.ndarray, taus: np.ndarray) -> list[np.ndarray]:
    """``e^{−t/τ}`` for each of the 4 columns of ``taus`` ``(M, 4)``: four ``(M, n)`` arrays."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return [np.exp(-times / np.asarray(taus[:, k], dtype=np.float64)[..., None]) for k in range(4)]


def _component(h: np.ndarray, taus: np.ndarray, rise: np.ndarray, decay: np.ndarray, columns: tuple[int, int]):
    """One component's template ``e^{−t/τd} − e^{−t/τr}`` (zero where a tau is not positive)
    and its sums: ``(template, Σ h·template, Σ template²)`` per row."""
    with np.errstate(invalid="ignore"):
        template = np.where(((taus[:, columns[0]] > 0) & (taus[:, columns[1]] > 0))[:, None], decay - rise, 0.0)
    return template, np.sum(h * template, axis=1), np.sum(template * template, axis=1)


def _fit_rows(h: np.ndarray, hh: np.ndarray, taus: np.ndarray,
              slow: tuple[np.ndarray, np.ndarray, np.ndarray],
              fast_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Betas and residual of each row at its own taus: ``h`` ``(M, n)``, ``hh = Σh²``
    ``(M,)``, ``taus`` ``(M, 4)`` → βs, βf, R.

    ``slow`` is the slow component of every row (:func:`_component`); ``fast_of(rows)`` the
    fast component of ``rows``, asked only for the rows that have one (the others' sums
    would be zeroed inside :func:`_nnls` anyway).
    """
    active = (taus[:, 2] > 1e-10) & (taus[:, 3] > taus[:, 2])
    fast = np.flatnonzero(active)
    template_s, rs, gss = slow
    rf, gff, gsf = np.zeros(h.shape[0]), np.zeros(h.shape[0]), np.zeros(h.shape[0])
    if fast.size:
        template_f, rf[fast], gff[fast] = fast_of(fast)
        gsf[fast] = np.sum(template_s[fast] * template_f, axis=1)
    return _nnls(hh, rs, rf, gss, gff, gsf, active)


def _evaluate_rows(h: np.ndarray, times: np.ndarray, taus: np.ndarray):
    """Fit betas for each row's own taus: ``h`` ``(M, n)``, ``taus`` ``(M, 4)`` → βs, βf, R."""
    decays = _decays(times, taus)
    return _fit_rows(h, np.sum(h * h, axis=1), taus, _component(h, taus, decays[0], decays[1], (0, 1)),
                     lambda rows: _component(h[rows], taus[rows], decays[2][rows], decays[3][rows], (2, 3)))


class _MovingComponent:
    """One component of every row during one coordinate step of :func:`_refine`.

    Rows whose moving tau belongs to the other component keep this one for the whole
    step: its template and sums are computed once (bit for bit what a fresh evaluation
    gives: the same element-wise arithmetic and the same per-row sums).  Only the rows
    whose moving tau is one of ``columns`` are recomputed at each bracket point.
    """

    def __init__(self, h, taus, fixed, phase, columns):
        self.h, self.fixed, self.phase, self.columns = h, fixed, phase, columns
        self.moves = (phase == columns[0]) | (phase == columns[1])
        kept = np.flatnonzero(~self.moves)
        self.kept_rows = kept
        self.kept = _component(h[kept], taus[kept], fixed[columns[0]][kept], fixed[columns[1]][kept], columns)
        self._gathered: tuple[np.ndarray, tuple] | None = None

    def _decay(self, k, rows, moving):
        """``e^{−t/τ_k}`` of ``rows`` at this bracket point (the moving value where τ_k moves)."""
        moves_k = self.phase[rows] == k
        if not moves_k.any():
            return self.fixed[k][rows]
        if moves_k.all():
            return moving[rows]
        return np.where(moves_k[:, None], moving[rows], self.fixed[k][rows])

    def of(self, rows: np.ndarray, trial: np.ndarray, moving: np.ndarray):
        """``(template, Σ h·template, Σ template²)`` of ``rows`` at the trial taus."""
        kept_here = ~self.moves[rows]
        if kept_here.all():
            # the same rows at every bracket point of the step: gather them once
            if self._gathered is None or not np.array_equal(self._gathered[0], rows):
                where = np.searchsorted(self.kept_rows, rows)
                self._gathered = (rows.copy(), tuple(part[where] for part in self.kept))
            return self._gathered[1]
        fresh_rows = rows if not kept_here.any() else rows[~kept_here]
        lo, hi = self.columns
        fresh = _component(self.h[fresh_rows], trial[fresh_rows], self._decay(lo, fresh_rows, moving),
                           self._decay(hi, fresh_rows, moving), self.columns)
        if not kept_here.any():
            return fresh
        where = np.searchsorted(self.kept_rows, rows[kept_here])
        out = tuple(np.empty((rows.size,) + part.shape[1:]) for part in fresh)
        for target, new, old in zip(out, fresh, self.kept):
            target[~kept_here] = new
            target[kept_here] = old[where]
        return out


def _grid(h: np.ndarray, times: np.ndarray, dt: float):
    """Cold grid search for every row of ``h``: best slow and best two-component candidates."""
    rises = _log_grid(max(dt, 0.005), TAU_RISE_MAX, SLOW_POINTS)
    decays = _log_grid(0.05, TAU_DECAY_MAX, SLOW_POINTS)
    tr, td = np.meshgrid(rises, decays, indexing="ij")
    keep = td > tr
    slow_r, slow_d = tr[keep], td[keep]  # τr outer, τd inner
    ts = _templates(times, slow_r, slow_d)
    hh = np.sum(h * h, axis=1)[:, None]
    rs = h @ ts.T
    gss = np.sum(ts * ts, axis=1)
    bs, _, res = _nnls(hh, rs, 0.0, gss[None, :], 0.0, 0.0, False)
    best = np.argmin(np.where(np.isnan(res), np.inf, res), axis=1)
    rows = np.arange(h.shape[0])
    slow = np.stack([slow_r[best], slow_d[best], np.zeros_like(best, float), np.zeros_like(best, float)], axis=1)

    # fast sub-grid per slow pair, in loop order (τr, τd, τrf, τdf)
    fast_rise = 0.25 * dt + (2 * dt - 0.25 * dt) * np.arange(FAST_RISE_POINTS) / (FAST_RISE_POINTS - 1)
    combos = []
    for p, (a, b) in enumerate(zip(slow_r, slow_d)):
        hi = min(8 * dt, 0.15 * b)
        if hi <= 0.5 * dt:
            continue
        fast_decay = _log_grid(0.5 * dt, hi, FAST_DECAY_POINTS)
        for rf in fast_rise:
            for df in fast_decay:
                if df <= rf:
                    continue
                combos.append((p, rf, df))
    if not combos:
        two = np.full((h.shape[0], 4), np.nan)
        return slow, two, np.full(h.shape[0], np.inf), res[rows, best]
    combo = np.asarray(combos)
    pair = combo[:, 0].astype(np.int64)
    tf = _templates(times, combo[:, 1], combo[:, 2])
    gsf = np.sum(ts[pair] * tf, axis=1)
    gff = np.sum(tf * tf, axis=1)
    rf = h @ tf.T
    _, _, res2 = _nnls(hh, rs[:, pair], rf, gss[pair][None, :], gff[None, :], gsf[None, :], True)
    best2 = np.argmin(np.where(np.isnan(res2), np.inf, res2), axis=1)
    two = np.stack([slow_r[pair[best2]], slow_d[pair[best2]], combo[best2, 1], combo[best2, 2]], axis=1)
    return slow, two, res2[rows, best2], res[rows, best]


def _refine(h: np.ndarray, times: np.ndarray, dt: float, taus: np.ndarray, with_fast: np.ndarray) -> np.ndarray:
    """Golden-section coordinate descent (§4.4), every row at once.

    Rows cycle through 2 phases (τr, τd) or, when ``with_fast``, 4 (τr, τd, τrf, τdf); both
    points of every bracket step of every row are evaluated in one batched call.
    """
    taus = taus.copy()
    rows = np.arange(taus.shape[0])
    cycle = np.where(with_fast, 4, 2)
    for step in range(COORDINATE_STEPS):
        phase = step % cycle
        capped = phase == 1
        taus[:, 1] = np.where(capped, np.minimum(taus[:, 1], TAU_DECAY_MAX), taus[:, 1])
        tr, td, trf, tdf = taus[:, 0], taus[:, 1], taus[:, 2], taus[:, 3]
        lo = np.select(
            [phase == 0, phase == 1, phase == 2],
            [np.maximum(0.5 * tr, dt), np.maximum(0.5 * td, 1.01 * tr), np.maximum(0.5 * trf, 0.25 * dt)],
            np.maximum(np.maximum(0.5 * tdf, 1.01 * trf), 0.5 * dt),
        )
        hi = np.select(
            [phase == 0, phase == 1, phase == 2],
            [np.minimum(np.minimum(2 * tr, 0.99 * td), TAU_RISE_MAX), np.minimum(2 * td, TAU_DECAY_MAX), np.minimum(np.minimum(2 * trf, 2 * dt), 0.99 * tdf)],
            np.minimum(np.minimum(2 * tdf, 8 * dt), 0.15 * td),
        )
        move = lo < hi
        if not move.any():
            continue
        both_h = np.concatenate([h, h])
        both_hh = np.sum(both_h * both_h, axis=1)
        both_phase = np.concatenate([phase, phase])
        both_taus = np.concatenate([taus, taus])
        everyone = np.arange(2 * rows.size)
        # Only one tau of each row moves in this step: the other three decays are computed
        # once, the moving one per bracket point (the same values _evaluate_rows uses), and
        # the component that does not move keeps its template and sums for the whole step.
        fixed = _decays(times, both_taus)
        slow = _MovingComponent(both_h, both_taus, fixed, both_phase, (0, 1))
        fast = _MovingComponent(both_h, both_taus, fixed, both_phase, (2, 3))
        for _ in range(GOLDEN_STEPS):
            x1 = hi - PHI * (hi - lo)
            x2 = lo + PHI * (hi - lo)
            trial = both_taus.copy()
            points = np.concatenate([x1, x2])
            trial[everyone, both_phase] = points
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                moving = np.exp(-times / points[..., None])
            residual = _fit_rows(both_h, both_hh, trial, slow.of(everyone, trial, moving),
                                 lambda fast_rows: fast.of(fast_rows, trial, moving))[2]  # noqa: B023
            left = residual[: rows.size] < residual[rows.size :]
            hi = np.where(move & left, x2, hi)
            lo = np.where(move & ~left, x1, lo)
        taus[rows, phase] = np.where(move, 0.5 * (lo + hi), taus[rows, phase])
    return taus


def _has_fast(taus: np.ndarray) -> np.ndarray:
    return (taus[:, 2] > 0) & (taus[:, 3] > taus[:, 2])


def _refine_candidates(h, times, dt, taus, residual):
    """Refine each row's candidate; keep the refined taus only on strict improvement."""
    out = taus.copy()
    res = residual.copy()
    rows = np.flatnonzero(np.all(np.isfinite(taus), axis=1) & np.isfinite(residual))
    if rows.size == 0:
        return out, res
    refined = _refine(h[rows], times, dt, taus[rows], _has_fast(taus[rows]))
    new_res = _evaluate_rows(h[rows], times, refined)[2]
    better = new_res < res[rows]
    out[rows] = np.where(better[:, None], refined, taus[rows])
    res[rows] = np.where(better, new_res, res[rows])
    return out, res


def _check_fit_settings(fs: Any, skip: Any) -> tuple[float, int]:
    fs = check_reference_range(fs, "fs", "a finite sampling rate > 0 Hz", accept=lambda v: math.isfinite(v) and v > 0)
    return fs, check_reference_range(skip, "skip", "a whole number >= 0", integer=True, accept=lambda v: v >= 0)


def _warm_taus(warm: Any, count: int) -> list[tuple[float, float, float, float] | None]:
    if warm is None:
        return [None] * count
    if isinstance(warm, BiexpFitResults):
        entries = [warm.fit(i) for i in range(len(warm.tau_rise))]
    elif isinstance(warm, BiexpFitResult) or (isinstance(warm, tuple) and not isinstance(warm, list) and len(warm) == 8 and not isinstance(warm[0], (tuple, BiexpFitResult))):
        entries = [warm]
    elif isinstance(warm, (list, tuple)):
        entries = list(warm)
    else:
        raise TypeError(f"warm must be a BiexpFitResult from an earlier fit, a list of them (or None), got {type(warm).__name__} {warm!r:.60}")
    if len(entries) != count:
        raise ValueError(f"warm has {len(entries)} fits for {count} kernels; pass one (or None) per kernel")
    out = []
    for index, entry in enumerate(entries):
        if entry is None:
            out.append(None)
            continue
        if not isinstance(entry, tuple) or len(entry) != 8:
            raise TypeError(
                f"warm[{index}] must be a BiexpFitResult from an earlier fit (or None), got "
                f"{type(entry).__name__} {entry!r:.60}"
            )
        taus = tuple(check_real_scalar(entry[i], f"warm[{index}].{name}", finite=False)
                     for i, name in ((0, "tau_rise"), (1, "tau_decay"), (4, "tau_rise_fast"), (5, "tau_decay_fast")))
        out.append(taus if all(math.isfinite(v) for v in taus) else None)
    return out


def fit_biexponentials(
    kernels: Any,
    fs: float,
    *,
    refine: bool = True,
    skip: int = 0,
    warm: Any = None,
) -> BiexpFitResults:
    """Fit a bi-exponential model to many free-form kernels in one call.

    Parameters
    ----------
    kernels : array_like (n_kernels, K) or sequence of 1-D arrays
        Free-form kernels (lengths may differ in a list).
    fs : float
        Sampling rate in Hz.
    refine : bool
        Polish the grid optimum by golden-section coordinate descent.
    skip : int
        Leading samples left out of the fit (clamped to ``K − 1``); the reported residual
        is re-evaluated over all samples with the fitted betas.
    warm : BiexpFitResults or sequence of BiexpFitResult/None, optional
        Previous fit per kernel: its taus are re-fitted on the current kernel, refined,
        and compete with the grid's candidate of the same kind.

    Returns
    -------
    BiexpFitResults
        ``(n_kernels,)`` arrays (float64; ``fit_mode`` object array of str).
    """
    fs, skip = _check_fit_settings(fs, skip)
    refine = check_bool(refine, "refine")
    rows = check_rows(kernels, "kernels", dtype=np.float32, allow_empty_rows=True)[0]
    count = len(rows)
    warm_taus = _warm_taus(warm, count)
    if count:
        longest = max(r.size for r in rows)
        check_memory(
            estimate_memory(count, longest),
            f"a bi-exponential fit of {count} kernel{'s' if count != 1 else ''} of up to {longest} samples",
            advice="fit the kernel's first 5 decay time constants, 5 * tau_decay * fs samples, or fewer kernels per call",
        )
    dt = 1.0 / fs
    fields = np.zeros((count, 7))
    modes = np.empty(count, dtype=object)
    lengths = np.array([r.size for r in rows], dtype=np.int64)
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        if length == 0:
            for i in members:
                fields[i] = EMPTY[:7]
                modes[i] = EMPTY.fit_mode
            continue
        first = min(skip, int(length) - 1)
        full_h = np.stack([rows[i] for i in members]).astype(np.float64)
        full_times = np.arange(int(length)) / fs
        h = full_h[:, first:]
        times = full_times[first:]
        slow, two, res_two, res_slow = _grid(h, times, dt)
        m = len(members)
        # Warm starts compete with the grid's candidates.  Every row is refined on its
        # own, so the grid's two candidates and the warm starts of all members go through
        # one batched refinement (one sequence of golden-section steps instead of two).
        warmed = [j for j, i in enumerate(members) if warm_taus[i] is not None]
        starts = np.asarray([warm_taus[members[j]] for j in warmed]).reshape(len(warmed), 4)
        res_w = _evaluate_rows(h[warmed], times, starts)[2] if warmed else np.zeros(0)
        if refine:
            both, res_both = _refine_candidates(
                np.concatenate([h, h, h[warmed]]), times, dt, np.concatenate([slow, two, starts]),
                np.concatenate([res_slow, res_two, res_w]),
            )
            slow, two, starts = both[:m], both[m:2 * m], both[2 * m:]
            res_slow, res_two, res_w = res_both[:m], res_both[m:2 * m], res_both[2 * m:]
        if warmed:
            fast_w = _has_fast(starts)
            for k, j in enumerate(warmed):
                if fast_w[k]:
                    if res_w[k] < res_two[j]:
                        two[j], res_two[j] = starts[k], res_w[k]
                elif res_w[k] < res_slow[j]:
                    slow[j], res_slow[j] = starts[k], res_w[k]
        use_two = res_two < res_slow
        taus = np.where(use_two[:, None], np.nan_to_num(two), slow)
        beta_s, beta_f, residual = _evaluate_rows(h, times, taus)
        if first > 0:
            # calab 0.3.0 reports the residual of the chosen taus over all samples with the
            # betas re-solved there (the betas it reports are those of the fit with skip)
            residual = _evaluate_rows(full_h, full_times, taus)[2]
        fast = _has_fast(taus)
        for j, i in enumerate(members):
            fields[i] = (taus[j, 0], taus[j, 1], beta_s[j], residual[j], taus[j, 2], taus[j, 3], beta_f[j])
            if not math.isfinite(residual[j]):
                modes[i] = "Empty"
            elif beta_s[j] <= 0:
                modes[i] = "Degenerate"
            elif fast[j] and beta_f[j] > 0:
                modes[i] = "TwoComponent"
            else:
                modes[i] = "SlowOnly"
    return BiexpFitResults(*(fields[:, k].copy() for k in range(7)), modes)


def fit_biexponential(
    h_free: np.ndarray,
    fs: float,
    *,
    refine: bool = True,
    skip: int = 0,
    warm: BiexpFitResult | None = None,
) -> BiexpFitResult:
    """Fit a bi-exponential model to a free-form kernel.

    Parameters
    ----------
    h_free : np.ndarray
        Free-form kernel (1-D).
    fs : float
        Sampling rate in Hz.
    refine : bool
        Polish the grid optimum by golden-section search (it does not toggle the fast
        component; both the slow-only and the two-component candidates are always fitted).
    skip : int
        Number of leading samples to skip in the fit.
    warm : BiexpFitResult, optional
        Previous fit result for warm-start.

    Returns
    -------
    BiexpFitResult
    """
    # An empty kernel gets 0.3.0's "Empty" sentinel (residual inf), as documented.
    kernel = check_real_array(h_free, "h_free", ndim=1)
    if warm is not None and not (isinstance(warm, tuple) and len(warm) == 8):
        raise TypeError(f"warm must be a BiexpFitResult from an earlier fit (or None), got {type(warm).__name__} {warm!r:.60}")
    return fit_biexponentials([kernel], fs, refine=refine, skip=skip, warm=None if warm is None else [warm]).fit(0)
