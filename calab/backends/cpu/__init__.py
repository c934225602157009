"""NumPy + SciPy backend: the CPU path, the CI oracle and the fallback everywhere.

What differs from the generic algorithm here:

* FFTs are ``scipy.fft`` with ``workers=`` (all cores), single precision.
* The banded AR(2) recursions are Numba kernels (``scipy.signal.lfilter`` along the time
  axis without Numba), sequential or segmented (``ar2_segment_lanes``).  Banded FISTA
  solves run in SIMD lane blocks (:mod:`._lanes`): up to 8 cells time-major, one
  vector per time step, the whole iteration in two passes over memory.
* The rolling order statistic is ``scipy.ndimage.rank_filter`` (exact).
* The FISTA driver runs cache-sized cell blocks on a thread pool: NumPy ufuncs and
  pocketfft release the GIL, so blocks of a few cells keep every core busy and their
  working set stays in cache, where one huge batch would stream through memory each pass.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from calab._hostmath import rolling_rank
from calab.backends import BackendInfo
from calab.backends.base import Backend
from calab.backends.types import FistaOutcome, FistaState
from calab.backends.cpu import _kernels, _lanes

__all__ = ["NumpyBackend", "rolling_quantile_host"]

#: True inside a worker of the scale-round pipeline: that worker is one core's whole share,
#: so FISTA and the row-block helpers run in its own thread instead of on the pool.
_ONE_THREAD: contextvars.ContextVar[bool] = contextvars.ContextVar("calab_cpu_one_thread", default=False)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def rolling_quantile_host(traces: np.ndarray, window: int, quantile: float) -> np.ndarray:
    """Exact causal rolling order statistic of a ``(B, n)`` float32 batch on the host.

    Output ``t`` is the ``min(round((m−1)q), m−1)``-th smallest of the ``m = min(t+1, W)``
    samples ending at ``t``.  Full windows use ``rank_filter`` (shifted so the window
    ends at ``t``); the first ``W−1`` outputs, whose windows are shorter, are computed
    directly since their rank changes with the window length.
    """
    from scipy.ndimage import rank_filter

    from calab._hostmath import round_half_away

    traces = np.ascontiguousarray(traces, dtype=np.float32)
    batch, n = traces.shape
    out = np.empty_like(traces)
    if n == 0:
        return out
    full_rank = rolling_rank(window, quantile)
    if n >= window:
        origin = window - 1 - window // 2
        for row in range(batch):  # 1-D calls take SciPy's O(n log W) path
            out[row] = rank_filter(traces[row], rank=full_rank, size=window, origin=origin, mode="nearest")
    prefix = min(window - 1, n)
    ranks = np.array([int(min(round_half_away(t * quantile), t)) for t in range(prefix)], dtype=np.int64)
    if prefix and _kernels.HAVE_NUMBA:
        # the same order statistics by sorted insertion (exact; much faster for long windows)
        head = np.empty((batch, prefix), dtype=np.float32)
        _kernels.expanding_quantile(traces, prefix, ranks, head)
        out[:, :prefix] = head
        return out
    for t in range(prefix):
        out[:, t] = np.partition(traces[:, : t + 1], ranks[t], axis=1)[:, ranks[t]]
    return out


def _compiled(kernel: Any, batch: np.ndarray, *coefficients: np.float32) -> np.ndarray:
    source = np.ascontiguousarray(batch, dtype=np.float32)
    out = np.empty_like(source)
    kernel(source, *coefficients, out)
    return out


def _lfilter_ar2(batch: np.ndarray, g1: np.float32, g2: np.float32, gain: np.float32) -> np.ndarray:
    """SciPy fallback of the forward recursion (float32 coefficients keep float32 output)."""
    from scipy.signal import lfilter

    numerator = np.array([0.0, gain], dtype=np.float32)
    denominator = np.array([1.0, -g1, -g2], dtype=np.float32)
    return lfilter(numerator, denominator, batch, axis=-1)


class NumpyBackend(Backend):
    """CPU backend on NumPy/SciPy (always available)."""

    name = "numpy"
    is_gpu = False
    host_arrays = True
    ar2_segment_lanes = _kernels.SEGMENT_LANES if _kernels.HAVE_NUMBA else 0

    def __init__(self) -> None:
        self.workers = _cpu_count()
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def probe(cls) -> BackendInfo:
        compiled = "Numba kernels" if _kernels.HAVE_NUMBA else f"no Numba ({_kernels.NUMBA_ERROR}): SciPy fallback"
        return BackendInfo("numpy", True, f"CPU, {_cpu_count()} core(s), NumPy {np.__version__}, {compiled}")

    @property
    def xp(self) -> Any:
        return np

    def asarray(self, array: Any, dtype: Any = np.float32) -> np.ndarray:
        from calab.backends import array_library

        library = array_library(array)
        if library == "cupy":
            array = array.get()
        return np.asarray(array, dtype=dtype)

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def rfft(self, batch: np.ndarray, n: int) -> np.ndarray:
        import scipy.fft

        return scipy.fft.rfft(batch, n=n, axis=-1, workers=self._fft_workers)

    def irfft(self, spectrum: np.ndarray, n: int) -> np.ndarray:
        import scipy.fft

        return scipy.fft.irfft(spectrum, n=n, axis=-1, norm="forward", workers=self._fft_workers)

    def gram_filter(self, batch, size, power, boundary):
        # Same maths as the generic version, in place: no concatenate, one pass fewer.
        spectrum = self.rfft(batch, size)
        spectrum *= power
        full = self.irfft(spectrum, size)[:, : batch.shape[-1]]
        edge = boundary.shape[0]
        if edge and _kernels.HAVE_NUMBA:
            _kernels.subtract_boundary(np.ascontiguousarray(batch), boundary, full)
        elif edge:
            full[:, -edge:] -= batch[:, -edge:] @ boundary
        return full

    # Inside the threaded driver each thread already owns a core.
    _fft_workers = 1

    def ar2_forward(self, activity: np.ndarray, g1: np.float32, g2: np.float32, gain: np.float32) -> np.ndarray:
        if _kernels.HAVE_NUMBA:
            return _compiled(_kernels.ar2_forward, activity, g1, g2, gain)
        return _lfilter_ar2(activity, g1, g2, gain)

    def ar2_adjoint(self, residual: np.ndarray, g1: np.float32, g2: np.float32, gain: np.float32) -> np.ndarray:
        if _kernels.HAVE_NUMBA:
            return _compiled(_kernels.ar2_adjoint, residual, g1, g2, gain)
        # The transpose of a causal recursion is the same recursion run backwards in time.
        return _lfilter_ar2(residual[..., ::-1], g1, g2, gain)[..., ::-1]

    def ar2_adjoint_of_difference(self, model, data, g1, g2, gain):
        if not _kernels.HAVE_NUMBA:
            return super().ar2_adjoint_of_difference(model, data, g1, g2, gain)
        model = np.ascontiguousarray(model, dtype=np.float32)
        out = np.empty_like(model)
        _kernels.ar2_adjoint_residual(model, np.ascontiguousarray(data, dtype=np.float32), g1, g2, gain, out)
        return out

    def ar2_segment_forward(self, activity, segments):
        if segments.lanes != _kernels.SEGMENT_LANES or not _kernels.HAVE_NUMBA:
            return super().ar2_segment_forward(activity, segments)
        source = np.ascontiguousarray(activity, dtype=np.float32)
        out = np.empty_like(source)
        s = segments
        _kernels.ar2_segment_forward(source, s.g1, s.g2, s.gain, s.p1, s.p2, s.p1_64, s.p2_64, s.n, out)
        return out

    def ar2_segment_adjoint_of_difference(self, model, data, segments):
        if segments.lanes != _kernels.SEGMENT_LANES or not _kernels.HAVE_NUMBA:
            return super().ar2_segment_adjoint_of_difference(model, data, segments)
        model = np.ascontiguousarray(model, dtype=np.float32)
        out = np.empty_like(model)
        s = segments
        _kernels.ar2_segment_adjoint_residual(
            model, np.ascontiguousarray(data, dtype=np.float32), s.g1, s.g2, s.gain, s.p1, s.p2, s.p1_64, s.p2_64, out
        )
        return out

    def fista_update(self, xp, plan, state, gradient, threshold, freeze):
        """Compiled update (Numba) when the driver compacts every step; else the generic one."""
        if freeze or not _kernels.HAVE_NUMBA:
            return super().fista_update(xp, plan, state, gradient, threshold, freeze)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * state.t * state.t)) / 2.0
        momentum = ((state.t - 1.0) / t_next).astype(np.float32)
        x_new = np.empty_like(state.x)
        y_new = np.empty_like(state.y)
        rows = state.x.shape[0]
        change, size, restart_signal = np.empty(rows), np.empty(rows), np.empty(rows)
        _kernels.proximal_accumulate(
            state.x, state.y, np.ascontiguousarray(gradient, dtype=np.float32), plan.step32,
            threshold, momentum, plan.constraint == "box01", x_new, y_new, change, size, restart_signal,
        )
        k = state.k + 1
        restart = (k > 1) & (restart_signal > 0)
        if restart.any():
            y_new[restart] = x_new[restart]
        converged = state.converged | (
            (k > plan.min_iterations) & (change < plan.tolerance_squared * (size + 1e-20))
        )
        return FistaState(
            x_new, y_new, np.where(restart, 1.0, t_next), k, ~converged & (k < plan.max_iterations), converged
        )

    def host_backend(self) -> Backend:
        return self

    def rolling_quantile(self, traces: np.ndarray, window: int, quantile: float) -> np.ndarray:
        blocks = np.array_split(np.arange(traces.shape[0]), min(self._threads(), traces.shape[0]))
        if len(blocks) == 1:
            return rolling_quantile_host(traces, window, quantile)
        parts = self._executor().map(lambda rows: rolling_quantile_host(traces[rows], window, quantile), blocks)
        return np.concatenate(list(parts))

    def _threads(self) -> int:
        """Threads this call may use: every core, or one inside a scale-round pipeline worker."""
        return 1 if _ONE_THREAD.get() else self.workers

    def for_row_blocks(self, function, n_rows):
        """One block of rows per core on the thread pool (compiled kernels release the GIL)."""
        blocks = min(self._threads(), n_rows)
        if blocks <= 1:
            return super().for_row_blocks(function, n_rows)
        edges = np.linspace(0, n_rows, blocks + 1).astype(int)
        list(self._executor().map(function, [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]))

    def scale_round_pipeline(self, n_cells: int) -> Callable[[Callable, int, int], None] | None:
        """Scale rounds as a pipeline over the cores: each worker takes up to one lane
        block of cells whose next round is due (:data:`._lanes.MAX_LANES`), solves that
        round and its threshold search in its own thread, and puts the cells still
        running back in the queue.

        With one batch per round, a round's last lane blocks leave cores idle and the
        late rounds (a few cells that need 3-4 rounds) run one latency-bound block at a
        time; here those rounds share blocks and cores with other cells' earlier rounds.
        Used for more cells than one lane block holds, with the compiled lane kernels
        and more than one core; never inside a pipeline worker.
        """
        if self._threads() <= 1 or n_cells <= _lanes.MAX_LANES or not _kernels.HAVE_NUMBA:
            return None
        return self._run_scale_rounds

    def _run_scale_rounds(self, scale_round: Callable, n_cells: int, max_rounds: int) -> None:
        ready = deque((cell, 0) for cell in range(n_cells))
        condition = threading.Condition()
        busy = 0
        failures: list[BaseException] = []

        def worker() -> None:
            nonlocal busy
            _ONE_THREAD.set(True)
            while True:
                with condition:
                    while not ready and busy and not failures:
                        condition.wait()
                    if not ready or failures:
                        condition.notify_all()
                        return
                    group = sorted(ready.popleft() for _ in range(min(_lanes.MAX_LANES, len(ready))))
                    busy += 1
                cells = np.array([cell for cell, _ in group], dtype=np.int64)
                rounds = np.array([done for _, done in group], dtype=np.int64)
                try:
                    finished = np.asarray(scale_round(cells, rounds == 0), dtype=bool)
                except BaseException as exc:  # the caller's thread re-raises it
                    with condition:
                        failures.append(exc)
                        busy -= 1
                        condition.notify_all()
                    return
                with condition:
                    ready.extend((int(c), int(r) + 1) for c, r, f in zip(cells, rounds, finished)
                                 if not f and r + 1 < max_rounds)
                    busy -= 1
                    condition.notify_all()

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker,), name=f"calab-rounds-{i}")
                   for i in range(self.workers)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException as exc:  # Ctrl-C: workers finish their group and take no other
            with condition:
                failures.append(exc)
                condition.notify_all()
            for thread in threads:
                thread.join()
            raise
        if failures:
            raise failures[0]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="calab-cpu")
        return self._pool

    def max_chunk_cells(self, n_cells: int, n_timepoints: int) -> int:
        # The threads work on 32-cell blocks, so bigger chunks buy nothing on the CPU:
        # bound a chunk's working set by 1 GiB (or a quarter of the free RAM) so that a
        # 100,000 x 30,000 dataset streams through instead of exhausting memory.
        per_cell = 4 * n_timepoints * 16 + 8 * 3 * (self.fft_length(2 * max(n_timepoints, 1)) // 2 + 1)
        budget = min(1 << 30, self.free_memory_bytes() // 4)
        return max(self.workers * 32, budget // max(per_cell, 1))

    def min_chunk_cells(self) -> int:
        return self.workers * 32

    def fista_batch(self, plan, work, threshold, x0=None, valid=None):
        """Banded solves in SIMD lane blocks (:mod:`._lanes`); the generic step otherwise."""
        if _kernels.HAVE_NUMBA and _lanes.lanes_apply(plan, valid):
            return _lanes.LaneBatch(plan, work, threshold, x0)
        return super().fista_batch(plan, work, threshold, x0, valid)

    def run_fista(self, plan, work, threshold, x0=None, valid=None):
        """The driver skeleton per block of cells, blocks on the thread pool."""
        n_cells = work.shape[0]
        n = plan.n_timepoints
        threads = self._threads()
        if n_cells == 0:
            return Backend.run_fista(self, plan, work, threshold, x0, valid)
        if _kernels.HAVE_NUMBA and _lanes.lanes_apply(plan, valid):
            # one SIMD lane per cell, up to 8 cells per block, blocks spread evenly
            blocks = [slice(r.start, r.stop) for r in _lanes.lane_blocks(n_cells, threads)]
        else:
            # pocketfft vectorises across the rows of a batch, so blocks of up to 32 cells
            # keep its SIMD lanes full; blocks are split evenly so every worker gets the
            # same share (a finished cell is dropped from its block, not waited for).
            per_block = 32 if n <= 65536 else 8
            count = threads * max(1, -(-n_cells // (threads * per_block)))
            size = max(1, -(-n_cells // count))
            blocks = [slice(start, start + size) for start in range(0, n_cells, size)]

        def solve(rows: slice) -> FistaOutcome:
            return Backend.run_fista(
                self,
                plan,
                work[rows],
                threshold[rows],
                None if x0 is None else x0[rows],
                None if valid is None else valid[rows],
            )

        if len(blocks) <= 1 or threads == 1:
            outcomes = [solve(rows) for rows in blocks]
        else:
            outcomes = list(self._executor().map(solve, blocks))
        return FistaOutcome(
            np.concatenate([o.x for o in outcomes]),
            np.concatenate([o.iterations for o in outcomes]),
            np.concatenate([o.converged for o in outcomes]),
        )
