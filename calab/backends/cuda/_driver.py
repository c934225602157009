"""Host driver of the CUDA backend, written against a *kernel set* (no CuPy import).

The kernel set is either :class:`calab.backends.cuda._device.CupyKernels` (the CUDA
kernels of ``kernels/*.cu`` launched through CuPy) or
:class:`calab.backends.cuda.reference.NumpyKernels` (their NumPy transliterations).  The
driver itself only allocates buffers with ``ops.xp``, sequences kernel launches, syncs
once per check and compacts the batch, so CPU CI runs exactly this code on the
transliterations and compares it with the NumPy backend.

FFT mode (cell-major ``(B, n)``; one FFT length ``P`` for the whole batch)
    ``y`` lives in the first ``n`` columns of a zero-padded ``(B, P)`` buffer, so the
    batched R2C transform reads it in place.  Gram form (default): ``rfft(ypad)``,
    ``spec *= |K̂|²/P``, ``irfft`` → ``full``, then ``fista_update_fft`` assembles
    ``g = (full − y_tail @ M) − Kᵀwork`` and does the whole FISTA update in one pass.
    Residual form (ragged batches, or kernels longer than :data:`GRAM_MAX_EDGE` samples,
    whose boundary correction would cost more than an FFT pair): forward transform,
    ``residual_pad`` (masked residual written back zero-padded), adjoint transform,
    ``fista_update_fft``.
Banded mode (time-major ``(n, B)``)
    Many cells: ``ar2_forward_tm`` (forward recursion fused with the residual) and
    ``ar2_adjoint_update_tm`` (adjoint recursion fused with the FISTA update), one thread
    per cell.  Few cells: the time axis is cut into chunks so that there are enough
    threads (:func:`choose_chunks`); local pass, carry pass, fix-up pass.
Driver
    ``check_every`` steps run between two reads of the active mask (one device sync);
    frozen cells cost nothing in the update kernels; when the active cells fall to
    :data:`COMPACT_FRACTION` of the batch, finished cells are written out and the batch is
    gathered to the cells still running (and, in banded mode, re-chunked).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from calab._hostmath import gram_boundary, rolling_rank, round_half_away
from calab.backends.driver import FistaBatch, run_segments
from calab.backends.types import SolvePlan

__all__ = [
    "CHECK_EVERY",
    "COMPACT_FRACTION",
    "GRAM_MAX_EDGE",
    "ar2_apply",
    "choose_chunks",
    "pq_table",
    "rolling_quantile",
    "rolling_ranks",
    "solve",
    "split_on_oom",
    "update_threads",
]

#: steps between two reads of the active mask (one device sync each)
CHECK_EVERY = 10
#: compact the batch when the active cells are at most this fraction of it
COMPACT_FRACTION = 0.85
#: longest Gram boundary correction (kernel taps − 1) done inside the update kernel;
#: beyond it the residual form (two FFT pairs per step) is cheaper
GRAM_MAX_EDGE = 512
#: threads per multiprocessor below which the AR(2) scan is cut into time chunks: with
#: fewer cells than ``THREADS_PER_SM × SMs`` (8,448 on an H200) one thread per cell leaves
#: the GPU idle.  Above it the sequential scan is kept: it is bit-exact with the NumPy
#: backend (the chunked one differs by float32 rounding).  Tunable on a GPU with
#: ``CALAB_CUDA_AR2_CHUNKS``; not yet measured.
THREADS_PER_SM = 64
#: shortest chunk of the chunked AR(2) scan
MIN_CHUNK = 64


def supports(plan: SolvePlan) -> bool:
    """Whether the fused kernels cover ``plan`` (upsampled problems use the generic step)."""
    return plan.upsample == 1


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip().lower()
    if not text or text == "auto":
        return None
    return int(text)


def update_threads(n: int) -> int:
    """Threads per block of ``fista_update_fft`` for rows of ``n`` samples (32…256)."""
    threads = 32
    while threads < 256 and threads * 16 < n:
        threads *= 2
    return threads


def choose_chunks(n_cells: int, n: int, multiprocessors: int, override: int | None = None) -> tuple[int, int]:
    """Chunks ``C`` and chunk length ``L`` of the AR(2) scan for a batch.

    One thread per cell (``C = 1``) while the cells alone give every multiprocessor
    :data:`THREADS_PER_SM` threads; otherwise the time axis is cut into chunks of at least
    :data:`MIN_CHUNK` samples until they do.  ``override`` (or the environment variable
    ``CALAB_CUDA_AR2_CHUNKS``) forces ``C``.
    """
    if n <= 1 or n_cells <= 0:
        return 1, max(n, 1)
    if override is None:
        override = _env_int("CALAB_CUDA_AR2_CHUNKS")
    if override is not None:
        chunks = max(1, min(int(override), n // 2))
    else:
        target = max(1, multiprocessors) * THREADS_PER_SM
        if n_cells >= target:
            return 1, n
        chunks = max(1, min(-(-target // n_cells), n // MIN_CHUNK))
    if chunks <= 1:
        return 1, n
    length = max(2, -(-n // chunks))
    return -(-n // length), length


def pq_table(g1: float, g2: float, length: int) -> np.ndarray:
    """Homogeneous responses of the AR(2) recursion, ``(length + 1, 2)`` float32.

    Row 0 is ``(p_{-1}, q_{-1}) = (1, 0)``; row ``j + 1`` is ``(p_j, q_j)`` with
    ``p_j = g1 p_{j-1} + g2 p_{j-2}`` from ``(p_{-1}, p_{-2}) = (1, 0)`` and the same for
    ``q`` from ``(0, 1)`` — the response ``j`` samples into a chunk to the two states
    before it.  Computed in float64, rounded once.
    """
    g1, g2 = float(g1), float(g2)
    table = np.zeros((length + 1, 2))
    p2, p1, q2, q1 = 0.0, 1.0, 1.0, 0.0
    table[0] = (1.0, 0.0)
    for j in range(length):
        p = g1 * p1 + g2 * p2
        q = g1 * q1 + g2 * q2
        table[j + 1] = (p, q)
        p2, p1, q2, q1 = p1, p, q1, q
    return table.astype(np.float32)


def _trimmed_boundary(plan: SolvePlan) -> np.ndarray:
    boundary = gram_boundary(plan.kernel)
    keep = min(boundary.shape[0], plan.n_timepoints)
    edge = boundary.shape[0]
    return np.ascontiguousarray(boundary[edge - keep :, edge - keep :])


def _fft_constants(ops: Any, plan: SolvePlan) -> tuple[Any, Any, Any, Any]:
    """Device copies of ``K̂``, ``conj(K̂)``, ``|K̂|²/P`` and the boundary matrix, cached per plan."""
    key = ("cuda-driver", getattr(ops, "cache_key", ops.name))
    cached = plan.device_cache.get(key)
    if cached is None:
        xp = ops.xp
        spectrum = plan.kernel_spectrum
        power = spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2
        cached = (
            xp.asarray(spectrum.astype(np.complex64)),
            xp.asarray(np.conj(spectrum).astype(np.complex64)),
            xp.asarray((power / plan.fft_size).astype(np.float32)),
            xp.asarray(_trimmed_boundary(plan)),
        )
        plan.device_cache[key] = cached
    return cached


def _initial_vectors(xp: Any, batch: int) -> tuple[Any, Any, Any, Any]:
    return (
        xp.ones(batch, dtype=xp.float64),
        xp.zeros(batch, dtype=xp.int32),
        xp.ones(batch, dtype=bool),
        xp.zeros(batch, dtype=bool),
    )


class _KernelBatch(FistaBatch):
    """What the FFT and banded batches share: per-cell vectors, sync, compaction policy."""

    def __init__(self, ops: Any, plan: SolvePlan, batch: int, check_every: int) -> None:
        self.ops = ops
        self.plan = plan
        self.check_every = max(1, int(check_every))
        self.tmom, self.iters, self.active_mask, self.converged = _initial_vectors(ops.xp, batch)

    @property
    def rows(self) -> int:
        return int(self.tmom.shape[0])

    def active(self) -> np.ndarray:
        return self.ops.to_host(self.active_mask).astype(bool)

    def compact_now(self, running: int) -> bool:
        # Frozen cells cost nothing in the update kernels, but the FFTs still run over
        # them: gather once a good share of the batch finished.
        return running < self.rows and running <= COMPACT_FRACTION * self.rows

    def _vectors(self, index: Any) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.ops.to_host(self.iters[index]).astype(np.int64),
            self.ops.to_host(self.converged[index]).astype(bool),
        )

    def _keep_vectors(self, index: Any) -> None:
        self.tmom, self.iters = self.tmom[index], self.iters[index]
        self.active_mask, self.converged = self.active_mask[index], self.converged[index]


def _scatter(xp: Any) -> Callable[[Any, np.ndarray, Any], Any]:
    def scatter(out: Any, rows: np.ndarray, values: Any) -> Any:
        out[xp.asarray(rows, dtype=xp.int64)] = values
        return out

    return scatter


def _start(ops: Any, x0: Any | None, shape: tuple[int, int]) -> Any:
    xp = ops.xp
    return xp.zeros(shape, dtype=xp.float32) if x0 is None else xp.array(x0, dtype=xp.float32, copy=True)


# --------------------------------------------------------------------------- FFT mode
class FftBatch(_KernelBatch):
    """FFT-mode segment: ``check_every`` steps of cuFFT transforms + ``fista_update_fft``."""

    def __init__(self, ops: Any, plan: SolvePlan, work: Any, threshold: Any, x0: Any, valid: Any, check_every: int) -> None:
        xp = ops.xp
        f32 = xp.float32
        batch, n = work.shape
        super().__init__(ops, plan, batch, check_every)
        self.size = size = plan.fft_size
        self.spectrum, self.spectrum_conj, self.power, self.boundary = _fft_constants(ops, plan)
        edge = int(self.boundary.shape[0])
        self.gram = valid is None and edge <= GRAM_MAX_EDGE
        self.scale = np.float32(1.0 / size)
        self.threads = update_threads(n)
        self.n = n
        self.x = _start(ops, x0, (batch, n))
        self.ypad = xp.zeros((batch, size), dtype=f32)
        self.ypad[:, :n] = self.x
        self.full = xp.zeros((batch, size), dtype=f32)
        self.spec = xp.empty((batch, size // 2 + 1), dtype=xp.complex64)
        if self.gram:  # data term Kᵀ work, as calab.engine.fista.data_gradient computes it
            self.full[:, :n] = work
            ops.rfft_rows(self.full, self.spec)
            self.spec *= self.spectrum_conj
            ops.irfft_rows(self.spec, self.full)
            self.data = xp.ascontiguousarray(self.full[:, :n] * self.scale)
            self.valid = None
        else:
            self.data = xp.ascontiguousarray(work, dtype=f32)
            self.valid = None if valid is None else xp.ascontiguousarray(valid, dtype=f32)
        self.threshold = xp.ascontiguousarray(threshold, dtype=f32)

    def advance(self) -> None:
        ops, plan = self.ops, self.plan
        for _ in range(self.check_every):
            ops.rfft_rows(self.ypad, self.spec)
            if self.gram:
                self.spec *= self.power
                ops.irfft_rows(self.spec, self.full)
            else:
                self.spec *= self.spectrum
                ops.irfft_rows(self.spec, self.full)
                ops.residual_pad(self.full, self.data, self.valid, self.active_mask, self.n, self.scale)
                ops.rfft_rows(self.full, self.spec)
                self.spec *= self.spectrum_conj
                ops.irfft_rows(self.spec, self.full)
            ops.fista_update_fft(
                self.x, self.ypad, self.full, self.data, self.boundary, self.tmom, self.iters, self.active_mask,
                self.converged, self.threshold, gram=self.gram, step=plan.step32, scale=self.scale,
                box=plan.constraint == "box01", cap=plan.max_iterations, tol2=plan.tolerance_squared,
                threads=self.threads, min_iters=plan.min_iterations,
            )  # fmt: skip

    def harvest(self, index: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        rows = self.ops.xp.asarray(index, dtype=self.ops.xp.int64)
        return (self.x[rows], *self._vectors(rows))

    def compact(self, keep: np.ndarray) -> None:
        xp = self.ops.xp
        # Free the scratch buffers and plans of the old size before gathering.
        del self.full, self.spec
        self.ops.release_plans()
        index = xp.asarray(keep, dtype=xp.int64)
        self.x, self.ypad, self.data, self.threshold = (a[index] for a in (self.x, self.ypad, self.data, self.threshold))
        self._keep_vectors(index)
        if self.valid is not None:
            self.valid = self.valid[index]
        self.full = xp.empty((keep.size, self.size), dtype=xp.float32)
        self.spec = xp.empty((keep.size, self.size // 2 + 1), dtype=xp.complex64)


def solve_fft(
    ops: Any,
    plan: SolvePlan,
    work: Any,
    threshold: Any,
    x0: Any | None = None,
    valid: Any | None = None,
    *,
    check_every: int = CHECK_EVERY,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """FISTA to convergence in FFT mode; returns ``(x, iterations, converged)``."""
    batch, n = work.shape
    out = _start(ops, x0, (batch, n))
    if plan.max_iterations == 0 or batch == 0 or n == 0:
        return out, np.zeros(batch, dtype=np.int64), np.zeros(batch, dtype=bool)
    outcome = run_segments(FftBatch(ops, plan, work, threshold, x0, valid, check_every), out, _scatter(ops.xp))
    return outcome.x, outcome.iterations, outcome.converged


# --------------------------------------------------------------------------- banded
class _Scan:
    """Scratch buffers of the chunked AR(2) scan for one batch width."""

    def __init__(self, ops: Any, plan: SolvePlan, n: int, width: int, override: int | None) -> None:
        xp = ops.xp
        self.chunks, self.length = choose_chunks(width, n, ops.multiprocessors, override)
        self.z = self.ends = self.starts = self.partials = self.flags = self.pq = None
        if self.chunks > 1:
            g1, g2, _ = plan.ar2
            self.z = xp.empty((n, width), dtype=xp.float32)
            self.ends = xp.empty((self.chunks, width, 2), dtype=xp.float32)
            self.starts = xp.empty((self.chunks, width, 2), dtype=xp.float32)
            self.partials = xp.zeros((self.chunks, width, 3), dtype=xp.float64)
            self.flags = xp.zeros(width, dtype=bool)
            self.pq = xp.asarray(pq_table(g1, g2, self.length))


class BandedBatch(_KernelBatch):
    """Banded segment: ``check_every`` steps of the time-major AR(2) kernels."""

    def __init__(
        self, ops: Any, plan: SolvePlan, work: Any, threshold: Any, x0: Any, valid: Any, check_every: int, chunks: int | None
    ) -> None:
        xp = ops.xp
        batch, n = work.shape
        super().__init__(ops, plan, batch, check_every)
        self.n, self.chunks_override = n, chunks
        self.wt = xp.ascontiguousarray(xp.asarray(work, dtype=xp.float32).T)
        self.vt = None if valid is None else xp.ascontiguousarray(xp.asarray(valid, dtype=xp.float32).T)
        self.xt = xp.ascontiguousarray(_start(ops, x0, (batch, n)).T)
        self.yt = xp.array(self.xt, copy=True)
        self.e = xp.empty_like(self.wt)
        self.threshold = xp.ascontiguousarray(threshold, dtype=xp.float32)
        self.scan = _Scan(ops, plan, n, batch, chunks)

    def advance(self) -> None:
        ops, plan, scan = self.ops, self.plan, self.scan
        g1, g2, gain = plan.ar2
        step, box, cap, tol2 = plan.step32, plan.constraint == "box01", plan.max_iterations, plan.tolerance_squared
        min_iters = plan.min_iterations
        xt, yt, e, wt, vt = self.xt, self.yt, self.e, self.wt, self.vt
        tmom, iters, active, converged, threshold = self.tmom, self.iters, self.active_mask, self.converged, self.threshold
        for _ in range(self.check_every):
            if scan.chunks == 1:
                ops.ar2_forward_tm(yt, e, wt, vt, active, g1, g2, gain)
                ops.ar2_adjoint_update_tm(
                    e, xt, yt, tmom, iters, active, converged, threshold,
                    g1=g1, g2=g2, gain=gain, step=step, box=box, cap=cap, tol2=tol2, min_iters=min_iters,
                )  # fmt: skip
            else:
                C, L = scan.chunks, scan.length
                ops.ar2_chunk_forward_local(yt, scan.z, scan.ends, active, L, C, g1, g2, gain)
                ops.ar2_chunk_carry_forward(scan.ends, scan.starts, scan.pq, active, L, C)
                ops.ar2_chunk_forward_fix(scan.z, e, scan.starts, scan.pq, wt, vt, active, L)
                ops.ar2_chunk_adjoint_local(e, scan.z, scan.ends, active, L, C, g1, g2, gain)
                ops.ar2_chunk_carry_adjoint(scan.ends, scan.starts, scan.pq, active, self.n, L, C)
                ops.ar2_chunk_adjoint_update(
                    scan.z, scan.starts, scan.pq, xt, yt, tmom, active, threshold, scan.partials, L, C, step, box
                )
                ops.fista_decide(scan.partials, C, tmom, iters, active, converged, scan.flags, cap, tol2, min_iters)
                ops.fista_restart_tm(xt, yt, scan.flags)

    def harvest(self, index: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        rows = self.ops.xp.asarray(index, dtype=self.ops.xp.int64)
        return (self.xt[:, rows].T, *self._vectors(rows))

    def compact(self, keep: np.ndarray) -> None:
        xp = self.ops.xp
        del self.e, self.scan
        index = xp.asarray(keep, dtype=xp.int64)
        self.xt, self.yt, self.wt = (xp.ascontiguousarray(a[:, index]) for a in (self.xt, self.yt, self.wt))
        if self.vt is not None:
            self.vt = xp.ascontiguousarray(self.vt[:, index])
        self.threshold = self.threshold[index]
        self._keep_vectors(index)
        self.e = xp.empty_like(self.wt)
        self.scan = _Scan(self.ops, self.plan, self.n, keep.size, self.chunks_override)


def solve_banded(
    ops: Any,
    plan: SolvePlan,
    work: Any,
    threshold: Any,
    x0: Any | None = None,
    valid: Any | None = None,
    *,
    check_every: int = CHECK_EVERY,
    chunks: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """FISTA to convergence in banded mode (time-major AR(2) kernels)."""
    batch, n = work.shape
    out = _start(ops, x0, (batch, n))
    if plan.max_iterations == 0 or batch == 0 or n == 0:
        return out, np.zeros(batch, dtype=np.int64), np.zeros(batch, dtype=bool)
    fista = BandedBatch(ops, plan, work, threshold, x0, valid, check_every, chunks)
    outcome = run_segments(fista, out, _scatter(ops.xp))
    return outcome.x, outcome.iterations, outcome.converged


def make_batch(
    ops: Any,
    plan: SolvePlan,
    work: Any,
    threshold: Any,
    x0: Any | None = None,
    valid: Any | None = None,
    *,
    check_every: int | None = None,
    chunks: int | None = None,
) -> FistaBatch:
    """The fused segment of the plan's mode for the driver skeleton."""
    if check_every is None:
        check_every = _env_int("CALAB_CUDA_CHECK_EVERY") or CHECK_EVERY
    if plan.conv_mode == "banded":
        return BandedBatch(ops, plan, work, threshold, x0, valid, check_every, chunks)
    return FftBatch(ops, plan, work, threshold, x0, valid, check_every)


def solve(
    ops: Any,
    plan: SolvePlan,
    work: Any,
    threshold: Any,
    x0: Any | None = None,
    valid: Any | None = None,
    *,
    check_every: int | None = None,
    chunks: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Run FISTA for a batch in the plan's mode; ``(x, iterations, converged)``."""
    batch, n = work.shape
    out = _start(ops, x0, (batch, n))
    if plan.max_iterations == 0 or batch == 0 or n == 0:
        return out, np.zeros(batch, dtype=np.int64), np.zeros(batch, dtype=bool)
    fista = make_batch(ops, plan, work, threshold, x0, valid, check_every=check_every, chunks=chunks)
    outcome = run_segments(fista, out, _scatter(ops.xp))
    return outcome.x, outcome.iterations, outcome.converged


# --------------------------------------------------------------------------- operators
def ar2_apply(
    ops: Any, batch: Any, g1: Any, g2: Any, gain: Any, *, adjoint: bool, chunks: int | None = None
) -> Any:
    """Banded forward (or adjoint) operator on a cell-major ``(B, n)`` float32 batch."""
    xp = ops.xp
    width, n = batch.shape
    src = xp.ascontiguousarray(xp.asarray(batch, dtype=xp.float32).T)
    out = xp.empty_like(src)
    if width == 0 or n == 0:
        return xp.ascontiguousarray(out.T)
    C, L = choose_chunks(width, n, ops.multiprocessors, chunks)
    if C == 1:
        if adjoint:
            ops.ar2_adjoint_tm(src, out, g1, g2, gain)
        else:
            ops.ar2_forward_tm(src, out, None, None, None, g1, g2, gain)
        return xp.ascontiguousarray(out.T)
    ends = xp.empty((C, width, 2), dtype=xp.float32)
    starts = xp.empty((C, width, 2), dtype=xp.float32)
    pq = xp.asarray(pq_table(g1, g2, L))
    if adjoint:
        z = xp.empty_like(src)
        ops.ar2_chunk_adjoint_local(src, z, ends, None, L, C, g1, g2, gain)
        ops.ar2_chunk_carry_adjoint(ends, starts, pq, None, n, L, C)
        ops.ar2_chunk_adjoint_fix(z, out, starts, pq, L)
    else:
        ops.ar2_chunk_forward_local(src, out, ends, None, L, C, g1, g2, gain)
        ops.ar2_chunk_carry_forward(ends, starts, pq, None, L, C)
        ops.ar2_chunk_forward_fix(out, out, starts, pq, None, None, None, L)
    return xp.ascontiguousarray(out.T)


def rolling_ranks(window: int, quantile: float, n: int) -> tuple[int, np.ndarray]:
    """Rank of a full window and of every growing window ``t < min(W, n)`` (spec §6)."""
    ranks = np.array(
        [int(min(round_half_away(t * quantile), t)) for t in range(min(window, n))], dtype=np.int32
    )
    return rolling_rank(window, quantile), ranks


def rolling_quantile(ops: Any, traces: Any, window: int, quantile: float) -> Any:
    """Exact causal rolling order statistic of a ``(B, n)`` float32 batch (spec §6)."""
    xp = ops.xp
    traces = xp.ascontiguousarray(xp.asarray(traces, dtype=xp.float32))
    out = xp.empty_like(traces)
    rows, n = traces.shape
    if rows == 0 or n == 0:
        return out
    window = int(window)
    full_rank, ranks = rolling_ranks(window, quantile, n)
    ops.rolling_rank(traces, out, window, full_rank, ranks)
    return out


# --------------------------------------------------------------------------- OOM
def split_on_oom(
    run: Callable[[int, int], Any],
    total: int,
    *,
    is_oom: Callable[[BaseException], bool],
    recover: Callable[[], None],
    what: str = "cells",
) -> list[Any]:
    """Run ``run(start, stop)`` over ``[0, total)``, halving the block on out-of-memory.

    The first block is the whole range; when a block fails with an out-of-memory error,
    ``recover()`` frees cached memory and the same range is retried in blocks of half the
    size, rounded up (and that size is kept for the rest).  A block of one that still does not fit
    raises :class:`MemoryError`, chained to the device's error.

    Returns
    -------
    list
        The results of the successful ``run`` calls, in order.
    """
    results: list[Any] = []
    start, block = 0, max(1, total)
    while start < total:
        stop = min(start + block, total)
        try:
            results.append(run(start, stop))
        except Exception as exc:  # noqa: BLE001 - filtered by is_oom
            if not is_oom(exc):
                raise
            recover()
            if stop - start <= 1:
                raise MemoryError(
                    f"the GPU ran out of memory even for a single one of the {total} {what}: "
                    "free GPU memory (other processes, or cupy.get_default_memory_pool()"
                    ".free_all_blocks()) or use backend='numpy'"
                ) from exc
            block = max(1, -(-(stop - start) // 2))
            continue
        start = stop
    return results


def budget_cells(free_bytes: int, n: int, fft_size: int, fraction: float = 0.75) -> int:
    """Cells one chunk may hold in ``fraction`` of ``free_bytes`` (see the backend's docs).

    Per cell, FFT mode keeps about ``40 n + 24 P`` bytes alive at its peak: the caller's
    traces, baseline and ``work`` (12 n), the driver's ``x``, ``Kᵀwork`` and output (12 n),
    ``ypad``, ``full`` and the spectrum (12 P), cuFFT work areas (≤ 8 P), the gathered
    copies of a compaction (8 n + 4 P) and slack for the output assembly.  Banded mode
    needs less (about 48 n).
    """
    per_cell = 40 * max(n, 1) + 24 * max(fft_size, 1) + 256
    return max(1, int(fraction * max(free_bytes, 0)) // per_cell)

