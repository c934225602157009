"""The small interface every compute backend implements.

Algorithms (:mod:`calab.engine`, :mod:`calab.filters`) are written once against this
interface and the backend's array namespace ``xp``; a backend only supplies what must
differ between array libraries: transfers, FFTs, the sequential AR(2) recursions, the
rolling order statistic, memory queries and the *segment* of the FISTA driver (how a
batch's iterations run between two host syncs: a host loop for NumPy/CuPy,
``lax.while_loop`` for JAX, fused kernels for CUDA).  The driver skeleton around the
segments (sync, compaction, outputs) is :func:`calab.backends.driver.run_segments`,
the same for every backend.

Every hook is declared here; those with a sensible generic version have it as default,
so a backend overrides only what pays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from calab.backends.driver import FistaBatch, run_segments
from calab.backends.types import FistaOutcome, FistaState, SolvePlan

if TYPE_CHECKING:  # pragma: no cover
    from calab.backends import BackendInfo


class Backend(ABC):
    """Abstract compute backend.

    Arrays handed to and returned by these methods live on the backend's device and are
    float32 ``(n_cells, n_timepoints)`` batches unless stated otherwise.
    """

    #: registry name ("numpy", "jax", "cupy")
    name: ClassVar[str]
    #: True when arrays live on a GPU
    is_gpu: bool = False
    #: Evaluate banded mode's AR(2) operator as an FFT convolution with its impulse
    #: response, for array libraries that run a sequential scan one step at a time.
    banded_by_fft: bool = False
    #: Steps of the generic segment between two reads of the active mask.
    check_every: int = 1
    #: The first call with a new shape compiles programs (timings should skip it).
    compiles_per_shape: bool = False
    #: Longest Gram boundary correction (kernel taps − 1) worth doing; beyond it the
    #: gradient takes the residual form (two FFT pairs).  The correction is an m x m
    #: matrix (O(m²) memory, O(m²) work per row and iteration): at m ~ 1000 it costs
    #: about a second FFT pair of a 10,000-frame trace, and a 1 kHz recording with
    #: τd = 1.9 s (m ~ 27,000) would need a 5.5 GB matrix.  None: always the Gram form.
    gram_max_edge: int | None = 1024
    #: Segments ``S`` of the segmented AR(2) recursions (:mod:`calab.engine.segments`)
    #: for problems that allow them (``Problem(reference_rounding=False)``); 0: this
    #: backend keeps the sequential recursion.
    ar2_segment_lanes: int = 0

    # ----------------------------------------------------------------- discovery
    @classmethod
    @abstractmethod
    def probe(cls) -> BackendInfo:
        """Say whether this backend can run here; must never raise."""

    # ----------------------------------------------------------------- arrays
    @property
    @abstractmethod
    def xp(self) -> Any:
        """The array namespace (``numpy``, ``cupy`` or ``jax.numpy``)."""

    @abstractmethod
    def asarray(self, array: Any, dtype: Any = np.float32) -> Any:
        """Copy or move ``array`` onto this backend's device with ``dtype``."""

    @abstractmethod
    def to_numpy(self, array: Any) -> np.ndarray:
        """Return a host NumPy copy (or view) of a device array."""

    def free_memory_bytes(self) -> int:
        """Bytes a solve may use on the device; drives cell chunking."""
        try:
            import os

            pages = os.sysconf("SC_AVPHYS_PAGES")
            page_size = os.sysconf("SC_PAGE_SIZE")
            return int(pages * page_size)
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            return 4 << 30

    def max_chunk_cells(self, n_cells: int, n_timepoints: int) -> int:
        """How many cells one solve chunk may hold, from the free device memory.

        A solve keeps about a dozen ``(cells, n)`` float32 temporaries plus FFT buffers;
        half the free memory is the budget so other work on the device keeps room.
        """
        per_cell = 4 * n_timepoints * 16 + 8 * 2 * (self.fft_length(2 * n_timepoints) // 2 + 1) * 3
        return max(1, int(0.5 * self.free_memory_bytes()) // max(per_cell, 1))

    def precision_scope(self) -> Any:
        """Context in which float64 per-cell reductions are available (JAX scopes x64)."""
        import contextlib

        return contextlib.nullcontext()

    def min_chunk_cells(self) -> int:
        """Smallest chunk worth launching (used when progress display asks for small chunks)."""
        return 1024

    def synchronize(self) -> None:
        """Block until queued device work is done (for timing); no-op on the CPU."""

    # ----------------------------------------------------------------- building blocks
    def fft_length(self, minimum: int) -> int:
        """FFT length used for a linear convolution needing at least ``minimum`` points.

        Any length ``>= n + N_k - 1`` gives the same mathematical result (no wrap-around);
        only float32 rounding changes.  The default picks a fast 2·3·5-smooth length.
        """
        import scipy.fft

        return int(scipy.fft.next_fast_len(int(minimum), real=True))

    def boundary_size(self, edge: int, n: int) -> int:
        """Rows of the Gram boundary matrix for a kernel of ``edge + 1`` taps on ``n`` samples.

        The matrix is zero-padded (at the top-left, where it multiplies earlier samples by
        zero) up to this size.  Default: no padding.  Backends that compile per shape
        bucket it, so a new kernel length reuses the compiled programs.
        """
        return edge

    @abstractmethod
    def rfft(self, batch: Any, n: int) -> Any:
        """Real FFT of length ``n`` along the last axis (zero-padded), single precision."""

    @abstractmethod
    def irfft(self, spectrum: Any, n: int) -> Any:
        """Inverse real FFT of length ``n`` along the last axis, *unnormalised*."""

    def gram_filter(self, batch: Any, size: int, power: Any, boundary: Any) -> Any:
        """``KᵀK batch`` for the FFT-mode operator truncated to ``n = batch.shape[-1]``.

        One FFT pair with the kernel's power spectrum ``|K̂|²`` applies the untruncated
        autocorrelation filter (``power`` is ``|K̂|²/size``, so the unnormalised inverse FFT
        needs no further scaling); the last ``m`` samples, where truncation matters, are then
        corrected by ``batch[:, n−m:] @ boundary`` (see :func:`calab.engine.fista.gram_boundary`).
        """
        xp = self.xp
        n = batch.shape[-1]
        full = self.irfft(self.rfft(batch, size) * power, size)[..., :n]
        edge = boundary.shape[0]
        if edge == 0:
            return full
        correction = batch[..., n - edge :] @ boundary
        return xp.concatenate([full[..., : n - edge], full[..., n - edge :] - correction], axis=-1)

    @abstractmethod
    def ar2_forward(self, activity: Any, g1: np.float32, g2: np.float32, gain: np.float32) -> Any:
        """Banded forward operator: ``o_t = g1 o_{t-1} + g2 o_{t-2} + gain s_{t-1}``, ``o_0 = 0``."""

    @abstractmethod
    def ar2_adjoint(self, residual: Any, g1: np.float32, g2: np.float32, gain: np.float32) -> Any:
        """Exact transpose of :meth:`ar2_forward`."""

    def ar2_adjoint_of_difference(self, model: Any, data: Any, g1: np.float32, g2: np.float32, gain: np.float32) -> Any:
        """``ar2_adjoint(model − data)``; backends may fuse the float32 subtraction."""
        return self.ar2_adjoint(model - data, g1, g2, gain)

    def ar2_segment_forward(self, activity: Any, segments: Any) -> Any:
        """``K s`` in the segment layout (the generic version on the plan's ``segments``)."""
        return segments.forward(self.xp, activity, self.to_numpy)

    def ar2_segment_adjoint_of_difference(self, model: Any, data: Any, segments: Any) -> Any:
        """``Kᵀ(model − data)`` in the segment layout (padding of both is 0)."""
        return segments.adjoint_of_difference(self.xp, model, data, self.to_numpy)

    @abstractmethod
    def rolling_quantile(self, traces: Any, window: int, quantile: float) -> Any:
        """Causal rolling order statistic (see :func:`calab.filters.rolling_baseline`)."""

    # ----------------------------------------------------------------- driver
    def fista_update(
        self, xp: Any, plan: SolvePlan, state: FistaState, gradient: Any, threshold: Any, freeze: bool
    ) -> FistaState:
        """Proximal step, momentum, restart and convergence of one iteration.

        Default: the engine's generic update (``plan.core.proximal_update``,
        :func:`calab.engine.fista.proximal_update`); a backend may fuse it (same arithmetic,
        fewer memory passes).
        """
        return plan.core.proximal_update(xp, plan, state, gradient, threshold, freeze)

    def fista_batch(
        self, plan: SolvePlan, work: Any, threshold: Any, x0: Any | None = None, valid: Any | None = None
    ) -> FistaBatch:
        """The device state of a batch for the driver skeleton.

        Default: the engine's generic step (``plan.core.step_batch``,
        :class:`calab.engine.fista.StepBatch`) run :attr:`check_every` times per segment
        (finished cells frozen by the mask when more than one).
        """
        return plan.core.step_batch(self, plan, work, threshold, x0, valid, check_every=self.check_every)

    def scatter_rows(self, out: Any, rows: np.ndarray, values: Any) -> Any:
        """Write ``values`` into rows ``rows`` of ``out``; return ``out`` (in place by default)."""
        out[self.asarray(rows, dtype=np.int64)] = values
        return out

    def run_fista(
        self,
        plan: SolvePlan,
        work: Any,
        threshold: Any,
        x0: Any | None = None,
        valid: Any | None = None,
    ) -> FistaOutcome:
        """Iterate FISTA to convergence or the cap for a whole batch.

        The driver skeleton :func:`~calab.backends.driver.run_segments` over
        :meth:`fista_batch`; backends wrap it (thread blocks on the CPU, out-of-memory
        splitting on CUDA, JAX's precision scope) but do not re-implement it.

        Parameters
        ----------
        plan : SolvePlan
        work : device array, shape (B, n / upsample), float32
            Data (baseline already removed).
        threshold : device array, shape (B,), float32
            Per-cell soft threshold.
        x0 : device array, shape (B, n), float32, optional
            Warm start.
        valid : device array, shape (B, n / upsample), float32, optional
            Ragged-row mask.
        """
        xp = self.xp
        n_cells = int(work.shape[0])
        shape = (n_cells, plan.n_timepoints)
        out_x = xp.zeros(shape, dtype=xp.float32) if x0 is None else xp.array(x0, dtype=xp.float32, copy=True)
        if plan.max_iterations == 0 or n_cells == 0 or plan.n_timepoints == 0:
            return FistaOutcome(out_x, np.zeros(n_cells, dtype=np.int64), np.zeros(n_cells, dtype=bool))
        batch = self.fista_batch(plan, work, threshold, x0, valid)
        return run_segments(batch, out_x, self.scatter_rows)

    def for_row_blocks(self, function: Callable[[slice], object], n_rows: int) -> None:
        """Call ``function(rows)`` over row blocks covering ``range(n_rows)``.

        Default: one call with every row.  Host backends whose kernels release the GIL
        run one block per core on their thread pool.
        """
        if n_rows:
            function(slice(0, n_rows))

    # ----------------------------------------------------------------- InDeCa hooks
    def scale_round_pipeline(self, n_cells: int) -> Callable[[Callable, int, int], None] | None:
        """How InDeCa's scale rounds of ``n_cells`` cells are scheduled, or None.

        None (default): every round solves all cells still running as one batch, and the
        next round waits for the last of them.  A backend may instead return
        ``run(scale_round, n_cells, max_rounds)`` that calls ``scale_round(cells, first)``
        (sorted cell indices, a boolean mask of their first round) on groups of cells in
        any order and concurrency, each cell's rounds in sequence, until every cell has
        finished (``scale_round`` returns a finished mask) or run ``max_rounds`` rounds.
        Every cell's numbers are its own, so the results do not depend on the schedule.
        """
        return None

    #: True when device arrays are host NumPy arrays, so compiled host kernels (and host
    #: threads over row blocks) apply.
    host_arrays: bool = False

    def host_backend(self) -> Backend | None:
        """The backend whose compiled host kernels work on this backend's memory, if any.

        The CPU backend for itself and for JAX on the CPU (host memory, no transfer);
        None on GPUs.  Pipelines that depend on the reference's exact float32 rounding
        (InDeCa's solve) run there.
        """
        return None

    def __repr__(self) -> str:
        return f"<calab backend {self.name!r}>"
