"""``solve_trace`` / ``solve_traces``: the single-trace InDeCa pipeline, batched over cells.

Spec ``indeca.md`` §2: upsample → band-pass (optional) → rolling-baseline removal → scale
loop of (box-constrained FISTA at the upsampled rate → peak normalisation → threshold
search) → counts at the original rate.  All cells of one length run as one
``(n_cells, T·u)`` batch; per-cell state of the scale loop (current amplitude, best round,
done flag) lives in arrays and finished cells are dropped from later rounds.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from calab.indeca.filtering import filter_batch, noise_sigma
from calab.indeca.resample import (
    average_downsample,
    binary_to_counts,
    counts_to_binary,
    upsample_factor_ok,
    upsample_traces,
)
from calab.indeca.results import SolveTraceResult, SolveTracesResult
from calab.indeca.threshold import interior_bounds, search_thresholds
from calab._validate import (
    FlatTraceWarning,
    check_bool,
    check_iterations,
    check_kernel_parameters,
    check_memory,
    check_real_array,
    check_reference_range,
    check_rows,
    check_upsampling,
    describe_indices,
    normalise_rows,
)

__all__ = ["solve_trace", "solve_traces", "estimate_memory", "MAX_SCALE_ROUNDS", "SCALE_RTOL"]

MAX_SCALE_ROUNDS = 10
#: Whether solve_traces warns about flat traces (run_cadecon names the cells itself), and
#: the stack level that points at the user's call.
_WARN_FLAT: contextvars.ContextVar[bool] = contextvars.ContextVar("calab_warn_flat", default=True)
_WARN_STACKLEVEL: contextvars.ContextVar[int] = contextvars.ContextVar("calab_warn_stacklevel", default=2)
SCALE_RTOL = 0.05
#: working-set budget of one row block (bytes), before the free-memory cap
BLOCK_BUDGET = 1 << 30
#: bytes per upsampled sample a block needs (a dozen float32 arrays and float64 temporaries)
BYTES_PER_SAMPLE = 96


def estimate_memory(n_samples: float, longest: float, factor: int, workers: int = 1) -> dict[str, float]:
    """Estimated peak bytes of :func:`solve_traces`, by part (for :func:`calab._validate.check_memory`).

    Parameters
    ----------
    n_samples : float
        Samples over all traces, at the original rate.
    longest : float
        Samples of the longest trace (one row is the smallest block).
    factor : int
        Upsampling factor.
    workers : int
        Blocks solved at the same time (worker threads on the CPU).

    Returns
    -------
    dict of str to float
        ``BYTES_PER_SAMPLE`` per upsampled sample of the blocks in flight (each at most
        ``BLOCK_BUDGET`` bytes unless one row is larger; measured 70-96 bytes per sample
        with tracemalloc), and the float64 inputs and float32 outputs.
    """
    if n_samples <= 0:
        return {}
    block = max(float(longest) * factor, BLOCK_BUDGET / BYTES_PER_SAMPLE)
    working = BYTES_PER_SAMPLE * min(float(n_samples) * factor, max(1, workers) * block)
    return {"upsampled working arrays": working, "traces and results": 24.0 * float(n_samples)}


def _check_scalars(tau_rise, tau_decay, fs, upsample_factor, max_iters, tol, lambda_) -> tuple:
    fs, tau_rise, tau_decay, lambda_ = check_kernel_parameters(fs, tau_rise, tau_decay, lambda_)
    factor = upsample_factor_ok(upsample_factor)
    check_upsampling(fs, factor)
    iters = check_iterations(max_iters, "max_iters")
    tol_value = check_reference_range(tol, "tol", "finite and >= 0", accept=lambda v: math.isfinite(v) and v >= 0)
    return float(tau_rise), float(tau_decay), float(fs), factor, iters, tol_value, float(lambda_)


@contextlib.contextmanager
def flat_trace_warnings(enabled: bool, stacklevel: int = 2) -> Iterator[None]:
    """Switch :func:`solve_traces`' flat-trace warning for calls in this context.

    ``run_cadecon`` solves windows of the traces and names flat cells itself; a
    :class:`FlatTraceWarning` naming window rows would only confuse.
    """
    enabled_token = _WARN_FLAT.set(enabled)
    level_token = _WARN_STACKLEVEL.set(stacklevel)
    try:
        yield
    finally:
        _WARN_STACKLEVEL.reset(level_token)
        _WARN_FLAT.reset(enabled_token)


def _host(array: Any) -> Any:
    """Host copy of a device array (CuPy arrays have ``get()``; NumPy/JAX convert directly)."""
    fetch = getattr(array, "get", None)
    return fetch() if callable(fetch) and not isinstance(array, dict) else array


def _set_rows(array: Any, rows: np.ndarray, values: Any) -> Any:
    """``array[rows] = values`` for mutable arrays, ``array.at[rows].set(values)`` for JAX."""
    if hasattr(array, "at"):
        return array.at[rows].set(values)
    array[rows] = values
    return array


def _solve_block(backend: Any, raw: np.ndarray, warm: np.ndarray | None, params: dict) -> dict:
    """Whole pipeline for a dense ``(B, T)`` block of equal-length traces; host outputs."""
    from calab.engine import AR2, Problem, StoppingRule, apply_operator, solve_block
    from calab.filters import rolling_baseline

    xp = backend.xp
    tau_rise, tau_decay, fs = params["tau_rise"], params["tau_decay"], params["fs"]
    factor = params["factor"]
    fs_up = fs * factor
    rows, length = raw.shape
    n = length * factor
    with backend.precision_scope():
        raw_d = backend.asarray(raw.astype(np.float32), dtype=np.float32)
        x_up = upsample_traces(xp, raw_d, factor)
        work = x_up
        if params["hp"] or params["lp"]:
            work = filter_batch(backend, work, tau_rise, tau_decay, fs_up, params["hp"], params["lp"])
        work = (work - rolling_baseline(backend, work, tau_decay, fs_up)).astype(xp.float32)

        pad = min(math.ceil(2.0 * tau_decay * fs_up), n // 4)
        lo, hi = interior_bounds(n, pad)
        inner = work[:, lo:hi]
        spread = np.asarray(backend.to_numpy(xp.max(inner, axis=1)), dtype=np.float64) - np.asarray(
            backend.to_numpy(xp.min(inner, axis=1)), dtype=np.float64
        )
        alpha_est = np.where(spread < 1e-10, 1.0, spread)

        warm_up = None
        if warm is not None:
            warm_up = backend.asarray(counts_to_binary(warm, factor, n), dtype=np.float32)
        sigma = None
        if params["noise_constrained"]:
            sigma = noise_sigma(backend, raw_d, factor, tau_rise, tau_decay, fs_up, params["hp"], params["lp"])

        # The engine's problem description of InDeCa's solve (ENGINE_API.md): the
        # peak-normalised banded AR(2) operator at fs_up, box [0, 1], no baseline, the
        # InDeCa stopping rule (cap 50·ceil(max_iters/50), relative tol after iteration 5).
        operator = AR2.from_taus(tau_rise, tau_decay, fs_up)
        problem = Problem(operator, StoppingRule.indeca(params["max_iters"], params["tol"]), constraint="box01")

        def forward(batch: Any) -> Any:
            return apply_operator(problem, batch, backend=backend)

        best_counts = np.zeros((rows, length), dtype=np.float32)
        # params["keep_up"] (private, no public function sets it): also return the up-rate
        # binary train and working trace, for tools/cadecon_update_study.py.
        best_binary = np.zeros((rows, n), dtype=np.float32) if params.get("keep_up") else None
        best_alpha = np.zeros(rows)
        best_base = np.zeros(rows)
        best_theta = np.zeros(rows)
        best_pve = np.full(rows, -np.inf)
        best_error = np.full(rows, np.inf)
        best_iterations = np.zeros(rows, dtype=np.int64)
        best_converged = np.zeros(rows, dtype=bool)
        kept_any = np.zeros(rows, dtype=bool)

        def scale_round(cells: np.ndarray, first: np.ndarray) -> np.ndarray:
            """One scale round of ``cells`` (sorted row indices; ``first``: their first
            round, where a warm start applies); keeps each cell's best round so far and
            returns which cells are finished.  Every cell's arithmetic is its own, so a
            round gives the same numbers whichever cells share it."""
            cells_d = backend.asarray(cells, dtype=np.int64)
            target = work[cells_d] if cells.size < rows else work
            scale = backend.asarray((1.0 / alpha_est[cells]).astype(np.float32), dtype=np.float32)
            z = target * scale[:, None]
            start = None
            if warm_up is not None and first.any():
                start = warm_up[cells_d] if cells.size < rows else warm_up
                if not first.all():
                    start = start * backend.asarray(first.astype(np.float32), dtype=np.float32)[:, None]
            outcome = solve_block(problem, z, lam=params["lambda_"], x0=start, backend=backend, reconvolution=False)
            x = outcome.activity
            peak = np.maximum(0.0, np.asarray(backend.to_numpy(xp.max(x[:, lo:hi], axis=1)), dtype=np.float64))
            inverse = np.where(peak > 1e-10, (1.0 / np.where(peak > 1e-10, peak, 1.0)), 1.0).astype(np.float32)
            xhat = x * backend.asarray(inverse, dtype=np.float32)[:, None]
            found = search_thresholds(
                backend, forward, xhat, target, pad, factor,
                noise_sigma=None if sigma is None else sigma[cells],
                ar2=None if backend.banded_by_fft else operator.coefficients32,
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                error = np.where(alpha_est[cells] > 1e-10, np.abs(found.alpha / alpha_est[cells] - 1.0), np.inf)
            if sigma is None:
                better = found.pve > best_pve[cells]
            else:
                better = error < best_error[cells]
            better |= ~kept_any[cells]
            if better.any():
                take = cells[better]
                take_d = backend.asarray(np.flatnonzero(better), dtype=np.int64)
                counts = binary_to_counts(xp, found.binary[take_d], factor)
                best_counts[take] = np.asarray(backend.to_numpy(counts), dtype=np.float32)
                if best_binary is not None:
                    best_binary[take] = np.asarray(backend.to_numpy(found.binary[take_d]), dtype=np.float32)
                best_alpha[take] = found.alpha[better]
                best_base[take] = found.baseline[better]
                best_theta[take] = found.threshold[better]
                best_pve[take] = found.pve[better]
                best_error[take] = error[better]
                best_iterations[take] = outcome.iterations[better]
                best_converged[take] = outcome.converged[better]
                kept_any[take] = True
            finished = (error < SCALE_RTOL) | (found.alpha < 1e-10)
            alpha_est[cells[~finished]] = found.alpha[~finished]
            return finished

        pipeline = backend.scale_round_pipeline(rows)
        if pipeline is not None:
            pipeline(scale_round, rows, MAX_SCALE_ROUNDS)
        else:
            live = np.arange(rows)
            for round_index in range(MAX_SCALE_ROUNDS):
                if live.size == 0:
                    break
                finished = scale_round(live, np.full(live.size, round_index == 0))
                live = live[~finished]
        filtered = np.asarray(backend.to_numpy(average_downsample(xp, work, factor)), dtype=np.float32)
    return {
        "s_counts": best_counts,
        "alpha": best_alpha,
        "baseline": best_base,
        "threshold": best_theta,
        "pve": np.where(np.isfinite(best_pve), best_pve, 0.0),
        "iterations": best_iterations,
        "converged": best_converged,
        "filtered_trace": filtered[:, :length],
        **({} if best_binary is None else
           {"s_binary": best_binary, "work_up": np.asarray(backend.to_numpy(work), dtype=np.float32)}),
    }


def _row_blocks(backend: Any, rows: int, n_up: int) -> list[np.ndarray]:
    """Split rows into blocks bounded by memory.

    A block is not split further for the CPU's worker threads: its FISTA lane blocks and
    threshold candidates already run on every core, and one block per scale round lets
    the cells still running from all rows share full lane blocks (two half-batches each
    solving their own rounds left half-empty blocks and cost a fifth more CPU time).
    """
    budget = min(BLOCK_BUDGET, backend.free_memory_bytes() // 4)
    per_block = max(1, budget // max(1, n_up * BYTES_PER_SAMPLE))
    return [np.arange(s, min(rows, s + per_block)) for s in range(0, rows, per_block)]


def solve_traces(
    traces: Any,
    tau_rise: float,
    tau_decay: float,
    fs: float,
    *,
    upsample_factor: int = 1,
    max_iters: int = 500,
    tol: float = 1e-4,
    hp_enabled: bool = False,
    lp_enabled: bool = False,
    warm_counts: Any = None,
    lambda_: float = 0.0,
    noise_constrained: bool = False,
    backend: str | None = None,
) -> SolveTracesResult:
    """Run the InDeCa pipeline on many traces at once.

    Parameters
    ----------
    traces : array_like, shape (n_cells, T), or sequence of 1-D arrays
        Calcium traces; a list may hold traces of different lengths (each length is
        solved as its own batch).
    tau_rise, tau_decay : float
        Kernel time constants in seconds, ``0 < tau_rise < tau_decay``.
    fs : float
        Sampling rate in Hz.
    upsample_factor : int
        Upsampling multiplier ``u >= 1`` (the solve runs at ``u·fs``).
    max_iters : int
        FISTA iteration cap per scale round (rounded up to a multiple of 50).
    tol : float
        FISTA relative tolerance.
    hp_enabled, lp_enabled : bool
        Band-pass the upsampled trace (high-pass at ``1/(2π·16·τd)``, low-pass at
        ``4/(2π·τr)``).
    warm_counts : array_like or sequence, optional
        Counts from a previous solve per cell (same shape as ``traces``); a row (or list
        entry) of the wrong length, or None in a list, means no warm start for that cell.
    lambda_ : float
        L1 sparsity weight (``>= 0``).
    noise_constrained : bool
        Select thresholds by the noise-floor rule instead of maximum PVE.
    backend : str, optional
        ``"numpy"``, ``"jax"``, ``"cupy"`` or None (resolve as everywhere in calab).  JAX
        on the CPU runs the CPU backend's compiled kernels (identical results to
        ``"numpy"``); on a GPU, JAX and CuPy run on the device.

    Returns
    -------
    SolveTracesResult
        Per-cell ``s_counts`` and ``filtered_trace`` (``(n_cells, T)`` float32, or lists
        for ragged input) and ``(n_cells,)`` ``alpha``, ``baseline``, ``threshold``,
        ``pve`` (float64), ``iterations`` (int64), ``converged`` (bool).

    Raises
    ------
    ValueError
        Invalid parameters, an upsampled rate above 10 kHz, NaN/inf in a trace, an empty
        trace, values too large for the float32 solver, or a dense input that is not 1-D/2-D.
    TypeError
        Non-numeric input.
    calab._validate.MemoryLimitError
        (a ``MemoryError`` and a ``ValueError``) The estimated memory (:func:`estimate_memory`)
        exceeds the allowance (``CALAB_MEMORY_LIMIT``, default 8 GiB).

    Warns
    -----
    calab._validate.FlatTraceWarning
        Traces with no variation at float32 precision (constant); they get zero counts.

    Notes
    -----
    Each trace's median is subtracted in float64 before the float32 solve (every output
    is invariant to it), and a trace whose largest deviation is below ``2**-16`` is
    multiplied by a power of two first (exact); ``alpha``, ``baseline`` and
    ``filtered_trace`` are divided by it again, so tiny-valued traces (1e-30, 1e-300) give
    the events of the same trace at unit scale.  An empty dense batch ``(0, T)`` returns
    ``(0, T)`` arrays.
    """
    from calab.backends import resolve_backend

    params = dict(zip(
        ("tau_rise", "tau_decay", "fs", "factor", "max_iters", "tol", "lambda_"),
        _check_scalars(tau_rise, tau_decay, fs, upsample_factor, max_iters, tol, lambda_),
    ))
    params.update(
        hp=check_bool(hp_enabled, "hp_enabled"),
        lp=check_bool(lp_enabled, "lp_enabled"),
        noise_constrained=check_bool(noise_constrained, "noise_constrained"),
    )
    factor = params["factor"]
    rows, ragged = check_rows(traces, "traces", sum_length=lambda length: length * factor)
    width = 0 if ragged or len(np.shape(traces)) != 2 else int(np.shape(traces)[1])
    chosen = resolve_backend(backend, traces if not ragged else None)
    # Where the backend's arrays live in host memory (NumPy; JAX on the CPU), the whole
    # pipeline runs on the CPU backend's compiled kernels: they reproduce the reference's
    # float32 rounding, which XLA's CPU code does not (fused multiply-adds), and the
    # per-round glue then compiles nothing.  GPUs run on their own backend.
    chosen = chosen.host_backend() or chosen
    n_cells = len(rows)
    lengths = np.array([r.size for r in rows], dtype=np.int64)
    if n_cells:
        workers = max(1, int(getattr(chosen, "workers", 1))) if chosen.host_arrays else 1
        check_memory(
            estimate_memory(float(lengths.sum()), float(lengths.max()), factor, workers),
            f"solve_traces on {n_cells} trace{'s' if n_cells != 1 else ''} of up to {int(lengths.max())} "
            f"samples with upsample_factor={factor}",
            advice="a smaller upsample_factor, or fewer or shorter traces per call",
        )
    # Offset removed and tiny rows rescaled in float64 (exact), flat rows zeroed: the
    # float32 pipeline then never sees a level it cannot resolve (see normalise_rows).
    rows, scales, flat = normalise_rows(rows)
    if flat and _WARN_FLAT.get():
        names = describe_indices(flat)
        warnings.warn(
            f"trace{'s' if len(flat) > 1 else ''} {names} ha{'s' if len(flat) == 1 else 've'} no variation (constant at float32 "
            "precision): no activity is found in a flat trace, so its counts, alpha and baseline are 0",
            FlatTraceWarning, stacklevel=_WARN_STACKLEVEL.get(),
        )
    warm_rows: list[np.ndarray | None] = [None] * len(rows)
    if warm_counts is not None:
        if isinstance(warm_counts, (list, tuple)):
            if len(warm_counts) != len(rows):
                raise ValueError(
                    f"warm_counts has {len(warm_counts)} entries but there are {len(rows)} traces; "
                    "pass one entry (or None) per trace"
                )
            entries = warm_counts
        else:
            block = np.asarray(warm_counts, dtype=np.float64)
            if block.ndim == 1 and len(rows) == 1:
                block = block[None, :]
            if block.ndim != 2 or block.shape[0] != len(rows):
                raise ValueError(
                    f"warm_counts must have one row per trace ({len(rows)}), got shape {tuple(block.shape)}"
                )
            entries = list(block)
        for i, entry in enumerate(entries):
            if entry is None:
                continue
            counts = np.asarray(entry, dtype=np.float64).ravel()
            # the reference silently ignores a warm start of the wrong length
            if counts.size == rows[i].size and np.all(np.isfinite(counts)):
                warm_rows[i] = counts
    out = {
        "alpha": np.zeros(n_cells),
        "baseline": np.zeros(n_cells),
        "threshold": np.zeros(n_cells),
        "pve": np.zeros(n_cells),
        "iterations": np.zeros(n_cells, dtype=np.int64),
        "converged": np.zeros(n_cells, dtype=bool),
    }
    counts_out: list[np.ndarray | None] = [None] * n_cells
    filtered_out: list[np.ndarray | None] = [None] * n_cells
    jobs = []
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        for block in _row_blocks(chosen, members.size, int(length) * params["factor"]):
            jobs.append(members[block])

    def run(members: np.ndarray) -> tuple[np.ndarray, dict]:
        raw = np.stack([rows[i] for i in members])
        warm = None
        if any(warm_rows[i] is not None for i in members):
            warm = np.stack([warm_rows[i] if warm_rows[i] is not None else np.zeros(rows[i].size) for i in members])
        return members, _solve_block(chosen, raw, warm, params)

    workers = max(1, int(getattr(chosen, "workers", 1))) if chosen.host_arrays else 1
    # Blocks whose scale rounds run as a pipeline already keep every core busy: one block
    # at a time then, instead of one per core with a pipeline's threads each.
    pipelined = any(chosen.scale_round_pipeline(job.size) is not None for job in jobs)
    if workers > 1 and len(jobs) > 1 and not pipelined:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="calab-indeca") as pool:
            results = list(pool.map(run, jobs))
    else:
        results = [run(job) for job in jobs]
    for members, block in results:
        for key in out:
            out[key][members] = block[key]
        for j, i in enumerate(members):
            counts_out[i] = block["s_counts"][j]
            filtered_out[i] = block["filtered_trace"][j]
    rescaled = np.flatnonzero(scales != 1.0)
    if rescaled.size:  # amplitudes back in the caller's units (exact: powers of two)
        out["alpha"][rescaled] /= scales[rescaled]
        out["baseline"][rescaled] /= scales[rescaled]
        for i in rescaled:
            filtered_out[i] = (filtered_out[i].astype(np.float64) / scales[i]).astype(np.float32)
    if ragged:
        s_counts, filtered = counts_out, filtered_out
    else:
        s_counts = np.stack(counts_out) if n_cells else np.zeros((0, width), np.float32)
        filtered = np.stack(filtered_out) if n_cells else np.zeros((0, width), np.float32)
    return SolveTracesResult(s_counts, out["alpha"], out["baseline"], out["threshold"], out["pve"], out["iterations"], out["converged"], filtered)


def solve_trace(
    trace: np.ndarray,
    tau_rise: float,
    tau_decay: float,
    fs: float,
    *,
    upsample_factor: int = 1,
    max_iters: int = 500,
    tol: float = 1e-4,
    hp_enabled: bool = False,
    lp_enabled: bool = False,
    warm_counts: np.ndarray | None = None,
    lambda_: float = 0.0,
    noise_constrained: bool = False,
    backend: str | None = None,
) -> SolveTraceResult:
    """Run the InDeCa pipeline on a single trace.

    Parameters
    ----------
    trace : np.ndarray
        1-D calcium trace, shape ``(n_timepoints,)``.
    tau_rise, tau_decay : float
        Time constants in seconds.
    fs : float
        Sampling rate in Hz.
    upsample_factor : int
        Upsampling multiplier (1 = no upsampling).
    max_iters : int
        Maximum FISTA iterations.
    tol : float
        Convergence tolerance.
    hp_enabled, lp_enabled : bool
        Enable high-pass / low-pass filtering.
    warm_counts : np.ndarray, optional
        Spike counts from a previous iteration (at original rate) for warm-start; ignored
        if its length differs from the trace's.
    lambda_ : float
        L1 sparsity penalty.
    noise_constrained : bool
        Pick the threshold by the noise-floor rule instead of maximum PVE.
    backend : str, optional
        Compute backend (see :mod:`calab.backends`).

    Returns
    -------
    SolveTraceResult
        ``s_counts`` ``(n_timepoints,)`` float32, ``alpha``, ``baseline``, ``threshold``,
        ``pve`` (float), ``iterations`` (int), ``converged`` (bool).

    Raises
    ------
    ValueError
        ``0 < tau_rise < tau_decay``, ``fs > 0``, ``upsample_factor >= 1``, ``lambda_ >= 0``,
        ``tol >= 0`` violated; ``fs * upsample_factor`` above 10 kHz; NaN/inf in the trace; a
        trace that is not 1-D.
    calab._validate.MemoryLimitError
        The estimated memory exceeds the allowance (see :func:`solve_traces`).

    Warns
    -----
    calab._validate.FlatTraceWarning
        A constant trace (its counts are all zero).
    """
    values = check_real_array(_host(trace), "trace", ndim=None, finite=True, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(
            f"trace must be 1-D (n_timepoints,), got shape {values.shape}; "
            "use calab.solve_traces for a (n_cells, n_timepoints) batch"
        )
    warm = None
    if warm_counts is not None:
        warm_values = np.asarray(warm_counts, dtype=np.float64).ravel()
        warm = [warm_values]
    with flat_trace_warnings(_WARN_FLAT.get(), stacklevel=_WARN_STACKLEVEL.get() + 1):
        result = solve_traces(
            [values], tau_rise, tau_decay, fs,
            upsample_factor=upsample_factor, max_iters=max_iters, tol=tol, hp_enabled=hp_enabled,
            lp_enabled=lp_enabled, warm_counts=warm, lambda_=lambda_, noise_constrained=noise_constrained,
            backend=backend,
        )
    return result.cell(0)
