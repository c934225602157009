"""JAX backend: the FISTA step of :mod:`calab.engine.fista` jitted inside ``lax.while_loop``.

What differs from the generic algorithm here:

* The segment of the shared driver skeleton (:mod:`calab.backends.driver`) is up to
  ``SEGMENT`` iterations in one compiled ``lax.while_loop`` (no host sync inside); the
  batch is padded to a power-of-two bucket of rows and only re-gathered when the running
  cells fit a smaller bucket, so few shapes are ever compiled.
* Operator constants, step size and iteration cap are arguments of the compiled function,
  not closures, so a new λ, τ or trace length re-uses the compiled program whenever the
  shapes match.
* On a GPU, banded mode's AR(2) operator is applied as an FFT convolution with its
  impulse response (``banded_by_fft``): the same linear operator, evaluated in parallel
  instead of by a scan that XLA would run one time step at a time.
* On the CPU, JAX arrays live in host memory, and banded problems (InDeCa's operator,
  ``conv_mode="banded"``) run through the CPU backend's compiled kernels: the AR(2)
  recursions, the FISTA iteration and InDeCa's threshold search.  XLA cannot reproduce
  the reference's float32 rounding there: it contracts ``a·b + c`` into fused
  multiply-adds inside jitted code (no XLA option turns this off), and ``lax.scan``
  runs one time step at a time (~20 ms per 10 × 90,000 pass against 0.4 ms compiled).
  Results are those of the NumPy backend, bit for bit.  ``CALAB_JAX_HOST_KERNELS=0``
  keeps JAX's own (GPU) code paths on the CPU, for testing them without a GPU.
* The rolling order statistic is computed on the host (exact, once per solve).
* The per-cell accumulators need float64, so solves run under a *scoped*
  ``jax.enable_x64(True)``: the user's global JAX configuration is left untouched.

JAX is imported only when this backend is first used.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from calab.backends import BackendInfo, install_hint, module_installed
from calab.backends.base import Backend
from calab.backends.driver import FistaBatch
from calab.backends.types import FistaOutcome, FistaState

__all__ = ["JaxBackend"]

#: iterations per compiled segment between host checks of the active mask
SEGMENT = 32
#: smallest row bucket after compaction (and smallest Gram boundary bucket)
MIN_BUCKET = 8
#: FFT lengths are chosen from multiples of this (shape bucketing across kernel lengths)
FFT_BUCKET = 256
#: compiled segment programs kept before the cache is emptied (a long-running server
#: sees a bounded number of shapes)
MAX_COMPILED = 64

_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def _bucket(count: int) -> int:
    return max(MIN_BUCKET, 1 << max(0, (count - 1).bit_length()))


class JaxBackend(Backend):
    """XLA backend on whatever device JAX's default backend is (CPU or GPU)."""

    name = "jax"
    # XLA executes lax.scan one time step at a time (one kernel launch per step on a GPU),
    # so the banded operator runs as an FFT convolution with its exact impulse response.
    banded_by_fft = True
    compiles_per_shape = True
    # The m x m boundary matmul of long kernels (e.g. an AR(2) impulse response at
    # 300 Hz, m ~ 4000) costs far more than a second FFT pair.
    gram_max_edge = 512

    def __init__(self) -> None:
        import jax

        self._jax = jax
        self.is_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")
        self._segment = _compile_segment()
        self._host = _host_backend() if jax.default_backend() == "cpu" else None
        if self._host is not None:
            # host memory: banded problems use the CPU backend's compiled kernels
            self.banded_by_fft = False

    @classmethod
    def probe(cls) -> BackendInfo:
        if not module_installed("jax"):
            return BackendInfo("jax", False, f"JAX is not installed: {install_hint('jax')}")
        if not any(module_installed(plugin) for plugin in _GPU_PLUGINS):
            # No accelerator plugin: JAX can only run on the CPU; no need to import it.
            return BackendInfo("jax", True, "JAX on CPU (no GPU plugin installed, e.g. jax[cuda12])")
        try:
            import jax

            platform = jax.default_backend()
            devices = jax.devices()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break calab
            return BackendInfo("jax", False, f"JAX failed to initialise: {type(exc).__name__}: {exc}")
        has_gpu = platform in ("gpu", "cuda", "rocm")
        return BackendInfo("jax", True, f"JAX on {platform}: {devices[0].device_kind}", has_gpu)

    @property
    def xp(self) -> Any:
        import jax.numpy as jnp

        return jnp

    def asarray(self, array: Any, dtype: Any = np.float32) -> Any:
        from calab.backends import array_library

        jnp = self.xp
        if array_library(array) == "cupy":
            array = array.get()
        with self._jax.enable_x64(True):
            return jnp.asarray(array, dtype=dtype)

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def free_memory_bytes(self) -> int:
        device = self._jax.devices()[0]
        try:
            stats = device.memory_stats() or {}
            limit = stats.get("bytes_limit")
            if limit:
                return int(limit - stats.get("bytes_in_use", 0))
        except Exception:  # noqa: BLE001 - memory_stats is unavailable on some platforms
            pass
        return super().free_memory_bytes()

    def synchronize(self) -> None:
        self._jax.effects_barrier()

    def precision_scope(self) -> Any:
        return self._jax.enable_x64(True)

    def fft_length(self, minimum: int) -> int:
        # Shape bucketing: kernels whose lengths differ by a few taps get the same FFT
        # length (and so reuse the compiled segment).
        return super().fft_length(-(-int(minimum) // FFT_BUCKET) * FFT_BUCKET)

    def boundary_size(self, edge: int, n: int) -> int:
        return 0 if edge == 0 else max(MIN_BUCKET, 1 << (edge - 1).bit_length())

    def rfft(self, batch: Any, n: int) -> Any:
        return self.xp.fft.rfft(batch, n=n, axis=-1)

    def irfft(self, spectrum: Any, n: int) -> Any:
        return self.xp.fft.irfft(spectrum, n=n, axis=-1, norm="forward")

    def ar2_forward(self, activity: Any, g1: Any, g2: Any, gain: Any) -> Any:
        if self._host is not None:
            return self._on_host(self._host.ar2_forward, activity, g1, g2, gain)
        return _ar2_scan(self._jax, activity, g1, g2, gain, reverse=False)

    def ar2_adjoint(self, residual: Any, g1: Any, g2: Any, gain: Any) -> Any:
        if self._host is not None:
            return self._on_host(self._host.ar2_adjoint, residual, g1, g2, gain)
        return _ar2_scan(self._jax, residual, g1, g2, gain, reverse=True)

    def ar2_adjoint_of_difference(self, model: Any, data: Any, g1: Any, g2: Any, gain: Any) -> Any:
        if self._host is not None:
            return self._on_host(self._host.ar2_adjoint_of_difference, model, data, g1, g2, gain)
        return super().ar2_adjoint_of_difference(model, data, g1, g2, gain)

    def _on_host(self, method: Any, *arguments: Any) -> Any:
        """``method`` of the CPU backend on host copies of JAX arrays (CPU platform only).

        Inside traced code the call goes through ``jax.pure_callback``; eager calls
        convert directly (no XLA program is compiled for them).
        """
        jax = self._jax
        arrays, scalars = arguments[:-3], arguments[-3:]

        def host(*values):
            *inputs, g1, g2, gain = values
            inputs = [np.asarray(v, dtype=np.float32) for v in inputs]
            return np.asarray(method(*inputs, np.float32(g1), np.float32(g2), np.float32(gain)), dtype=np.float32)

        if any(isinstance(v, jax.core.Tracer) for v in arguments):
            shape = jax.ShapeDtypeStruct(arrays[0].shape, self.xp.float32)
            values = [self.xp.asarray(v, dtype=self.xp.float32) for v in arguments]
            return jax.pure_callback(host, shape, *values, vmap_method="sequential")
        return self.asarray(host(*(self.to_numpy(v) for v in arrays), *(np.asarray(v) for v in scalars)))

    def host_backend(self) -> Backend | None:
        return self._host

    def rolling_quantile(self, traces: Any, window: int, quantile: float) -> Any:
        from calab.backends.cpu import rolling_quantile_host

        # JAX has no rank filter; the exact host computation runs once per solve.
        return self.asarray(rolling_quantile_host(np.asarray(traces), window, quantile))

    def run_fista(self, plan, work, threshold, x0=None, valid=None):
        if self._host is not None and plan.kernel_spectrum is None and plan.conv_mode == "banded":
            # The AR(2) recursion on the CPU: the CPU backend's compiled iteration on the
            # same host memory (see the module docstring).
            host = self.to_numpy
            outcome = self._host.run_fista(
                plan, host(work), host(threshold), None if x0 is None else host(x0), None if valid is None else host(valid)
            )
            return FistaOutcome(self.asarray(outcome.x), outcome.iterations, outcome.converged)
        # The skeleton of Backend.run_fista, inside the scope where float64 exists.
        with self._jax.enable_x64(True):
            return super().run_fista(plan, work, threshold, x0, valid)

    def fista_batch(self, plan, work, threshold, x0=None, valid=None):
        return _JaxBatch(self, plan, work, threshold, x0, valid)

    def scatter_rows(self, out, rows, values):
        return out.at[self.xp.asarray(rows)].set(values)


class _JaxBatch(FistaBatch):
    """Segments of up to :data:`SEGMENT` steps in one compiled ``lax.while_loop``.

    Rows are padded with inactive rows to a power-of-two bucket, and the batch is only
    re-gathered when the running cells fit a smaller bucket, so few shapes are compiled.
    """

    def __init__(self, backend, plan, work, threshold, x0, valid):
        jnp = backend.xp
        core = plan.core
        self._segment = backend._segment
        self.arrays = core.operator_arrays(backend, plan)
        self.ar2 = tuple(jnp.asarray(v, dtype=jnp.float32) for v in plan.ar2)
        self.step = jnp.asarray(plan.step32, dtype=jnp.float32)
        self.cap = jnp.asarray(plan.max_iterations, dtype=jnp.int32)
        self.rule = (
            jnp.asarray(plan.tolerance_squared, dtype=jnp.float64),
            jnp.asarray(plan.min_iterations, dtype=jnp.int32),
        )
        n = plan.n_timepoints
        # The engine's step (plan.core) is a static argument: one object, compiled once.
        self.static = dict(
            conv_mode=plan.conv_mode, constraint=plan.constraint, n=n, fft_size=plan.fft_size, upsample=plan.upsample,
            core=core,
        )
        data_term = _data_term(work, self.arrays, self.ar2, **self.static)
        state = core.initial_state(jnp, work, plan.max_iterations, x0, n)
        self._set(state, data_term, threshold, valid, _bucket(work.shape[0]))

    def _set(self, state, data_term, threshold, valid, bucket):
        """Store the batch padded with inactive zero rows up to ``bucket`` rows."""
        jnp = _backend().xp
        extra = bucket - int(state.x.shape[0])

        def pad(array, value=0):
            if extra <= 0:
                return array
            filler = jnp.full((extra,) + array.shape[1:], value, dtype=array.dtype)
            return jnp.concatenate([array, filler])

        self.state = FistaState(
            pad(state.x), pad(state.y), pad(state.t, 1.0), pad(state.k), pad(state.active, False), pad(state.converged, False)
        )
        self.data_term, self.threshold = pad(data_term), pad(threshold)
        self.valid = None if valid is None else pad(valid)

    @property
    def rows(self):
        return int(self.state.x.shape[0])

    def advance(self):
        if self._segment._cache_size() > MAX_COMPILED:
            self._segment.clear_cache()
        self.state = self._segment(
            self.state, self.data_term, self.threshold, self.valid, self.arrays, self.ar2, self.step, self.cap, self.rule,
            **self.static,
        )  # fmt: skip

    def active(self):
        return np.asarray(self.state.active, dtype=bool)

    def compact_now(self, running):
        return _bucket(running) < self.rows

    def harvest(self, index):
        rows = _backend().xp.asarray(index)
        state = self.state
        return state.x[rows], np.asarray(state.k[rows]).astype(np.int64), np.asarray(state.converged[rows]).astype(bool)

    def compact(self, keep):
        rows = _backend().xp.asarray(keep)
        state = FistaState(*(part[rows] for part in self.state))
        valid = None if self.valid is None else self.valid[rows]
        self._set(state, self.data_term[rows], self.threshold[rows], valid, _bucket(keep.size))


def _host_backend() -> Backend | None:
    """The CPU backend, when its compiled kernels exist (Numba), for JAX on the CPU.

    ``CALAB_JAX_HOST_KERNELS=0`` keeps JAX's own code paths on the CPU too (the ones a
    GPU runs; for testing them without a GPU).
    """
    import os

    from calab.backends import get_backend
    from calab.backends.cpu import _kernels

    if os.environ.get("CALAB_JAX_HOST_KERNELS", "1").strip() == "0" or not _kernels.HAVE_NUMBA:
        return None
    return get_backend("numpy")


def _ar2_scan(jax, batch, g1, g2, gain, reverse):
    """AR(2) recursion over time (axis -1) with ``lax.scan``, in the reference's order."""
    jnp = jax.numpy
    zero = jnp.zeros(batch.shape[:-1], dtype=batch.dtype)
    columns = jnp.moveaxis(batch, -1, 0)
    if not reverse:
        # o_t = (g1 o_{t-1} + g2 o_{t-2}) + s_{t-1} gain, o_0 = 0
        def step(carry, source):
            last1, last2 = carry
            value = (g1 * last1 + g2 * last2) + source * gain
            return (value, last1), value

        _, values = jax.lax.scan(step, (zero, zero), columns[:-1])
        out = jnp.concatenate([zero[None], values])
    else:
        # a_t = (e_t gain + g1 a_{t+1}) + g2 a_{t+2}, out_{t-1} = a_t, out_{n-1} = 0
        def step(carry, source):
            next1, next2 = carry
            value = (source * gain + g1 * next1) + g2 * next2
            return (value, next1), value

        _, values = jax.lax.scan(step, (zero, zero), columns[1:], reverse=True)
        out = jnp.concatenate([values, zero[None]])
    return jnp.moveaxis(out, 0, -1)


def _backend():
    from calab.backends import get_backend

    return get_backend("jax")


def _data_term(work, arrays, ar2, *, conv_mode, constraint, n, fft_size, upsample, core):
    operator = core.build_operator(_backend(), conv_mode, n, fft_size, arrays, ar2, upsample)
    return core.data_gradient(operator, work)


def _compile_segment():
    import jax
    import jax.numpy as jnp

    class _StepConstants:
        """The attributes of SolvePlan that the step reads, as traced values."""

        def __init__(self, step32, constraint, max_iterations, tolerance_squared, min_iterations):
            self.step32, self.constraint, self.max_iterations = step32, constraint, max_iterations
            self.tolerance_squared, self.min_iterations = tolerance_squared, min_iterations

    @partial(jax.jit, static_argnames=("conv_mode", "constraint", "n", "fft_size", "upsample", "core"))
    def segment(
        state, data_term, threshold, valid, arrays, ar2, step, cap, rule, *, conv_mode, constraint, n, fft_size, upsample,
        core,
    ):
        operator = core.build_operator(_backend(), conv_mode, n, fft_size, arrays, ar2, upsample)
        constants = _StepConstants(step, constraint, cap, *rule)

        def keep_going(carry):
            count, current = carry
            return (count < SEGMENT) & jnp.any(current.active)

        def advance(carry):
            count, current = carry
            return count + 1, core.fista_step(jnp, operator, constants, data_term, threshold, valid, current, freeze=True)

        return jax.lax.while_loop(keep_going, advance, (0, state))[1]

    return segment
