"""CuPy launchers of the CUDA kernels in ``kernels/*.cu`` (imports CuPy: GPU only).

:class:`CupyKernels` has one method per ``extern "C"`` kernel, with the arguments and
in-place effect of its NumPy transliteration in :mod:`calab.backends.cuda.reference`, plus
batched cuFFT transforms with cached plans writing into preallocated buffers.

The ``.cu`` sources ship as package data and are compiled by NVRTC (through
``cupy.RawModule``) the first time a kernel of the file is used on a device; modules are
memoised per (device, file), and CuPy caches the binaries on disk
(``~/.cupy/kernel_cache``), so later processes skip the compilation.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import numpy as np

import cupy
from cupy.cuda import cufft

from calab.backends.cuda._sources import COMPILE_OPTIONS, KERNEL_FILES, kernel_source

__all__ = ["CupyKernels"]

_MODULES: dict[tuple[int, str], Any] = {}
_LOCK = threading.Lock()

#: default shared memory a block may use without opting in
_SHARED_DEFAULT = 48 * 1024
#: cap of the global scratch of the long-window rolling rank kernel
_SCRATCH_BYTES = 1 << 29
#: largest element count of one 32-bit cuFFT plan
_FFT_ELEMENTS = 2**31 - 1

_i32, _i64, _f32, _f64 = np.int32, np.int64, np.float32, np.float64


def _options() -> tuple[str, ...]:
    """NVRTC options, plus ``-DCALAB_UNROLL=n`` when ``CALAB_CUDA_UNROLL`` is set (tuning)."""
    unroll = os.environ.get("CALAB_CUDA_UNROLL", "").strip()
    return COMPILE_OPTIONS + ((f"-DCALAB_UNROLL={int(unroll)}",) if unroll else ())


def _module(device_id: int, filename: str) -> Any:
    key = (device_id, filename)
    with _LOCK:
        module = _MODULES.get(key)
        if module is None:
            module = cupy.RawModule(code=kernel_source(filename), options=_options())
            _MODULES[key] = module
    return module


def _blocks(total: int, threads: int, cap: int) -> int:
    return max(1, min(-(-int(total) // threads), cap))


class CupyKernels:
    """The kernel set of one CUDA device (see :class:`~calab.backends.cuda.reference.NumpyKernels`)."""

    name = "cupy"

    def __init__(self, device_id: int | None = None) -> None:
        self.xp = cupy
        device = cupy.cuda.Device(device_id)
        self.device_id = int(device.id)
        attributes = device.attributes
        self.multiprocessors = int(attributes.get("MultiProcessorCount", 80))
        self.shared_optin = int(attributes.get("MaxSharedMemoryPerBlockOptin", _SHARED_DEFAULT))
        self.cache_key = ("cupy", self.device_id)
        self._functions: dict[str, Any] = {}
        self._plans: dict[tuple[int, int, int], Any] = {}
        self._dummy: dict[Any, Any] = {}
        self._grid_cap = self.multiprocessors * 32

    # ------------------------------------------------------------ plumbing
    def _fn(self, name: str) -> Any:
        function = self._functions.get(name)
        if function is None:
            filename = next(f for f, names in KERNEL_FILES.items() if name in names)
            function = _module(self.device_id, filename).get_function(name)
            self._functions[name] = function
        return function

    def warmup(self) -> float:
        """Compile (or load from CuPy's disk cache) every kernel; returns the seconds spent."""
        start = time.perf_counter()
        for names in KERNEL_FILES.values():
            for name in names:
                _ = self._fn(name).num_regs  # forces compilation and module load
        cupy.cuda.Device(self.device_id).synchronize()
        return time.perf_counter() - start

    def _opt(self, array: Any, dtype: Any) -> tuple[Any, Any]:
        """(array or a 1-element dummy, flag) for an optional kernel argument."""
        if array is not None:
            return array, _i32(1)
        dummy = self._dummy.get(dtype)
        if dummy is None:
            dummy = self._dummy[dtype] = cupy.zeros(1, dtype=dtype)
        return dummy, _i32(0)

    def to_host(self, array: Any) -> np.ndarray:
        return cupy.asnumpy(array)

    # ------------------------------------------------------------ cuFFT
    def _plan(self, kind: int, size: int, batch: int) -> Any:
        key = (kind, size, batch)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = cufft.Plan1d(size, kind, batch)
        return plan

    def _run_fft(self, kind: int, src: Any, out: Any, size: int) -> None:
        rows = src.shape[0]
        step = max(1, _FFT_ELEMENTS // (size + 2))
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            plan = self._plan(kind, size, stop - start)
            plan.fft(src[start:stop], out[start:stop], cufft.CUFFT_FORWARD if kind == cufft.CUFFT_R2C else cufft.CUFFT_INVERSE)

    def rfft_rows(self, src: Any, out: Any) -> None:
        """Batched R2C of the contiguous ``(B, P)`` float32 rows into ``(B, P/2+1)`` complex64."""
        self._run_fft(cufft.CUFFT_R2C, src, out, src.shape[1])

    def irfft_rows(self, spectrum: Any, out: Any) -> None:
        """Batched unnormalised C2R into ``(B, P)`` float32; overwrites ``spectrum``."""
        self._run_fft(cufft.CUFFT_C2R, spectrum, out, out.shape[1])

    def release_plans(self) -> None:
        """Drop the cached cuFFT plans (their work areas return to the memory pool)."""
        self._plans.clear()

    # ------------------------------------------------------------ fista_fft.cu
    def residual_pad(self, full, work, valid, active, n, scale) -> None:
        rows, ld = full.shape
        valid, has_valid = self._opt(valid, cupy.float32)
        self._fn("residual_pad")(
            (_blocks(rows * ld, 256, self._grid_cap),), (256,),
            (full, work, valid, has_valid, active, _i64(rows), _i32(n), _i64(ld), _f32(scale)),
        )  # fmt: skip

    def fista_update_fft(
        self, x, ypad, full, data, boundary, tmom, iters, active, converged, threshold,
        *, gram, step, scale, box, cap, tol2, threads, min_iters=5,
    ) -> None:
        rows, n = x.shape
        if rows == 0:
            return
        edge = int(boundary.shape[0]) if gram else 0
        matrix = boundary if edge else self._opt(None, cupy.float32)[0]
        self._fn("fista_update_fft")(
            (rows,), (int(threads),),
            (x, ypad, full, data, matrix, tmom, iters, active, converged, threshold,
             _i32(n), _i64(ypad.shape[1]), _i64(full.shape[1]), _i32(edge), _i32(bool(gram)),
             _f32(step), _f32(scale), _i32(bool(box)), _i64(min(int(cap), 2**62)), _f64(tol2), _i32(min_iters)),
            shared_mem=4 * edge,
        )  # fmt: skip

    # ------------------------------------------------------------ ar2.cu
    def ar2_forward_tm(self, src, out, work, valid, active, g1, g2, gain) -> None:
        n, width = src.shape
        work, has_work = self._opt(work, cupy.float32)
        valid, has_valid = self._opt(valid, cupy.float32)
        active, has_active = self._opt(active, cupy.bool_)
        self._fn("ar2_forward_tm")(
            (_blocks(width, 64, 2**31 - 1),), (64,),
            (src, out, work, has_work, valid, has_valid, active, has_active,
             _i32(n), _i64(width), _f32(g1), _f32(g2), _f32(gain)),
        )  # fmt: skip

    def ar2_adjoint_tm(self, src, out, g1, g2, gain) -> None:
        n, width = src.shape
        self._fn("ar2_adjoint_tm")(
            (_blocks(width, 64, 2**31 - 1),), (64,),
            (src, out, _i32(n), _i64(width), _f32(g1), _f32(g2), _f32(gain)),
        )  # fmt: skip

    def ar2_adjoint_update_tm(
        self, e, x, y, tmom, iters, active, converged, threshold,
        *, g1, g2, gain, step, box, cap, tol2, min_iters=5,
    ) -> None:
        n, width = e.shape
        self._fn("ar2_adjoint_update_tm")(
            (_blocks(width, 64, 2**31 - 1),), (64,),
            (e, x, y, tmom, iters, active, converged, threshold, _i32(n), _i64(width),
             _f32(g1), _f32(g2), _f32(gain), _f32(step), _i32(bool(box)),
             _i64(min(int(cap), 2**62)), _f64(tol2), _i32(min_iters)),
        )  # fmt: skip

    def ar2_chunk_forward_local(self, src, z, ends, active, L, C, g1, g2, gain) -> None:
        n, width = src.shape
        active, has_active = self._opt(active, cupy.bool_)
        self._fn("ar2_chunk_forward_local")(
            (_blocks(C * width, 64, 2**31 - 1),), (64,),
            (src, z, ends, active, has_active, _i32(n), _i64(width), _i32(L), _i32(C),
             _f32(g1), _f32(g2), _f32(gain)),
        )  # fmt: skip

    def ar2_chunk_carry_forward(self, ends, starts, pq, active, L, C) -> None:
        width = ends.shape[1]
        active, has_active = self._opt(active, cupy.bool_)
        self._fn("ar2_chunk_carry_forward")(
            (_blocks(width, 64, 2**31 - 1),), (64,),
            (ends, starts, pq, active, has_active, _i64(width), _i32(L), _i32(C)),
        )  # fmt: skip

    def ar2_chunk_forward_fix(self, z, out, starts, pq, work, valid, active, L) -> None:
        n, width = z.shape
        work, has_work = self._opt(work, cupy.float32)
        valid, has_valid = self._opt(valid, cupy.float32)
        active, has_active = self._opt(active, cupy.bool_)
        self._fn("ar2_chunk_forward_fix")(
            (_blocks(n * width, 256, self._grid_cap),), (256,),
            (z, out, starts, pq, work, has_work, valid, has_valid, active, has_active,
             _i32(n), _i64(width), _i32(L)),
        )  # fmt: skip

    def ar2_chunk_adjoint_local(self, src, z, ends, active, L, C, g1, g2, gain) -> None:
        n, width = src.shape
        active, has_active = self._opt(active, cupy.bool_)
        self._fn("ar2_chunk_adjoint_local")(
            (_blocks(C * width, 64, 2**31 - 1),), (64,),
            (src, z, ends, active, has_active, _i32(n), _i64(width), _i32(L), _i32(C),
             _f32(g1), _f32(g2), _f32(gain)),
        )  # fmt: skip

    def ar2_chunk_carry_adjoint(self, ends, starts, pq, active, n, L, C) -> None:
        width = ends.shape[1]
        active, has_active = self._opt(active, cupy.bool_)
        self._fn("ar2_chunk_carry_adjoint")(
            (_blocks(width, 64, 2**31 - 1),), (64,),
            (ends, starts, pq, active, has_active, _i32(n), _i64(width), _i32(L), _i32(C)),
        )  # fmt: skip

    def ar2_chunk_adjoint_fix(self, z, out, starts, pq, L) -> None:
        n, width = z.shape
        self._fn("ar2_chunk_adjoint_fix")(
            (_blocks(n * width, 256, self._grid_cap),), (256,),
            (z, out, starts, pq, _i32(n), _i64(width), _i32(L)),
        )  # fmt: skip

    def ar2_chunk_adjoint_update(self, z, starts, pq, x, y, tmom, active, threshold, partials, L, C, step, box) -> None:
        n, width = z.shape
        self._fn("ar2_chunk_adjoint_update")(
            (_blocks(C * width, 64, 2**31 - 1),), (64,),
            (z, starts, pq, x, y, tmom, active, threshold, partials, _i32(n), _i64(width),
             _i32(L), _i32(C), _f32(step), _i32(bool(box))),
        )  # fmt: skip

    def fista_decide(self, partials, C, tmom, iters, active, converged, restart_flags, cap, tol2, min_iters=5) -> None:
        width = tmom.shape[0]
        self._fn("fista_decide")(
            (_blocks(width, 64, 2**31 - 1),), (64,),
            (partials, _i32(C), _i64(width), tmom, iters, active, converged, restart_flags,
             _i64(min(int(cap), 2**62)), _f64(tol2), _i32(min_iters)),
        )  # fmt: skip

    def fista_restart_tm(self, x, y, restart_flags) -> None:
        n, width = x.shape
        self._fn("fista_restart_tm")(
            (_blocks(n * width, 256, self._grid_cap),), (256,),
            (x, y, restart_flags, _i32(n), _i64(width)),
        )  # fmt: skip

    # ------------------------------------------------------------ rolling_rank.cu
    def rolling_rank(self, traces, out, window, full_rank, ranks) -> None:
        rows, n = traces.shape
        window = int(window)
        ranks_device = cupy.asarray(ranks if len(ranks) else np.zeros(1), dtype=cupy.int32)
        per_warp = 4 * window
        common = (_i32(n), _i32(window), _i32(full_rank), ranks_device)
        if per_warp <= self.shared_optin:
            warps = max(1, min(8, _SHARED_DEFAULT // per_warp))
            function = self._fn("rolling_rank_shared")
            shared = warps * per_warp
            if shared > _SHARED_DEFAULT:
                function.max_dynamic_shared_size_bytes = shared
            function(
                (math.ceil(rows / warps),), (32 * warps,),
                (traces, out, _i64(rows)) + common, shared_mem=shared,
            )  # fmt: skip
            return
        # Very long windows: keys in a global scratch row per cell, in blocks of rows.
        function = self._fn("rolling_rank_global")
        block_rows = max(1, min(rows, _SCRATCH_BYTES // per_warp))
        scratch = cupy.empty(block_rows * window, dtype=cupy.uint32)
        for start in range(0, rows, block_rows):
            stop = min(rows, start + block_rows)
            count = stop - start
            function(
                (math.ceil(count / 4),), (128,),
                (traces[start:stop], out[start:stop], scratch, _i64(count)) + common,
            )  # fmt: skip
