"""``run_cadecon``: the InDeCa outer loop that learns the calcium kernel from the data.

Spec ``indeca.md`` §6, batched: every phase solves all subset cells as one batch on the
backend, estimates and fits the kernels of all subsets together, and finalises all cells
in memory-bounded chunks.  The host keeps only scalar bookkeeping (medians, shapes,
convergence).  Decisions on the reference's quirks are in ``docs/differences.md``; the
evidence for the defaults in ``docs/cadecon.md``.
"""

from __future__ import annotations

import datetime
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from calab._validate import (
    check_dynamic_range,
    check_instance,
    check_memory,
    check_progress,
    check_real_array,
    check_reference_range,
    check_resolution_floor,
    check_upsampling,
    describe_indices,
    flat_rows,
    power_of_two_scales,
    warn_if_milliseconds,
    warn_if_transposed,
)
from calab.cadecon import _blocks
from calab.cadecon.config import DeconConfig, ResolvedConfig
from calab.cadecon.bispectrum import bispectral_taus
from calab.cadecon.initialization import autocovariance_taus, noise_sigma
from calab.cadecon.progress import CaDeconControl, CaDeconProgress, StopRequested, make_reporter
from calab.cadecon.result import SCHEMA_VERSION, CaDeconResult, biexp_waveform
from calab.cadecon.shape import ConvergenceTracker, peak_normaliser, select_final_taus, tau_to_shape
from calab.cadecon.subsets import Subset, place_subsets

__all__ = ["CaDeconWarning", "run_cadecon", "starting_kernel"]

#: Taus used when the data give no kernel at all (the app's fallback, spec §6.3).
FALLBACK_TAUS = (0.2, 1.0)
#: Above this relative standard error of the bispectral peak time the result carries a warning.
UNCERTAIN_PEAK_TIME = 0.15
#: The free kernel spans this many starting decay constants (spec §6.3 step 4).
KERNEL_LENGTH_DECAYS = 5.0
#: Fits whose mode is one of these carry no kernel and stay out of the medians.
_NO_KERNEL_MODES = ("Degenerate", "Empty")
#: Finalisation is split into at least this many chunks (progress and pause points).
FINALIZATION_STEPS = 10
#: λ per unit of noise SD of the continuous (FISTA) solution at the learned kernel.
CONTINUOUS_LAMBDA_PER_NOISE = 1.0
#: Operator of that solve (recorded in the metadata, so the solve can be repeated exactly).
CONTINUOUS_CONV_MODE = "banded"
#: Lowest sampling rate (Hz): frames further apart than the longest decay the kernel fits
#: consider (5 s) carry no kernel shape (below about 0.06 Hz the bispectral start failed
#: with "range() arg 3 must not be zero").
MIN_FS_HZ = 0.2
#: The shortest decay (s) a start or fit of the loop produces (the bispectral search's
#: lower bound; the fits' grid starts at 0.05 s): with it the final kernel's length is
#: known to be at least ``13.8·0.02·fs`` samples before any work.
SHORTEST_DECAY_S = 0.02
#: Bytes per subset of the placement and its records (measured about 330 with tracemalloc,
#: plus the copy in the result's metadata) and per tile of the placement grid.
SUBSET_BYTES = 600.0
TILE_BYTES = 40.0
#: Bytes per free-kernel sample kept in every iteration's history record (a Python list).
HISTORY_BYTES_PER_SAMPLE = 32.0


class CaDeconWarning(UserWarning):
    """The run finished but its result deserves a look (no activity, a single cell, …)."""


# --------------------------------------------------------------------------- inputs
def _as_rows(traces: Any) -> tuple[list[np.ndarray] | np.ndarray, bool]:
    """``(rows, ragged)``: a ``(n, T)`` float64 array, or a list of 1-D float64 arrays."""
    if isinstance(traces, (list, tuple)) and traces and all(np.ndim(row) == 1 for row in traces):
        rows = [_host(row) for row in traces]
        if len({row.shape[0] for row in rows}) > 1:
            return rows, True
        return np.stack(rows), False
    array = _host(traces)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise ValueError(
            "traces must be (n_cells, n_timepoints), one 1-D trace, or a list of 1-D recordings; "
            f"got shape {array.shape}"
        )
    return array, False


def _host(array: Any) -> np.ndarray:
    from calab.backends import array_library, get_backend

    library = array_library(array)
    if library not in (None, "numpy"):
        array = get_backend(library).to_numpy(array)
    return check_real_array(array, "traces", ndim=None, dtype=np.float64)


def _check_rows(rows: Sequence[np.ndarray] | np.ndarray, fs: Any) -> float:
    fs = check_reference_range(fs, "fs", "a finite sampling rate > 0 Hz", accept=lambda v: math.isfinite(v) and v > 0)
    if len(rows) == 0:
        raise ValueError("traces has no cells; pass at least one trace")
    for index, row in enumerate(rows):
        if row.shape[-1] < 4:
            raise ValueError(f"trace {index} has {row.shape[-1]} frames; CaDecon needs at least 4 per cell")
        bad = np.flatnonzero(~np.isfinite(row))
        if bad.size:
            raise ValueError(
                f"traces contains a non-finite value (NaN or infinity) at cell {index}, frame {bad[0]}; "
                "replace or drop NaN/inf samples (for example by interpolation) before calling run_cadecon"
            )
        check_dynamic_range(row, f"traces[{index}]")
        check_resolution_floor(row, f"traces[{index}]")
    return fs


def _check_fs_range(fs: float, settings: ResolvedConfig) -> None:
    """Sampling rates at which no calcium kernel can be learned, refused before any work."""
    from calab.kernel import KERNEL_LENGTH_CONSTANT, MAX_KERNEL_SAMPLES

    if fs < MIN_FS_HZ:
        raise ValueError(
            f"invalid parameter: fs = {fs:g} Hz puts {1 / fs:g} s between frames, longer than the longest "
            f"calcium decay CaDecon fits (5 s), so the traces carry no kernel shape; run_cadecon needs "
            f"fs >= {MIN_FS_HZ:g} Hz (check that fs is in Hz, not a frame interval)"
        )
    shortest = min(SHORTEST_DECAY_S, settings.tau_decay) if settings.tau_decay is not None else SHORTEST_DECAY_S
    taps = KERNEL_LENGTH_CONSTANT * shortest * fs
    if taps > MAX_KERNEL_SAMPLES:
        raise ValueError(
            f"invalid parameter: fs = {fs:g} Hz: even the shortest decay CaDecon considers ({shortest:g} s) "
            f"implies a {math.ceil(taps)}-sample kernel, above the {MAX_KERNEL_SAMPLES}-sample limit; check "
            "the units of fs (Hz)"
        )


def _workload(n_cells: int, lengths: np.ndarray, fs: float, settings: ResolvedConfig, workers: int,
              kernel_length: int | None = None) -> dict[str, float]:
    """Estimated peak memory of a run, by part (:func:`calab._validate.check_memory`).

    Without ``kernel_length`` (before any work): the subset bookkeeping, the finalisation
    solves and outputs, and the subset solves when refinement iterations are certain.  With
    it (once the starting kernel fixed the free kernel's length): the refinement
    iterations' solves, kernel estimation, fits and history.  The parts come from the
    InDeCa functions' own estimates.
    """
    from calab.cadecon.subsets import subset_size
    from calab.indeca.biexp import estimate_memory as fit_memory
    from calab.indeca.kernel_estimation import estimate_memory as kernel_memory
    from calab.indeca.solve import estimate_memory as solve_memory
    from calab.kernel import compute_upsample_factor

    factor = compute_upsample_factor(fs, settings.upsample_target)
    n_frames = int(lengths.min())
    count = settings.num_subsets
    n_sub, t_sub = subset_size(n_cells, n_frames, count, settings.target_coverage, settings.aspect_ratio)
    tiles = max(1, n_frames // t_sub) * max(1, n_cells // n_sub)
    terms: dict[str, float] = {}

    def add(prefix: str, parts: dict[str, float]) -> None:
        for name, value in parts.items():
            terms[f"{prefix}{name}"] = value

    subset_solves = solve_memory(float(count) * n_sub * t_sub, t_sub, factor, workers)
    if kernel_length is None:
        terms[f"the placement of num_subsets={count} subsets"] = SUBSET_BYTES * count + TILE_BYTES * tiles
        chunk = math.ceil(n_cells / FINALIZATION_STEPS)
        add("the final solves: ", solve_memory(float(chunk) * lengths.max(), lengths.max(), factor, workers))
        terms["the activity and continuous outputs"] = 8.0 * float(lengths.sum()) + 4.0 * n_cells * n_frames
        refine_certain = settings.refine is True or (
            settings.refine is None and (settings.tau_decay is not None or settings.initialization != "bispectrum"))
        if refine_certain:
            add("the subset solves: ", subset_solves)
        return terms
    add("the subset solves: ", subset_solves)
    add("kernel estimation: ", kernel_memory(count, kernel_length))
    add("kernel fits: ", fit_memory(count, kernel_length))
    terms["the free kernels kept in metadata['history']"] = (
        HISTORY_BYTES_PER_SAMPLE * count * kernel_length * settings.max_iterations)
    return terms


def _config(config: DeconConfig | None, overrides: dict[str, Any]) -> tuple[DeconConfig, ResolvedConfig]:
    if config is not None and not isinstance(config, DeconConfig):
        raise TypeError(f"config must be a calab.DeconConfig, got {type(config).__name__}")
    base = config.model_dump() if config is not None else {}
    merged = DeconConfig(**{**base, **overrides})  # pydantic ValidationError names a bad field
    return merged, merged.resolved()


# --------------------------------------------------------------------------- loop state
class _Run:
    """Everything one run carries between phases."""

    def __init__(self, rows: Any, ragged: bool, fs: float, settings: ResolvedConfig, backend: Any,
                 report: Any, control: CaDeconControl | None) -> None:
        self.rows, self.ragged, self.fs, self.settings = rows, ragged, fs, settings
        self.backend, self.report, self.control = backend, report, control
        self.n_cells = len(rows)
        self.lengths = np.array([row.shape[-1] for row in rows])
        self.n_frames = int(self.lengths.min())  # subsets live on the frames all rows share
        self.warnings: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.iteration = 0
        self.planned_iterations = settings.max_iterations  # 0 once the run decides not to refine
        self.taus: tuple[float, float] | None = None
        self.rmse: float | None = None
        self.status = "running"
        self.stitched = np.zeros((self.n_cells, self.n_frames), dtype=np.float32)
        self.stitched_valid = False
        self.cell_scalars = np.full((self.n_cells, 3), np.nan)  # alpha, baseline, pve
        self.last_fits: Any = None
        self.last_kernels: list[np.ndarray | None] | None = None
        self.last_merge: dict[str, Any] | None = None
        self.backend_name: str = getattr(backend, "name", "numpy")
        self.subsets: list[dict[str, int]] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, CaDeconWarning, stacklevel=4)

    def event(self, phase: str, fraction: float = 0.0) -> None:
        """Report progress, then honour pause/stop (the loop's only checkpoints)."""
        if self.report is not None:
            self.report(self._progress(phase, fraction))
        if self.control is not None:
            def announce_pause() -> None:
                if self.report is not None:
                    self.report(self._progress(phase, fraction, "paused"))

            try:
                self.control.checkpoint(announce_pause)
            except StopRequested:
                # A stop that asks for finalisation lets a running finalisation finish.
                if not (phase == "finalization" and self.control.finalize_on_stop):
                    raise

    def _progress(self, phase: str, fraction: float, status: str | None = None) -> CaDeconProgress:
        tau_rise, tau_decay = self.taus if self.taus is not None else (None, None)
        return CaDeconProgress(self.iteration, self.planned_iterations, phase, float(fraction),
                               tau_rise, tau_decay, self.rmse, status or self.status, tuple(self.history), self.subsets)

    def window(self, subset: Subset) -> np.ndarray:
        if self.ragged:
            return np.stack([self.rows[c][subset.t_start:subset.t_stop] for c in range(subset.cell_start, subset.cell_stop)])
        return self.rows[subset.cell_start:subset.cell_stop, subset.t_start:subset.t_stop]


# --------------------------------------------------------------------------- phases
def _starting_kernel(run: _Run, subsets: list[Subset]) -> tuple[tuple[float, float], dict[str, Any]]:
    """Seed phase: the taus the first iteration starts from, and how they were found."""
    settings = run.settings
    if settings.tau_rise is not None and settings.tau_decay is not None:
        return (settings.tau_rise, settings.tau_decay), {"method": "given"}
    bispectral_info: dict[str, Any] = {}
    if settings.initialization == "bispectrum":
        found = bispectral_taus(list(run.rows) if run.ragged else run.rows, run.fs, backend=run.backend)
        bispectral_info = {"bispectrum": found.as_dict()}
        if math.isfinite(found.tau_rise):
            analysis_frame = found.decimation / run.fs
            if not found.rise_resolved:
                run.warn(f"the kernel's rise time is not resolved by these data (the fit ended at the bottom of "
                         f"its search box): it is shorter than about half a frame of the analysis rate "
                         f"({0.5 * analysis_frame:.3g} s). tau_rise was set to {found.tau_rise:.3g} s "
                         f"(metadata['initialization']['bispectrum']['rise_source'] = '{found.rise_source}'); "
                         "the decay is still measured.")
            elif found.peak_time_se > UNCERTAIN_PEAK_TIME:
                run.warn(f"the kernel's rise time is poorly resolved by these data (peak-time standard error "
                         f"{found.peak_time_se:.0%}): tau_rise {found.tau_rise:.3g} s may be far off.")
            return (found.tau_rise, found.tau_decay), {"method": "bispectrum", **bispectral_info}
        run.warn(f"the bispectral kernel estimate was not usable ({found.reason}); "
                 "starting from the autocovariance estimate and refining it instead.")
    if settings.initialization in ("autocovariance", "bispectrum"):
        prefix = np.stack([row[: run.n_frames] for row in run.rows]) if run.ragged else run.rows
        estimate = autocovariance_taus(prefix, run.fs)
        info = {"method": "autocovariance", **bispectral_info, "cells_used": estimate.n_used,
                "ar_tau_rise": None if math.isnan(estimate.tau_rise) else estimate.tau_rise,
                "ar_tau_decay": None if math.isnan(estimate.tau_decay) else estimate.tau_decay}
        if not math.isfinite(estimate.tau_decay):
            return FALLBACK_TAUS, {**info, "fallback": True}
        return estimate.starting_taus(), info
    # "peaks": the app's seed phase (spec §6.3) on the raw windowed traces.
    windows = [run.window(subset) for subset in subsets]
    seeded = _blocks.seed(np.concatenate(windows), run.fs)
    counts = np.asarray(seeded.s_counts)
    jobs, offset = [], 0
    for window in windows:
        rows = slice(offset, offset + window.shape[0])
        offset += window.shape[0]
        keep = counts[rows].sum(axis=1) > 0
        if keep.any():
            jobs.append(_blocks.KernelJob(window[keep], counts[rows][keep],
                                          np.asarray(seeded.alpha)[rows][keep], np.asarray(seeded.baseline)[rows][keep]))
    info: dict[str, Any] = {"method": "peaks", "subsets_with_onsets": len(jobs)}
    if not jobs:
        return FALLBACK_TAUS, {**info, "fallback": True}
    seed_length = max(10, min(200, math.ceil(1.5 * run.fs)))
    kernels = _blocks.estimate_kernels(jobs, seed_length, run.settings, None, run.backend)
    fits = _blocks.fit_kernels(kernels, run.fs, None)
    usable = [i for i, mode in enumerate(fits.fit_mode) if mode not in _NO_KERNEL_MODES]
    if not usable:
        return FALLBACK_TAUS, {**info, "fallback": True}
    tau_rise = float(np.median(np.asarray(fits.tau_rise)[usable]))
    tau_decay = float(np.median(np.asarray(fits.tau_decay)[usable]))
    if not 0 < tau_rise < tau_decay:
        return FALLBACK_TAUS, {**info, "fallback": True}
    return (tau_rise, tau_decay), info


def _subset_batch(run: _Run, subsets: list[Subset]) -> tuple[np.ndarray, np.ndarray | None, list[slice]]:
    """All subset windows as one ``(Σ n_sub, t_sub)`` batch, with warm counts and row slices."""
    windows = [run.window(subset) for subset in subsets]
    slices, offset = [], 0
    for window in windows:
        slices.append(slice(offset, offset + window.shape[0]))
        offset += window.shape[0]
    warm = None
    if run.stitched_valid:
        warm = np.concatenate([run.stitched[s.cell_start:s.cell_stop, s.t_start:s.t_stop] for s in subsets])
    return np.concatenate(windows), warm, slices


def _iterate(run: _Run, subsets: list[Subset], kernel_length: int, tracker: ConvergenceTracker,
             trail: list[tuple[float, float]]) -> bool:
    """One refinement iteration (spec §6.4).  Returns False when no subset yields a kernel."""
    settings, fs = run.settings, run.fs
    tau_rise, tau_decay = run.taus
    run.event("inference")
    batch, warm, slices = _subset_batch(run, subsets)
    solved = _blocks.solve(batch, tau_rise, tau_decay, fs, settings, warm, run.backend)
    counts = np.asarray(solved.s_counts, dtype=np.float32)
    alphas, baselines, pves = (np.asarray(v, dtype=np.float64) for v in (solved.alpha, solved.baseline, solved.pve))
    filtered = np.asarray(solved.filtered_trace, dtype=np.float32)

    # Stitching: later subsets overwrite earlier ones where windows overlap (as the app).
    previous = run.stitched.copy() if run.stitched_valid else None
    stitched = np.zeros_like(run.stitched)
    in_subset = np.zeros(run.n_cells, dtype=bool)
    for subset, rows in zip(subsets, slices):
        cells = slice(subset.cell_start, subset.cell_stop)
        stitched[cells, subset.t_start:subset.t_stop] = counts[rows]
        run.cell_scalars[cells] = np.stack([alphas[rows], baselines[rows], pves[rows]], axis=1)
        in_subset[cells] = True
    run.stitched, run.stitched_valid = stitched, True

    run.event("kernel-update")
    jobs, job_subsets = [], []
    for index, rows in enumerate(slices):
        valid = (alphas[rows] != 0) & (counts[rows].sum(axis=1) > 0)
        if valid.any():
            jobs.append(_blocks.KernelJob(filtered[rows][valid], counts[rows][valid], alphas[rows][valid], baselines[rows][valid]))
            job_subsets.append(index)
    if not jobs:
        return False
    warm_kernels = None
    if run.last_kernels is not None:
        warm_kernels = [run.last_kernels[i] for i in job_subsets]
    kernels = _blocks.estimate_kernels(jobs, kernel_length, settings, warm_kernels, run.backend)
    warm_fits = None
    if run.last_fits is not None:
        warm_fits = [run.last_fits[i] for i in job_subsets]
    fits = _blocks.fit_kernels(kernels, fs, warm_fits)
    all_kernels: list[np.ndarray | None] = [None] * len(subsets)
    all_fits: list[Any] = [None] * len(subsets)
    for position, index in enumerate(job_subsets):
        all_kernels[index] = np.asarray(kernels[position], dtype=np.float32)
        all_fits[index] = fits.fit(position)
    run.last_kernels, run.last_fits = all_kernels, all_fits

    run.event("merge")
    usable = [f for f in all_fits if f is not None and f.fit_mode not in _NO_KERNEL_MODES]
    subset_records = [
        None if f is None else {
            "subset": i, "tau_rise": f.tau_rise, "tau_decay": f.tau_decay, "beta": f.beta, "residual": f.residual,
            "tau_rise_fast": f.tau_rise_fast, "tau_decay_fast": f.tau_decay_fast, "beta_fast": f.beta_fast,
            "fit_mode": f.fit_mode, "h_free": all_kernels[i].tolist(),
        }
        for i, f in enumerate(all_fits)
    ]
    record: dict[str, Any] = {"iteration": run.iteration, "subsets": subset_records,
                              "n_degenerate": sum(1 for f in all_fits if f is not None and f.fit_mode in _NO_KERNEL_MODES)}
    if usable:
        merged = {name: float(np.median([getattr(f, name) for f in usable]))
                  for name in ("tau_rise", "tau_decay", "beta", "residual", "tau_rise_fast", "tau_decay_fast", "beta_fast")}
        new_taus = (merged["tau_rise"], merged["tau_decay"])
        run.rmse = tracker.update(run.iteration, new_taus)
        r2 = [1 - f.residual / max(float(np.sum(all_kernels[i].astype(np.float64) ** 2)), 1e-30)
              for i, f in enumerate(all_fits) if f is not None and f.fit_mode not in _NO_KERNEL_MODES]
        degenerate = not 0 < new_taus[0] < new_taus[1]
        if not degenerate:
            trail.append(new_taus)
            run.taus = new_taus
            t_peak, fwhm = tau_to_shape(*new_taus)
        else:
            t_peak = fwhm = None
        record.update(merged, t_peak=t_peak, fwhm=fwhm, kernel_rmse=run.rmse,
                      rise_unresolved=bool(new_taus[0] <= 1.05 * max(1 / fs, 0.005)),
                      kernel_fit_r2=float(np.median(r2)))
        run.last_merge = merged
    else:
        record.update(tau_rise=None, tau_decay=None, kernel_rmse=None)
    record["median_pve"] = float(np.median(pves)) if pves.size else None
    if previous is not None:
        cells = np.flatnonzero(in_subset)
        new, old = stitched[cells].astype(np.float64), previous[cells].astype(np.float64)
        scale = np.maximum(np.linalg.norm(new, axis=1), np.linalg.norm(old, axis=1))
        keep = scale >= 1e-6
        record["trace_stability"] = (
            float(np.median(np.linalg.norm(new - old, axis=1)[keep] / (scale[keep] + 1e-9))) if keep.any() else None
        )
    else:
        record["trace_stability"] = None
    record["converged"] = tracker.converged
    run.history.append(record)
    run.event("merge", 1.0)  # the iteration's record is now in the event's history
    return bool(usable)


def _finalize(run: _Run, taus: tuple[float, float]) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Solve every cell on its full trace with ``taus`` (spec §6.7), in chunks."""
    settings = run.settings
    n = run.n_cells
    chunk = max(1, math.ceil(n / FINALIZATION_STEPS))
    alphas, baselines, pves = np.empty(n), np.empty(n), np.empty(n)
    counts: list[np.ndarray] = []
    run.event("finalization", 0.0)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        if run.ragged:
            block = run.rows[start:stop]
            warm = [np.concatenate([run.stitched[c], np.zeros(run.lengths[c] - run.n_frames, np.float32)])
                    for c in range(start, stop)] if run.stitched_valid else None
        else:
            block = run.rows[start:stop]
            warm = run.stitched[start:stop] if run.stitched_valid else None
        solved = _blocks.solve(block, taus[0], taus[1], run.fs, settings, warm, run.backend)
        if run.ragged:
            counts.extend(np.asarray(c, dtype=np.float32) for c in solved.s_counts)
        else:
            counts.append(np.asarray(solved.s_counts, dtype=np.float32))
        alphas[start:stop], baselines[start:stop], pves[start:stop] = solved.alpha, solved.baseline, solved.pve
        run.event("finalization", stop / n)
    activity = counts if run.ragged else np.concatenate(counts)
    return activity, alphas, baselines, pves


def _continuous(run: _Run, taus: tuple[float, float], report: bool) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """FISTA (non-negative, the CaTune solver) at the learned kernel, λ scaled to each cell's noise.

    Returns the activity and, per cell, the least-squares fit of the solver's working trace
    (the trace less its rolling baseline) by ``alpha·(K activity) + baseline`` over the
    interior, with its PVE (:func:`_fit_scalars`).  With ``report`` the solve is the
    finalisation phase: it reports its progress and honours pause and stop per cell chunk.
    """
    from calab.deconvolution import run_deconvolution_full

    def solve(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lam = CONTINUOUS_LAMBDA_PER_NOISE * noise_sigma(block)
        # The banded AR(2) operator is O(T) per iteration and solves the same problem as the
        # FFT convolution (relative difference ~1e-3); at 120-160 Hz it is 2-6x faster.
        out = run_deconvolution_full(block, run.fs, taus[0], taus[1], lam, conv_mode=CONTINUOUS_CONV_MODE,
                                     backend=run.backend_name, progress=False)
        activity = np.asarray(out.activity, dtype=np.float32)
        return (activity, *_fit_scalars(block, activity, np.asarray(out.reconvolution, dtype=np.float64),
                                        taus, run.fs))

    n = run.n_cells
    if report:
        run.event("finalization", 0.0)
    if run.ragged:
        parts = []
        for index, row in enumerate(run.rows):
            parts.append(solve(row.reshape(1, -1)))
            if report:
                run.event("finalization", (index + 1) / n)
        return ([p[0][0] for p in parts], *(np.concatenate([p[i] for p in parts]) for i in (1, 2, 3)))
    # Cell chunks: progress and pause points, and only one chunk's float64 solution and fit
    # in memory at a time.  Each cell's solution does not depend on the chunking; chunks of
    # at least the backend's minimum keep its lanes full.
    chunk = max(int(run.backend.min_chunk_cells()), math.ceil(n / FINALIZATION_STEPS))
    activity = np.empty(run.rows.shape, dtype=np.float32)
    alphas, baselines, pves = np.empty(n), np.empty(n), np.empty(n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        activity[start:stop], alphas[start:stop], baselines[start:stop], pves[start:stop] = solve(run.rows[start:stop])
        if report:
            run.event("finalization", stop / n)
    return activity, alphas, baselines, pves


def _fit_scalars(traces: np.ndarray, activity: np.ndarray, reconvolution: np.ndarray, taus: tuple[float, float],
                 fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(alphas, baselines, pves)`` of the continuous solution, each ``(n_cells,)`` float64.

    The InDeCa definitions (spec ``indeca.md`` §2.2 S7 and §2.3) applied to the continuous
    solve: ``alpha``, ``baseline`` minimise ``Σ (w − alpha·c − baseline)²`` over the interior
    ``[pad, T − pad)``, ``pad = min(ceil(2·τd·fs), T // 4)``, where ``c = K activity`` (the
    peak-normalised kernel's response, float64) and ``w`` is the working trace the solver fit
    (``traces`` less the rolling baseline it removed, ``reconvolution − c``); a negative
    slope or an activity without variation gives ``alpha = 0`` and ``baseline = mean(w)``.
    ``pve = 1 − SS_res/SS_tot`` over the same samples (0 for a flat ``w``).  ``alpha`` is
    then the factor between ``activity`` and the trace (about 1, a little above where the
    L1 penalty shrank the events) and ``baseline`` a small residual offset, as in 0.3.0.

    Parameters
    ----------
    traces, reconvolution : np.ndarray, shape (n_cells, T), float64
    activity : np.ndarray, shape (n_cells, T), float32
    """
    from scipy.signal import lfilter

    from calab.kernel import ar2_coefficients, ar2_impulse_peak

    tau_rise, tau_decay = taus
    g1, g2 = ar2_coefficients(tau_rise, tau_decay, fs)
    gain = 1.0 / ar2_impulse_peak(g1, g2, tau_decay, fs)
    # the banded operator: h[0] = 0, h[t] = gain·c_{t-1}, c_t = g1·c_{t-1} + g2·c_{t-2}
    response = lfilter([0.0, gain], [1.0, -g1, -g2], activity.astype(np.float64), axis=-1)
    work = traces - (reconvolution - response)
    n_frames = traces.shape[-1]
    pad = min(math.ceil(2.0 * tau_decay * fs), n_frames // 4)
    if n_frames - 2 * pad > 0:
        work, response = work[:, pad:n_frames - pad], response[:, pad:n_frames - pad]
    w_mean, c_mean = work.mean(axis=1), response.mean(axis=1)
    w_dev, c_dev = work - w_mean[:, None], response - c_mean[:, None]
    spread = np.einsum("ij,ij->i", c_dev, c_dev)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.einsum("ij,ij->i", c_dev, w_dev) / spread
    alpha = np.where((spread > 0) & np.isfinite(alpha) & (alpha > 0), alpha, 0.0)
    baseline = w_mean - alpha * c_mean
    residual = w_dev - alpha[:, None] * c_dev
    total = np.einsum("ij,ij->i", w_dev, w_dev)
    with np.errstate(divide="ignore", invalid="ignore"):
        pve = 1.0 - np.einsum("ij,ij->i", residual, residual) / total
    pve = np.where(total > 1e-20, pve, 0.0)
    return alpha, baseline, pve


# --------------------------------------------------------------------------- entry point
def run_cadecon(
    traces: Any,
    fs: float,
    *,
    config: DeconConfig | None = None,
    backend: str | None = None,
    progress: Any = None,
    control: CaDeconControl | None = None,
    **overrides: Any,
) -> CaDeconResult:
    """Learn the calcium kernel from the traces, then deconvolve every cell with it.

    What it does, in order: it estimates the kernel's rise and decay time constants from
    the shape that all cells' transients share (by default from the traces' third-order
    statistics, the bispectrum, with no spike inference at all); it can then refine that
    estimate by rounds of spike inference on windows of the recording and kernel fits
    (not by default after the bispectral estimate); finally it solves every cell at the
    learned kernel.  The browser app CaDecon runs the same rounds from another first
    estimate (``initialization="peaks"``, always refined).

    What comes back, and where: the learned time constants are
    ``result.metadata["tau_rise"]`` and ``result.metadata["tau_decay"]`` (seconds; the
    waveform is ``result.kernel_slow``); the inferred activity is ``result.activity``
    (by default the continuous, non-negative solution at the learned kernel, λ = each
    cell's noise SD; whole-event counts only on request: ``counts=True`` puts them in
    ``metadata["counts"]``, ``activity="counts"`` in ``result.activity``); per-cell scale,
    offset and the fraction of each trace's variance the fit explains are ``alphas``,
    ``baselines`` and ``pves`` (of the returned activity, or of the counts when they were
    solved: ``metadata["alphas_source"]``).  In Jupyter the result displays as a summary table, and
    ``result.plot(traces)`` draws the kernel and a few cells (``calab[plot]``).

    When to worry: read ``result.metadata["warnings"]``.  It says when the rise is too fast
    to be measured at this frame rate (the decay is still reliable), when the data show no
    transients to learn from (a fixed fallback kernel was used), or when a single cell was
    given.  ``metadata["converged"]`` is True when the kernel is final (see
    ``docs/cadecon.md``); False after refinement rounds that ran out with the kernel still
    changing.

    Parameters
    ----------
    traces : array_like, shape (n_cells, n_timepoints), or list of 1-D arrays
        Raw fluorescence traces (any offset), NumPy/CuPy/JAX.  A list of 1-D recordings of
        different lengths (several sessions of one population) shares one kernel; subsets
        are then placed on the frames all recordings have.
    fs : float
        Sampling rate in Hz.
    config : DeconConfig, optional
        Settings; ``None`` fields take the native defaults (``calab.cadecon.NATIVE_DEFAULTS``).
    backend : {"numpy", "jax", "cupy"}, optional
        Compute backend (default: ``calab.use_backend`` → ``CALAB_BACKEND`` → the input's
        array library → auto).
    progress : callable, bool or None
        A callable receiving :class:`CaDeconProgress` events; True for a bar (iteration,
        phase, current taus); False for silence; None (default): a bar on a terminal or
        in a notebook (a widget there).
    control : CaDeconControl, optional
        Pause, resume or stop the run from another thread (checked at phase boundaries).
    **overrides
        Any :class:`DeconConfig` field, applied over ``config``.

    Returns
    -------
    CaDeconResult
        ``activity`` float32 ``(n_cells, n_timepoints)`` (a list for ragged input), per-cell
        ``alphas``/``baselines``/``pves`` float64, the learned kernel waveforms, ``fs`` and
        ``metadata``: the learned ``tau_rise``/``tau_decay``, how the kernel was found
        (``initialization``), ``converged``, ``warnings``, ``elapsed_s``, per-round
        ``history`` and the settings used (every key: ``docs/cadecon.md``).

    Raises
    ------
    pydantic.ValidationError
        A bad configuration value or an unknown setting (names the field; booleans are
        not numbers).
    ValueError
        NaN/inf samples (names cell and frame), an empty input, a bad ``fs`` (below
        0.2 Hz, or so high that the shortest kernel exceeds 2**20 samples) or an
        ``upsample_target`` above 10 kHz (when it upsamples at all).
    TypeError
        ``progress`` not None/bool/callable, ``control`` not a :class:`CaDeconControl`.
    calab._validate.MemoryLimitError
        (a ``MemoryError`` and a ``ValueError``) The estimated memory of the run (subset
        count, upsampling, outputs; once the starting kernel is known, the refinement
        iterations' kernel estimation and fits) exceeds the allowance
        (``CALAB_MEMORY_LIMIT``, default 8 GiB), checked before that work starts.

    Warns
    -----
    CaDeconWarning
        When no kernel could be learned (no activity), the rise is not resolved, with a
        single cell, for cells with no variation (constant traces: zero activity, named), or
        when a stop came before any cell was solved (all listed in ``metadata["warnings"]``).
    SuspiciousInputWarning
        An array with far more cells than frames (transposed?) or starting time constants
        that look like milliseconds.

    Notes
    -----
    Deterministic for a given ``seed`` on a given backend.  Ctrl-C propagates
    ``KeyboardInterrupt`` and returns nothing.  Traces whose largest deviation from their
    median is below ``2**-16`` are multiplied by an exact power of two before the solve
    and their amplitudes (continuous activity, alphas, baselines) divided by it after, so
    a population scaled by 1e-30 gives the same events as at unit scale.
    """
    from calab.backends import resolve_backend
    from calab.indeca.solve import flat_trace_warnings
    from calab.kernel import compute_upsample_factor

    progress = check_progress(progress)
    control = check_instance(control, "control", CaDeconControl,
                             hint="create one with calab.CaDeconControl() and call its stop() from another thread")
    decon_config, settings = _config(config, overrides)
    rows, ragged = _as_rows(traces)
    fs = _check_rows(rows, fs)
    _check_fs_range(fs, settings)
    factor = compute_upsample_factor(fs, settings.upsample_target)
    check_upsampling(fs, factor, f"upsample_target={settings.upsample_target} (a factor of {factor})")
    if not ragged:
        warn_if_transposed(rows.shape, stacklevel=3)
    warn_if_milliseconds(settings.tau_rise, settings.tau_decay, stacklevel=3)
    chosen = resolve_backend(backend, traces if not isinstance(traces, (list, tuple)) else None)
    lengths = np.array([row.shape[-1] for row in rows])
    workers = max(1, int(getattr(chosen, "workers", 1))) if chosen.host_arrays else 1
    check_memory(_workload(len(rows), lengths, fs, settings, workers),
                 f"run_cadecon on {len(rows)} cells x {int(lengths.max())} frames at fs={fs:g} Hz",
                 advice="fewer subsets via num_subsets, a lower upsample_target, or fewer cells per call")
    # Tiny-valued rows (|x - median| < 2**-16) are multiplied by an exact power of two; every
    # output is scale-free or scales with the data, and amplitudes are divided back below.
    scales = power_of_two_scales(rows)
    if np.any(scales != 1.0):
        rows = [row * scale for row, scale in zip(rows, scales)] if ragged else rows * scales[:, None]
    report, close = make_reporter(progress, settings.max_iterations)
    run = _Run(rows, ragged, fs, settings, chosen, report, control)
    started = time.perf_counter()
    if run.n_cells == 1:
        run.warn("run_cadecon got a single cell: the kernel is learned from one trace, which is "
                 "less reliable than from a population; check metadata['history'].")
    flat = flat_rows(rows)
    if flat:
        run.warn(f"cell{'s' if len(flat) > 1 else ''} {describe_indices(flat)} ha{'ve' if len(flat) > 1 else 's'} "
                 "no variation (a constant trace at float32 precision): no activity is found there, its "
                 "activity is zero.")
    try:
        with flat_trace_warnings(False):  # cells are named above, not subset rows
            result = _run(run, decon_config)
    finally:
        close()
    if result.metadata.get("stopped") and not result.metadata.get("finalized") and not result.metadata.get("cells_with_results"):
        message = ("the run was stopped before any cell was solved: activity is all zero and alphas, baselines "
                   "and pves are NaN (no result), metadata['cells_with_results'] is empty.")
        result.metadata["warnings"].append(message)
        warnings.warn(message, CaDeconWarning, stacklevel=2)
    result.metadata["elapsed_s"] = time.perf_counter() - started
    return _unscale(result, scales, ragged)


def _unscale(result: CaDeconResult, scales: np.ndarray, ragged: bool) -> CaDeconResult:
    """Amplitudes of rescaled rows back in the caller's units (exact division by powers of two)."""
    if np.all(scales == 1.0):
        return result

    def back(activity: Any) -> Any:
        if ragged or isinstance(activity, list):
            return [np.asarray(row / scale, dtype=np.float32) for row, scale in zip(activity, scales)]
        return np.asarray(activity / scales[:, None], dtype=np.float32)

    metadata = dict(result.metadata)
    activity = result.activity
    if metadata.get("activity_kind") == "continuous":
        activity = back(activity)
    elif metadata.get("continuous_activity") is not None:
        metadata["continuous_activity"] = back(metadata["continuous_activity"])
    # An alpha of the continuous solution is a ratio of two amplitudes: it does not scale.
    alphas = result.alphas if metadata.get("alphas_source") == "continuous" else result.alphas / scales
    return result._replace(activity=activity, alphas=alphas, baselines=result.baselines / scales, metadata=metadata)


def starting_kernel(
    traces: Any,
    fs: float,
    *,
    config: DeconConfig | None = None,
    backend: str | None = None,
    quiet: bool = False,
    **overrides: Any,
) -> tuple[tuple[float, float], dict[str, Any]]:
    """The kernel :func:`run_cadecon` starts from: with its default settings, the kernel it returns.

    Runs only the first phase of :func:`run_cadecon` (no spike inference, no refinement
    rounds, no final pass over the cells), so it costs a fraction of the full run.  With
    the defaults this is the kernel fitted to the traces' bispectrum; when the data carry no
    usable third-order signal it is the autocovariance estimate (a warning in ``info``),
    which ``run_cadecon`` would then refine.

    Parameters
    ----------
    traces, fs, config, backend, **overrides
        As for :func:`run_cadecon`.
    quiet : bool
        Only list the warnings in ``info`` instead of also issuing them as
        :class:`CaDeconWarning` (for callers on another thread, where warning filters
        cannot be scoped).

    Returns
    -------
    (tau_rise, tau_decay) : tuple of float
        Time constants in seconds.
    info : dict
        How they were found (``method``, the estimator's details, ``fallback`` when the
        data gave no kernel and fixed taus were used) and the run's ``warnings``.
    """
    from calab.backends import resolve_backend

    _, settings = _config(config, overrides)
    rows, ragged = _as_rows(traces)
    fs = _check_rows(rows, fs)
    if not ragged and not quiet:
        warn_if_transposed(rows.shape, stacklevel=3)
    chosen = resolve_backend(backend, traces if not isinstance(traces, (list, tuple)) else None)
    scales = power_of_two_scales(rows)  # as run_cadecon: tiny values scaled (the taus are scale-free)
    if np.any(scales != 1.0):
        rows = [row * scale for row, scale in zip(rows, scales)] if ragged else rows * scales[:, None]
    run = _Run(rows, ragged, fs, settings, chosen, None, None)
    if quiet:
        run.warn = run.warnings.append  # type: ignore[method-assign]
    subsets = place_subsets(run.n_cells, run.n_frames, settings.num_subsets, settings.target_coverage,
                            settings.aspect_ratio, settings.seed)
    taus, info = _starting_kernel(run, subsets)
    return (float(taus[0]), float(taus[1])), {**info, "warnings": list(run.warnings)}


def _run(run: _Run, decon_config: DeconConfig) -> CaDeconResult:
    settings, fs = run.settings, run.fs
    subsets = place_subsets(run.n_cells, run.n_frames, settings.num_subsets, settings.target_coverage,
                            settings.aspect_ratio, settings.seed)
    run.subsets = [s._asdict() for s in subsets]
    stopped, finalize = False, True
    start_taus, start_info = (None, None), {}
    tracker: ConvergenceTracker | None = None
    trail: list[tuple[float, float]] = []
    try:
        run.event("initialization")
        start_taus, start_info = _starting_kernel(run, subsets)
        run.taus = start_taus
        kernel_length = max(10, math.ceil(KERNEL_LENGTH_DECAYS * start_taus[1] * fs))
        tracker = ConvergenceTracker(settings.convergence_tol, settings.patience, settings.min_iterations, fs, start_taus)
        refine = settings.refine if settings.refine is not None else start_info.get("method") != "bispectrum"
        start_info["refined"] = refine
        run.planned_iterations = settings.max_iterations if refine else 0
        if refine:  # the free kernel's length is known now: check the iterations' memory first
            workers = max(1, int(getattr(run.backend, "workers", 1))) if run.backend.host_arrays else 1
            check_memory(_workload(run.n_cells, run.lengths, fs, settings, workers, kernel_length),
                         f"run_cadecon's refinement iterations ({settings.num_subsets} subsets, "
                         f"{kernel_length}-sample free kernels at fs={fs:g} Hz)",
                         advice="fewer subsets via num_subsets, or refine=False to keep the starting kernel")
        for iteration in range(1, run.planned_iterations + 1):
            run.iteration = iteration
            if not _iterate(run, subsets, kernel_length, tracker, trail):
                run.warn("no subset yielded a kernel (no activity found in the subset cells); "
                         "the loop stopped and the cells were solved with the current kernel.")
                break
            if tracker.converged:
                run.status = "converged"
                break
    except StopRequested:
        stopped, finalize = True, run.control.finalize_on_stop
        run.status = "stopping"
    final_taus = select_final_taus(trail, settings.selection_window, run.taus or start_taus)
    if not trail and start_info.get("fallback"):
        run.warn("no activity was found to learn a kernel from; the result uses the fallback kernel "
                 f"tau_rise {FALLBACK_TAUS[0]} s / tau_decay {FALLBACK_TAUS[1]} s and is unlikely to be meaningful.")
    continuous = None
    if final_taus[0] is None:  # stopped before a starting kernel existed
        finalize = False
    if finalize:
        run.taus = final_taus
        try:
            # The InDeCa counts of every cell are most of a run's time: solved only when asked
            # for; otherwise the scalars describe the continuous solution (docs/differences.md).
            if settings.solve_counts:
                activity, alphas, baselines, pves = _finalize(run, final_taus)
                continuous = _continuous(run, final_taus, report=False)[0]
            else:
                continuous, alphas, baselines, pves = _continuous(run, final_taus, report=True)
                activity = None
        except StopRequested:  # stop(finalize=False) while finalising
            stopped, finalize = True, False
    if not finalize:
        activity, alphas, baselines, pves = _subset_stage(run)
    found = activity if activity is not None else continuous
    if finalize and not any(np.any(np.asarray(a) > 0) for a in (found if run.ragged else [found])):
        run.warn("no events were detected in any cell; activity is all zeros.")
    run.status = "done"
    if run.report is not None:
        run.report(run._progress("done", 1.0))
    return _assemble(run, decon_config, activity, continuous, alphas, baselines, pves, final_taus, start_taus,
                     start_info, tracker, subsets, stopped, finalize)


def _subset_stage(run: _Run) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Results without finalisation: stitched subset counts, scalars from the last iteration."""
    activity: Any = np.zeros((run.n_cells, run.n_frames), dtype=np.float32)
    if run.stitched_valid:
        activity = run.stitched.copy()
    if run.ragged:
        activity = [np.concatenate([activity[c], np.zeros(run.lengths[c] - run.n_frames, np.float32)]) for c in range(run.n_cells)]
    elif activity.shape[1] != run.rows.shape[1]:  # pragma: no cover - dense rows share T
        raise AssertionError
    scalars = run.cell_scalars
    return activity, scalars[:, 0].copy(), scalars[:, 1].copy(), scalars[:, 2].copy()


def _assemble(run: _Run, decon_config: DeconConfig, activity: Any, continuous: Any, alphas: np.ndarray,
              baselines: np.ndarray, pves: np.ndarray, final_taus: tuple[float, float], start_taus: Any,
              start_info: dict[str, Any], tracker: ConvergenceTracker | None, subsets: list[Subset],
              stopped: bool, finalized: bool) -> CaDeconResult:
    import calab

    settings, fs = run.settings, run.fs
    merged = run.last_merge
    fitted = merged is not None
    # Quirk (a), fixed: the taus reported are those used for finalisation; the last
    # iteration's subset medians are kept under their own keys.
    # Without refinement the starting kernel is the result: report it, peak-normalised.
    unrefined = not fitted and not start_info.get("refined", True) and final_taus[0] is not None
    tau_rise, tau_decay = (final_taus if fitted or unrefined else (None, None))
    beta = merged["beta"] if fitted else (peak_normaliser(*final_taus) if unrefined else None)
    fast = (merged["tau_rise_fast"], merged["tau_decay_fast"], merged["beta_fast"]) if fitted else (None, None, None)
    # Quirk (b), fixed: h_free of the lowest-index subset that produced a kernel.
    h_free: list[float] = []
    if run.last_kernels is not None:
        h_free = next((k.tolist() for k in run.last_kernels if k is not None), [])
    kernel_slow = biexp_waveform(tau_rise, tau_decay, beta, fs)
    kernel_fast = np.zeros(0, dtype=np.float32)
    if fitted and fast[1] > 0 and fast[2] != 0:
        kernel_fast = biexp_waveform(*fast, fs)
    refined_converged = bool(tracker is not None and tracker.converged)
    direct = (not start_info.get("refined", True) and not stopped and final_taus[0] is not None
              and not start_info.get("fallback"))
    chosen_activity, other = activity, continuous
    if settings.activity == "continuous" and continuous is not None:
        chosen_activity, other = continuous, activity
    metadata: dict[str, Any] = {
        "tau_rise": tau_rise, "tau_decay": tau_decay, "beta": beta,
        "tau_rise_fast": fast[0], "tau_decay_fast": fast[1], "beta_fast": fast[2],
        "residual": merged["residual"] if fitted else None,
        "h_free": h_free,
        # Quirk (c), fixed: refinement iterations run (the app adds one for its seed record).
        "num_iterations": len(run.history),
        # True when the kernel is final: refinement rounds stopped changing it, or none
        # were planned because the starting kernel is the result (0 rounds; docs/cadecon.md).
        "converged": refined_converged or direct,
        "converged_at_iteration": tracker.converged_at if refined_converged else (0 if direct else None),
        "schema_version": SCHEMA_VERSION,
        "calab_version": calab.__version__,
        "solver_version": calab.__version__,
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        # native-loop extras
        "last_iteration_tau_rise": merged["tau_rise"] if fitted else None,
        "last_iteration_tau_decay": merged["tau_decay"] if fitted else None,
        "start_tau_rise": start_taus[0], "start_tau_decay": start_taus[1],
        "initialization": start_info,
        "history": run.history,
        "subsets": [s._asdict() for s in subsets],
        "activity_kind": "continuous" if chosen_activity is continuous else "counts",
        # what alphas/baselines/pves describe: the InDeCa counts (0.3.0), the continuous
        # solution (when no counts were solved), or the last subset solves (not finalised)
        "alphas_source": "subsets" if not finalized else ("counts" if activity is not None else "continuous"),
        "continuous_activity" if chosen_activity is not continuous else "counts": other,
        "continuous_lambda_per_noise": CONTINUOUS_LAMBDA_PER_NOISE,
        "continuous_conv_mode": CONTINUOUS_CONV_MODE,
        "stopped": stopped,
        "finalized": finalized,
        "warnings": list(run.warnings),
        "backend": run.backend_name,
        "config": settings.as_dict(),
        "upsample_factor": _upsample_factor(fs, settings.upsample_target),
    }
    if not finalized:
        metadata["cells_with_results"] = np.flatnonzero(np.isfinite(alphas)).tolist()
    return CaDeconResult(chosen_activity, np.asarray(alphas, dtype=np.float64), np.asarray(baselines, dtype=np.float64),
                         np.asarray(pves, dtype=np.float64), kernel_slow, kernel_fast, float(fs), metadata)


def _upsample_factor(fs: float, target: int) -> int:
    from calab.kernel import compute_upsample_factor

    return compute_upsample_factor(fs, target)
