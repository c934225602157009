"""CuPy (CUDA) backend: a whole dataset deconvolved on one GPU.

Registered as ``"cupy"`` and chosen by auto-selection whenever a CUDA device is usable.
Importing this module never imports CuPy; :meth:`CupyBackend.probe` says why the backend
cannot run (CuPy missing, no driver, no device, toolkit/driver mismatch, missing CUDA
libraries) without raising.

What runs on the device
-----------------------
* **FISTA** (:meth:`CupyBackend.run_fista`): the host driver of
  :mod:`calab.backends.cuda._driver` over the CUDA kernels of ``kernels/*.cu``:

  - FFT mode: batched cuFFT R2C/C2R with cached plans on preallocated, zero-padded
    buffers (``y`` lives inside the padded FFT input), one fused kernel per step for the
    gradient assembly + proximal step + momentum + per-cell float64 accumulators +
    restart + convergence + freeze mask, and a fused residual/padding kernel between the
    FFTs where the residual form is used (ragged batches, very long kernels);
  - banded mode: time-major ``(n, cells)`` arrays, the forward AR(2) recursion fused with
    the residual and the adjoint recursion fused with the whole FISTA update, one thread
    per cell; a chunked scan (local pass, carry pass, fix-up) when cells are too few to
    fill the GPU.

  The host syncs once every ``CALAB_CUDA_CHECK_EVERY`` (default 10) steps to read which
  cells are still running, and gathers the batch down to them when enough have finished.
* **Rolling baseline** (:meth:`CupyBackend.rolling_quantile`): exact rolling order
  statistic, one warp per cell keeping its window sorted in shared memory.
* **Band-pass filter and operators**: cuFFT through :meth:`rfft`/:meth:`irfft`; the
  banded operator through the AR(2) kernels.

Memory: :meth:`max_chunk_cells` sizes cell chunks from the device's free memory (plus the
free blocks of CuPy's pool); an out-of-memory error inside the solve or the baseline frees
the pool and the FFT plans, halves the block of cells and retries for the rest of that
solve (later solves start from the full budget again), so a dataset larger than the GPU
streams through and one failure does not slow a long-running process down.

Environment
-----------
``CALAB_CUDA_CHECK_EVERY``  steps between two syncs (default 10);
``CALAB_CUDA_AR2_CHUNKS``   force the number of time chunks of the banded scan (``auto``);
``CALAB_CUDA_FUSED=0``      use the generic step (:class:`calab.engine.fista.StepBatch`) instead
                            of the fused kernels (the on-GPU oracle);
``CALAB_CUDA_UNROLL``       samples each thread of the sequential AR(2) kernels loads ahead
                            (compile-time, default 16).

The CUDA kernels' algorithms are transliterated to NumPy in
:mod:`calab.backends.cuda.reference`, where the same host driver runs on the CPU.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from calab.backends import BackendInfo, module_installed, array_library, install_hint
from calab.backends.base import Backend
from calab.backends.types import FistaOutcome
from calab.backends.cuda import _driver

__all__ = ["CupyBackend", "is_out_of_memory", "probe_cupy"]


# --------------------------------------------------------------------------- probing
def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{(value % 1000) // 10}" if value else "none"


def _unusable(reason: str) -> BackendInfo:
    return BackendInfo("cupy", False, reason, False)


def probe_cupy() -> BackendInfo:
    """Say whether CuPy can compute on a CUDA device here, and why not; never raises."""
    hint = install_hint("cupy")
    if not module_installed("cupy"):
        return _unusable(f"CuPy is not installed: {hint}")
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - a broken install must not break calab
        return _unusable(
            f"CuPy is installed but fails to import ({type(exc).__name__}: {exc}); the CUDA "
            f"libraries it was built against are missing or do not match: reinstall with {hint}"
        )
    version = getattr(cupy, "__version__", "?")
    runtime = cupy.cuda.runtime
    try:
        driver = int(runtime.driverGetVersion())
    except Exception:  # noqa: BLE001
        driver = 0
    try:
        built = int(runtime.runtimeGetVersion())
    except Exception:  # noqa: BLE001
        built = 0
    if driver == 0:
        return _unusable(
            f"no NVIDIA CUDA driver found (libcuda cannot be loaded): CuPy {version} is "
            "installed but needs an NVIDIA GPU and its driver"
        )
    try:
        count = int(runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        if "InsufficientDriver" in text or "insufficient" in text.lower():
            return _unusable(
                f"the NVIDIA driver supports CUDA {_cuda_version(driver)} but CuPy {version} is built "
                f"for CUDA {_cuda_version(built)}: upgrade the driver, or install the CuPy build for "
                f"your driver ({hint})"
            )
        if "NoDevice" in text:
            count = 0
        else:
            return _unusable(f"the CUDA runtime cannot start ({type(exc).__name__}: {text})")
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return _unusable(f"no CUDA device is visible{where}; NVIDIA driver CUDA {_cuda_version(driver)}")
    try:
        device = cupy.cuda.Device()
        props = runtime.getDeviceProperties(device.id)
        name = props.get("name", b"?")
        name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        memory = float(props.get("totalGlobalMem", 0)) / 2**30
        arch = f"sm_{props.get('major', '?')}{props.get('minor', '?')}"
    except Exception as exc:  # noqa: BLE001
        return _unusable(f"cannot query CUDA device: {type(exc).__name__}: {exc}")
    try:  # allocation, an NVRTC-compiled kernel, a reduction and cuFFT
        probe = cupy.arange(16, dtype=cupy.float32)
        float((probe * probe).sum())
        cupy.fft.rfft(probe)
        cupy.cuda.get_current_stream().synchronize()
    except Exception as exc:  # noqa: BLE001
        return _unusable(
            f"CUDA device {device.id} ({name}) found, but a test computation failed "
            f"({type(exc).__name__}: {exc}); the CUDA toolkit libraries CuPy needs (NVRTC, cuFFT) "
            f"are missing or do not match the driver: install them with pip install "
            f"'cupy-cuda12x[ctk]' / 'cupy-cuda13x[ctk]' or a CUDA toolkit ({hint})"
        )
    return BackendInfo(
        "cupy",
        True,
        f"CUDA device {device.id}: {name} ({arch}, {memory:.1f} GiB), driver CUDA "
        f"{_cuda_version(driver)}, CuPy {version} (CUDA {_cuda_version(built)})",
        True,
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the device out-of-memory errors of CuPy, cuFFT, cuBLAS and the runtime."""
    try:
        import cupy

        if isinstance(exc, cupy.cuda.memory.OutOfMemoryError):
            return True
    except Exception:  # noqa: BLE001
        pass
    text = f"{type(exc).__name__}: {exc}"
    markers = ("OutOfMemory", "out of memory", "ALLOC_FAILED", "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY")
    return any(marker in text for marker in markers)


def _fused_enabled() -> bool:
    return os.environ.get("CALAB_CUDA_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------- backend
class CupyBackend(Backend):
    """CUDA backend on CuPy: fused FISTA kernels, cuFFT, device rolling baseline.

    Computations run on CuPy's current device (``with cupy.cuda.Device(i):`` or
    ``cupy.cuda.Device(i).use()`` selects it, as everywhere in CuPy); a CuPy input on
    another device is copied to it, and the outputs live there.
    """

    name = "cupy"
    is_gpu = True
    compiles_per_shape = True

    def __init__(self) -> None:
        import cupy

        self._cupy = cupy
        self._kernels: dict[int, Any] = {}
        self._lock = threading.Lock()
        #: multiplier of the free memory a chunk may plan for (a user setting; an
        #: out-of-memory recovery does not change it)
        self.memory_scale = 1.0
        #: out-of-memory recoveries so far (diagnostics)
        self.oom_recoveries = 0

    @classmethod
    def probe(cls) -> BackendInfo:
        return probe_cupy()

    # ------------------------------------------------------------ arrays
    @property
    def xp(self) -> Any:
        return self._cupy

    def asarray(self, array: Any, dtype: Any = np.float32) -> Any:
        cupy = self._cupy
        library = array_library(array)
        if library == "cupy":
            if array.device.id != cupy.cuda.Device().id:
                array = array.copy()  # ndarray.copy() lands on the current device
            return cupy.asarray(array, dtype=dtype)
        if library == "jax":
            try:  # a JAX array on a GPU: zero-copy through DLPack
                return cupy.from_dlpack(array).astype(dtype, copy=False)
            except Exception:  # noqa: BLE001 - JAX on the CPU, or another device
                array = np.asarray(array)
        return cupy.asarray(np.asarray(array, dtype=dtype))

    def to_numpy(self, array: Any) -> np.ndarray:
        if array_library(array) == "cupy":
            return array.get()
        return np.asarray(array)

    def kernels(self) -> Any:
        """The :class:`~calab.backends.cuda._device.CupyKernels` of the current device."""
        device = int(self._cupy.cuda.Device().id)
        with self._lock:
            ops = self._kernels.get(device)
            if ops is None:
                from calab.backends.cuda._device import CupyKernels

                ops = self._kernels[device] = CupyKernels(device)
        return ops

    def warmup(self) -> float:
        """Compile (or load from the disk cache) every CUDA kernel now; seconds spent."""
        return self.kernels().warmup()

    # ------------------------------------------------------------ memory
    def free_memory_bytes(self) -> int:
        cupy = self._cupy
        free, _total = cupy.cuda.runtime.memGetInfo()
        pool = cupy.get_default_memory_pool()
        available = int(free) + int(pool.free_bytes())
        limit = int(pool.get_limit())
        if limit:
            available = min(available, max(0, limit - int(pool.used_bytes())))
        return available

    def max_chunk_cells(self, n_cells: int, n_timepoints: int) -> int:
        n = max(int(n_timepoints), 1)
        size = self.fft_length(n + max(256, n // 8))
        budget = int(self.free_memory_bytes() * self.memory_scale)
        return _driver.budget_cells(budget, n, size)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def _recover(self) -> None:
        """After an out-of-memory error: free cached blocks and plans.

        The failed solve retries in smaller blocks (:func:`_driver.split_on_oom`); nothing
        after it is affected, so one failure never degrades a long-running process.
        """
        self.oom_recoveries += 1
        for ops in list(self._kernels.values()):
            ops.release_plans()
        try:
            self._cupy.fft.config.get_plan_cache().clear()
        except Exception:  # noqa: BLE001 - older CuPy
            pass
        self._cupy.get_default_memory_pool().free_all_blocks()

    def _split(self, run: Any, total: int, what: str) -> list[Any]:
        if total == 0:
            return [run(0, 0)]
        return _driver.split_on_oom(run, total, is_oom=is_out_of_memory, recover=self._recover, what=what)

    # ------------------------------------------------------------ building blocks
    def rfft(self, batch: Any, n: int) -> Any:
        return self._cupy.fft.rfft(batch, n=n, axis=-1)

    def irfft(self, spectrum: Any, n: int) -> Any:
        return self._cupy.fft.irfft(spectrum, n=n, axis=-1, norm="forward")

    def ar2_forward(self, activity: Any, g1: np.float32, g2: np.float32, gain: np.float32) -> Any:
        return _driver.ar2_apply(self.kernels(), activity, g1, g2, gain, adjoint=False)

    def ar2_adjoint(self, residual: Any, g1: np.float32, g2: np.float32, gain: np.float32) -> Any:
        return _driver.ar2_apply(self.kernels(), residual, g1, g2, gain, adjoint=True)

    def rolling_quantile(self, traces: Any, window: int, quantile: float) -> Any:
        ops = self.kernels()
        traces = self._cupy.asarray(traces, dtype=self._cupy.float32)

        def run(start: int, stop: int) -> Any:
            return _driver.rolling_quantile(ops, traces[start:stop], window, quantile)

        parts = self._split(run, traces.shape[0], "traces")
        return parts[0] if len(parts) == 1 else self._cupy.concatenate(parts)

    # ------------------------------------------------------------ driver
    #: steps between two reads of the active mask in the generic segment
    check_every = _driver.CHECK_EVERY

    def fista_batch(self, plan, work, threshold, x0=None, valid=None):
        """The fused CUDA segment when it covers the plan, else the generic step."""
        if _fused_enabled() and _driver.supports(plan):
            return _driver.make_batch(self.kernels(), plan, work, threshold, x0, valid)
        return super().fista_batch(plan, work, threshold, x0, valid)

    def run_fista(self, plan, work, threshold, x0=None, valid=None):
        """The driver skeleton per block of cells; a block that runs out of memory is halved."""
        fused = _fused_enabled() and _driver.supports(plan)
        ops = self.kernels()
        total = work.shape[0]
        # Once the batch has been split, each block's activity is copied into one output
        # allocated then: joining the blocks at the end would need the output twice over
        # exactly when memory is short.
        joined: list[Any] = []

        def run(start: int, stop: int) -> Any:
            rows = slice(start, stop)
            part = (work[rows], threshold[rows], None if x0 is None else x0[rows], None if valid is None else valid[rows])
            x, iterations, converged = _driver.solve(ops, plan, *part) if fused else tuple(Backend.run_fista(self, plan, *part))
            if stop - start == total:
                return x, iterations, converged
            if not joined:
                joined.append(self._cupy.empty((total,) + tuple(x.shape[1:]), dtype=x.dtype))
            joined[0][rows] = x
            return None, iterations, converged

        parts = self._split(run, total, "cells")
        if len(parts) == 1 and parts[0][0] is not None:
            return FistaOutcome(*parts[0])
        return FistaOutcome(joined[0], np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))

    def run_fista_generic(self, plan, work, threshold, x0=None, valid=None):
        """The generic step (:func:`calab.engine.fista.proximal_update`) on CuPy arrays: the oracle."""
        return plan.core.run_host_loop(self, plan, work, threshold, x0, valid, check_every=_driver.CHECK_EVERY,
                                       freeze=True)
