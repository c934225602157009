"""NumPy transliterations of the CUDA kernels in ``kernels/*.cu`` (no CuPy needed).

Every public method of :class:`NumpyKernels` has the name, arguments and in-place effect
of one ``extern "C"`` kernel launched by :class:`calab.backends.cuda._device.CupyKernels`,
and follows the kernel's algorithm step by step: the same data layout (cell-major
``(B, n)`` rows for FFT mode, time-major ``(n, B)`` for the AR(2) kernels), the same
float32 operation order (the kernels are compiled with ``--fmad=false``), the same
sequential or chunked recursions, the same per-thread float64 partial sums and warp-tree
reductions, the same restart/convergence logic and freeze mask.  Only the loop over
*threads* is vectorised (every cell, or every chunk of every cell, at once), which does
not change any result.

So the whole CUDA host driver (:mod:`calab.backends.cuda._driver`) runs on the CPU on top
of these transliterations, and CPU CI checks it against the NumPy backend; on a GPU the
same tests compare each CUDA kernel with its transliteration.

The module is pure NumPy/SciPy and importable without CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "NumpyKernels",
    "block_sum",
    "float_keys",
    "keys_to_float",
    "rolling_rank_sorted_window",
    "transliteration_backend",
    "warp_tree_sum",
]

_F32 = np.float32
_F64 = np.float64


# ----------------------------------------------------------------------- reductions
def warp_tree_sum(values: np.ndarray) -> np.ndarray:
    """Sum the last axis (32 lanes) in ``__shfl_down_sync`` tree order: lane l += lane l+off."""
    lanes = np.array(values, dtype=_F64, copy=True)
    assert lanes.shape[-1] == 32
    for offset in (16, 8, 4, 2, 1):
        lanes[..., :offset] = lanes[..., :offset] + lanes[..., offset : 2 * offset]
    return lanes[..., 0]


def block_sum(values: np.ndarray, threads: int) -> np.ndarray:
    """Per-row float64 sum in the order of ``calab_block_sum3`` with ``threads`` threads.

    Thread ``j`` adds elements ``j, j + T, j + 2T, ...`` in turn; each warp then reduces
    its 32 partial sums with :func:`warp_tree_sum`, and warp 0 reduces the warp totals
    (lanes beyond the number of warps hold 0).
    """
    values = np.asarray(values, dtype=_F64)
    rows, n = values.shape
    groups = -(-n // threads) if n else 0
    padded = np.zeros((rows, max(groups, 1) * threads))
    padded[:, :n] = values
    parts = padded.reshape(rows, -1, threads)
    partial = np.zeros((rows, threads))
    for group in range(parts.shape[1]):
        partial = partial + parts[:, group, :]
    warps = threads // 32
    per_warp = warp_tree_sum(partial.reshape(rows, warps, 32))
    top = np.zeros((rows, 32))
    top[:, :warps] = per_warp
    return warp_tree_sum(top)


def _sequential_sum(values: np.ndarray) -> np.ndarray:
    """Sum over axis 0 strictly in order (one thread's running float64 sum)."""
    if values.shape[0] == 0:
        return np.zeros(values.shape[1:])
    return np.cumsum(values, axis=0, dtype=_F64)[-1]


def _momentum(t_old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t_next = (1.0 + np.sqrt(1.0 + 4.0 * t_old * t_old)) / 2.0
    return t_next, ((t_old - 1.0) / t_next).astype(_F32)


def _prox(here, old, g, step, shrink, momentum, box):
    """Element update shared by all kernels (float32, kernel operation order)."""
    value = here - step * g
    value = value - shrink
    new = np.maximum(value, _F32(0.0))
    if box:
        new = np.minimum(new, _F32(1.0))
    ahead = new + momentum * (new - old)
    ahead = np.maximum(ahead, _F32(0.0))
    if box:
        ahead = np.minimum(ahead, _F32(1.0))
    delta = new.astype(_F64) - old.astype(_F64)
    terms = (delta * delta, old.astype(_F64) * old.astype(_F64), (here.astype(_F64) - new.astype(_F64)) * delta)
    return new, ahead, terms


def _finish(cells, t_next, change, size, signal, tmom, iters, active, converged, cap, tol2, min_iters=5):
    """``calab_finish_cell`` for the cells ``cells``; returns their restart flags."""
    k_new = iters[cells] + 1
    restart = (k_new > 1) & (signal > 0.0)
    done = (k_new > min_iters) & (change < tol2 * (size + 1e-20))
    conv = converged[cells] | done
    tmom[cells] = np.where(restart, 1.0, t_next)
    iters[cells] = k_new
    converged[cells] = conv
    active[cells] = ~conv & (k_new.astype(np.int64) < cap)
    return restart


# ----------------------------------------------------------------------- rolling rank
def float_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of float32 values (IEEE total order, -0 < +0)."""
    bits = np.ascontiguousarray(values, dtype=_F32).view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def keys_to_float(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`float_keys`."""
    keys = np.asarray(keys, dtype=np.uint32)
    bits = np.where(keys & np.uint32(0x80000000), keys & np.uint32(0x7FFFFFFF), ~keys).astype(np.uint32)
    return bits.view(_F32)


def rolling_rank_sorted_window(
    traces: np.ndarray, out: np.ndarray, window: int, full_rank: int, ranks: np.ndarray
) -> None:
    """``rolling_rank_shared``: exact causal rolling order statistic, one row at a time.

    The window is kept as a sorted array of keys; each step counts the keys below the
    leaving and the entering sample, shifts the keys between the two positions by one
    and writes the entering key into the freed slot, then reads the key at the rank.
    """
    rows, n = traces.shape
    for row in range(rows):
        keys_row = float_keys(traces[row])
        keys = np.zeros(max(window, 1), dtype=np.uint32)
        count = 0
        result = np.empty(n, dtype=np.uint32)
        for t in range(n):
            vin = keys_row[t]
            if t < window:
                less = int(np.count_nonzero(keys[:count] < vin))
                keys[less + 1 : count + 1] = keys[less:count]
                keys[less] = vin
                count += 1
                rank = int(ranks[t])
            else:
                vout = keys_row[t - window]
                less_out = int(np.count_nonzero(keys[:count] < vout))
                less_in = int(np.count_nonzero(keys[:count] < vin))
                if vin > vout:
                    slot = less_in - 1
                    keys[less_out:slot] = keys[less_out + 1 : slot + 1]
                else:
                    slot = less_in
                    keys[slot + 1 : less_out + 1] = keys[slot:less_out]
                keys[slot] = vin
                rank = full_rank
            result[t] = keys[rank]
        out[row] = keys_to_float(result)


# ----------------------------------------------------------------------- the "device"
class NumpyKernels:
    """The CUDA kernel set, transliterated to NumPy: a CPU stand-in for ``CupyKernels``.

    Attributes
    ----------
    xp : module
        ``numpy``.
    multiprocessors : int
        Pretend SM count (drives the chunked-scan choice like a device's would).
    """

    name = "numpy-transliteration"
    xp = np

    def __init__(self, multiprocessors: int = 4) -> None:
        self.multiprocessors = int(multiprocessors)

    # ------------------------------------------------------------ host / FFT plumbing
    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def rfft_rows(self, src: np.ndarray, out: np.ndarray) -> None:
        """Batched real FFT of the contiguous rows of ``src`` (length ``src.shape[1]``)."""
        import scipy.fft

        out[...] = scipy.fft.rfft(src, axis=-1)

    def irfft_rows(self, spectrum: np.ndarray, out: np.ndarray) -> None:
        """Unnormalised inverse real FFT of length ``out.shape[1]`` (cuFFT C2R)."""
        import scipy.fft

        out[...] = scipy.fft.irfft(spectrum, n=out.shape[1], axis=-1, norm="forward")

    def release_plans(self) -> None:
        """No FFT plans to free on the CPU."""

    # ------------------------------------------------------------ fista_fft.cu
    def residual_pad(self, full, work, valid, active, n, scale) -> None:
        """``residual_pad``: zero-padded masked residual, in place in ``full``."""
        rows = np.flatnonzero(active)
        value = full[rows, :n] * _F32(scale)
        value = value - work[rows]
        if valid is not None:
            value = value * valid[rows]
        full[rows, :n] = value
        full[rows, n:] = _F32(0.0)

    def fista_update_fft(
        self, x, ypad, full, data, boundary, tmom, iters, active, converged, threshold,
        *, gram, step, scale, box, cap, tol2, threads, min_iters=5,
    ) -> None:
        """``fista_update_fft``: one block (``threads`` threads) per active cell."""
        cells = np.flatnonzero(active)
        if cells.size == 0:
            return
        n = x.shape[1]
        step, shrink = _F32(step), threshold[cells][:, None]
        here = ypad[cells, :n]
        old = x[cells]
        if gram:
            f = full[cells, :n].copy()
            edge = boundary.shape[0]
            if edge:
                tail = here[:, n - edge :]
                corr = np.zeros((cells.size, edge), dtype=_F32)
                for q in range(edge):
                    corr = corr + tail[:, q : q + 1] * boundary[q][None, :]
                f[:, n - edge :] = f[:, n - edge :] - corr
            g = f - data[cells]
        else:
            g = full[cells, :n] * _F32(scale)
        t_next, momentum = _momentum(tmom[cells])
        new, ahead, (dd, xx, pp) = _prox(here, old, g, step, shrink, momentum[:, None], box)
        change, size, signal = (block_sum(v, threads) for v in (dd, xx, pp))
        restart = _finish(cells, t_next, change, size, signal, tmom, iters, active, converged, cap, tol2, min_iters)
        x[cells] = new
        ypad[cells, :n] = np.where(restart[:, None], new, ahead)

    # ------------------------------------------------------------ ar2.cu, sequential
    def ar2_forward_tm(self, src, out, work, valid, active, g1, g2, gain) -> None:
        """``ar2_forward_tm``: one thread per cell, time-major, optional fused residual."""
        n, width = src.shape
        cells = np.arange(width) if active is None else np.flatnonzero(active)
        g1, g2, gain = _F32(g1), _F32(g2), _F32(gain)
        last1 = np.zeros(cells.size, _F32)
        last2 = np.zeros(cells.size, _F32)
        for t in range(n):
            o = np.zeros(cells.size, _F32) if t == 0 else (g1 * last1 + g2 * last2) + src[t - 1, cells] * gain
            last2, last1 = last1, o
            value = o
            if work is not None:
                value = value - work[t, cells]
                if valid is not None:
                    value = value * valid[t, cells]
            out[t, cells] = value

    def ar2_adjoint_tm(self, src, out, g1, g2, gain) -> None:
        """``ar2_adjoint_tm``: plain adjoint recursion, one thread per cell."""
        n, width = src.shape
        if n == 0:
            return
        g1, g2, gain = _F32(g1), _F32(g2), _F32(gain)
        next1 = np.zeros(width, _F32)
        next2 = np.zeros(width, _F32)
        out[n - 1] = _F32(0.0)
        for t in range(n - 1, 0, -1):
            a = (src[t] * gain + g1 * next1) + g2 * next2
            next2, next1 = next1, a
            out[t - 1] = a

    def ar2_adjoint_update_tm(
        self, e, x, y, tmom, iters, active, converged, threshold,
        *, g1, g2, gain, step, box, cap, tol2, min_iters=5,
    ) -> None:
        """``ar2_adjoint_update_tm``: adjoint recursion fused with the FISTA update."""
        n = e.shape[0]
        cells = np.flatnonzero(active)
        if cells.size == 0:
            return
        g1, g2, gain, step = _F32(g1), _F32(g2), _F32(gain), _F32(step)
        t_next, momentum = _momentum(tmom[cells])
        # The recursion is sequential; the proximal step of each element only needs its
        # own g_i, so it is applied to the whole column at once afterwards, and the
        # float64 terms are summed in the kernel's order (i = n-1 down to 0) by cumsum.
        g = np.zeros((n, cells.size), _F32)
        next1 = np.zeros(cells.size, _F32)
        next2 = np.zeros(cells.size, _F32)
        for i in range(n - 2, -1, -1):
            a = (e[i + 1, cells] * gain + g1 * next1) + g2 * next2
            next2, next1 = next1, a
            g[i] = a
        new, ahead, terms = _prox(y[:, cells], x[:, cells], g, step, threshold[cells], momentum, box)
        change, size, signal = (_sequential_sum(term[::-1]) for term in terms)
        restart = _finish(cells, t_next, change, size, signal, tmom, iters, active, converged, cap, tol2, min_iters)
        x[:, cells] = new
        y[:, cells] = np.where(restart[None, :], new, ahead)

    # ------------------------------------------------------------ ar2.cu, chunked
    @staticmethod
    def _cells(width, active):
        return np.arange(width) if active is None else np.flatnonzero(active)

    def ar2_chunk_forward_local(self, src, z, ends, active, L, C, g1, g2, gain) -> None:
        """``ar2_chunk_forward_local``: every (chunk, cell) from a zero state."""
        n, width = src.shape
        cells = self._cells(width, active)
        g1, g2, gain = _F32(g1), _F32(g2), _F32(gain)
        for c in range(C):
            last1 = np.zeros(cells.size, _F32)
            last2 = np.zeros(cells.size, _F32)
            for t in range(c * L, min(c * L + L, n)):
                o = np.zeros(cells.size, _F32) if t == 0 else (g1 * last1 + g2 * last2) + src[t - 1, cells] * gain
                z[t, cells] = o
                last2, last1 = last1, o
            ends[c, cells, 0] = last1
            ends[c, cells, 1] = last2

    def ar2_chunk_carry_forward(self, ends, starts, pq, active, L, C) -> None:
        """``ar2_chunk_carry_forward``: per-cell state at every chunk start."""
        cells = self._cells(ends.shape[1], active)
        s1 = np.zeros(cells.size, _F32)
        s2 = np.zeros(cells.size, _F32)
        starts[0, cells, 0] = 0.0
        starts[0, cells, 1] = 0.0
        for c in range(C - 1):
            e1 = ends[c, cells, 0] + (pq[L, 0] * s1 + pq[L, 1] * s2)
            e2 = ends[c, cells, 1] + (pq[L - 1, 0] * s1 + pq[L - 1, 1] * s2)
            s1, s2 = e1, e2
            starts[c + 1, cells, 0] = s1
            starts[c + 1, cells, 1] = s2

    def ar2_chunk_forward_fix(self, z, out, starts, pq, work, valid, active, L) -> None:
        """``ar2_chunk_forward_fix``: add the carried homogeneous response (+ residual)."""
        n, width = z.shape
        cells = self._cells(width, active)
        t = np.arange(n)
        chunk, j = t // L, t % L
        s1 = starts[chunk][:, cells, 0]
        s2 = starts[chunk][:, cells, 1]
        value = z[:, cells] + (pq[j + 1, 0][:, None] * s1 + pq[j + 1, 1][:, None] * s2)
        if work is not None:
            value = value - work[:, cells]
            if valid is not None:
                value = value * valid[:, cells]
        out[:, cells] = value

    def ar2_chunk_adjoint_local(self, src, z, ends, active, L, C, g1, g2, gain) -> None:
        """``ar2_chunk_adjoint_local``: backward recursion of every (chunk, cell)."""
        n, width = src.shape
        cells = self._cells(width, active)
        g1, g2, gain = _F32(g1), _F32(g2), _F32(gain)
        for c in range(C):
            next1 = np.zeros(cells.size, _F32)
            next2 = np.zeros(cells.size, _F32)
            for t in range(min(c * L + L, n) - 1, c * L - 1, -1):
                a = (src[t, cells] * gain + g1 * next1) + g2 * next2
                z[t, cells] = a
                next2, next1 = next1, a
            ends[c, cells, 0] = next1
            ends[c, cells, 1] = next2

    def ar2_chunk_carry_adjoint(self, ends, starts, pq, active, n, L, C) -> None:
        """``ar2_chunk_carry_adjoint``: per-cell incoming state of every chunk, backwards."""
        cells = self._cells(ends.shape[1], active)
        s1 = np.zeros(cells.size, _F32)
        s2 = np.zeros(cells.size, _F32)
        starts[C - 1, cells, 0] = 0.0
        starts[C - 1, cells, 1] = 0.0
        for c in range(C - 1, 0, -1):
            length = min(L, n - c * L)
            first = ends[c, cells, 0] + (pq[length, 0] * s1 + pq[length, 1] * s2)
            second = ends[c, cells, 1] + (pq[length - 1, 0] * s1 + pq[length - 1, 1] * s2)
            s1, s2 = first, second
            starts[c - 1, cells, 0] = s1
            starts[c - 1, cells, 1] = s2

    @staticmethod
    def _adjoint_state(z, starts, pq, tt, cells, n, L):
        """``calab_adjoint_state`` for a vector of times ``tt`` (< n) and cells."""
        chunk = tt // L
        top = np.minimum(chunk * L + L, n) - 1
        j = top - tt
        s1 = starts[chunk][:, cells, 0]
        s2 = starts[chunk][:, cells, 1]
        return z[tt][:, cells] + (pq[j + 1, 0][:, None] * s1 + pq[j + 1, 1][:, None] * s2)

    def ar2_chunk_adjoint_fix(self, z, out, starts, pq, L) -> None:
        """``ar2_chunk_adjoint_fix``: ``out_t = a_{t+1}``, ``out_{n-1} = 0``."""
        n, width = z.shape
        cells = np.arange(width)
        if n == 0:
            return
        out[n - 1] = _F32(0.0)
        if n > 1:
            out[: n - 1] = self._adjoint_state(z, starts, pq, np.arange(1, n), cells, n, L)

    def ar2_chunk_adjoint_update(self, z, starts, pq, x, y, tmom, active, threshold, partials, L, C, step, box) -> None:
        """``ar2_chunk_adjoint_update``: fix-up + proximal step of each chunk, partial sums."""
        n = z.shape[0]
        cells = np.flatnonzero(active)
        if cells.size == 0:
            return
        step = _F32(step)
        _, momentum = _momentum(tmom[cells])
        shrink = threshold[cells]
        g = np.zeros((n, cells.size), _F32)
        if n > 1:
            g[: n - 1] = self._adjoint_state(z, starts, pq, np.arange(1, n), cells, n, L)
        new, ahead, terms = _prox(y[:, cells], x[:, cells], g, step, shrink, momentum, box)
        x[:, cells] = new
        y[:, cells] = ahead
        for c in range(C):
            lo, hi = c * L, min(c * L + L, n)
            for slot, term in enumerate(terms):  # thread (c, b) sums its chunk backwards
                partials[c, cells, slot] = _sequential_sum(term[lo:hi][::-1])

    def fista_decide(self, partials, C, tmom, iters, active, converged, restart_flags, cap, tol2, min_iters=5) -> None:
        """``fista_decide``: sum the chunk partials in chunk order and decide per cell."""
        restart_flags[...] = False
        cells = np.flatnonzero(active)
        if cells.size == 0:
            return
        change = np.zeros(cells.size)
        size = np.zeros(cells.size)
        signal = np.zeros(cells.size)
        for c in range(C):
            change = change + partials[c, cells, 0]
            size = size + partials[c, cells, 1]
            signal = signal + partials[c, cells, 2]
        t_next, _ = _momentum(tmom[cells])
        restart = _finish(cells, t_next, change, size, signal, tmom, iters, active, converged, cap, tol2, min_iters)
        restart_flags[cells] = restart

    def fista_restart_tm(self, x, y, restart_flags) -> None:
        """``fista_restart_tm``: ``y ← x`` for the cells that restarted."""
        cells = np.flatnonzero(restart_flags)
        y[:, cells] = x[:, cells]

    # ------------------------------------------------------------ rolling_rank.cu
    def rolling_rank(self, traces, out, window, full_rank, ranks) -> None:
        """``rolling_rank_shared`` / ``rolling_rank_global`` (same algorithm)."""
        rolling_rank_sorted_window(traces, out, window, full_rank, ranks)


# ----------------------------------------------------------------------- a CPU stand-in
def transliteration_backend(multiprocessors: int = 4, chunks: int | None = None, check_every: int | None = None):
    """A NumPy backend whose FISTA driver, banded operator and rolling baseline are the
    CUDA backend's (:mod:`calab.backends.cuda._driver`) running on :class:`NumpyKernels`.

    For tests and debugging on machines without a GPU: it exercises everything of the
    CUDA backend except the CuPy launchers and the ``.cu`` code itself.
    """
    from calab.backends.cpu import NumpyBackend
    from calab.backends.cuda import _driver
    from calab.backends.types import FistaOutcome

    class TransliterationBackend(NumpyBackend):
        name = "numpy"  # shares the NumPy backend's device cache entries (same arrays)

        def __init__(self) -> None:
            super().__init__()
            self.ops = NumpyKernels(multiprocessors)

        def ar2_forward(self, activity, g1, g2, gain):
            return _driver.ar2_apply(self.ops, activity, g1, g2, gain, adjoint=False, chunks=chunks)

        def ar2_adjoint(self, residual, g1, g2, gain):
            return _driver.ar2_apply(self.ops, residual, g1, g2, gain, adjoint=True, chunks=chunks)

        def rolling_quantile(self, traces, window, quantile):
            return _driver.rolling_quantile(self.ops, traces, window, quantile)

        def run_fista(self, plan, work, threshold, x0=None, valid=None):
            if not _driver.supports(plan):
                return super().run_fista(plan, work, threshold, x0, valid)
            x, iterations, converged = _driver.solve(
                self.ops, plan, work, threshold, x0, valid, check_every=check_every, chunks=chunks
            )
            return FistaOutcome(x, iterations, converged)

    return TransliterationBackend()
