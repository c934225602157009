"""Interface types shared by the solver core and the backends (no algorithm here).

:class:`SolvePlan` (the compiled, data-independent constants of a solve),
:class:`FistaState` (a batch's iteration state) and :class:`FistaOutcome` (what a driver
returns) are read by the backends and built by :mod:`calab.engine`; they live in the
backend layer so that neither side imports the other to know them.  The engine's generic
FISTA pieces reach a backend the same way: as :attr:`SolvePlan.core`, a
:class:`FistaCore` the engine puts on every plan, so the backends never import the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

__all__ = ["FistaCore", "FistaOutcome", "FistaState", "SolvePlan"]


class FistaCore(Protocol):
    """The generic FISTA pieces a backend runs, wraps or compiles (see :mod:`calab.engine.fista`).

    The engine hands them over on every plan (:attr:`SolvePlan.core`); a backend calls
    ``plan.core.proximal_update(...)`` and so on instead of importing the layer above it.
    """

    def proximal_update(self, xp: Any, plan: SolvePlan, state: FistaState, gradient: Any, threshold: Any,
                        freeze: bool = True) -> FistaState:
        """Proximal step, momentum, restart and convergence for every cell."""

    def step_batch(self, backend: Any, plan: SolvePlan, work: Any, threshold: Any, x0: Any | None = None,
                   valid: Any | None = None, *, check_every: int = 1, freeze: bool | None = None) -> Any:
        """The generic segment of the driver skeleton (a :class:`~calab.backends.driver.FistaBatch`)."""

    def run_host_loop(self, backend: Any, plan: SolvePlan, work: Any, threshold: Any, x0: Any | None = None,
                      valid: Any | None = None, *, check_every: int = 1, freeze: bool = False) -> FistaOutcome:
        """The driver skeleton over the generic step, whatever the backend's own segment."""

    def initial_state(self, xp: Any, work: Any, cap: int, x0: Any | None = None, n: int | None = None) -> FistaState:
        """Cold or warm start of a batch."""

    def operator_arrays(self, backend: Any, plan: SolvePlan) -> tuple[Any, ...]:
        """Device copies of the operator constants of ``plan``."""

    def build_operator(self, backend: Any, conv_mode: str, n: int, fft_size: int, arrays: tuple[Any, ...],
                       ar2: tuple[Any, Any, Any], upsample: int = 1, segments: Any = None) -> Any:
        """The operator ``R K`` from explicit constants (jit-friendly)."""

    def data_gradient(self, operator: Any, work: Any) -> Any:
        """``Kᵀ work`` in Gram form, else ``work``."""

    def fista_step(self, xp: Any, operator: Any, plan: Any, data_term: Any, threshold: Any, valid: Any | None,
                   state: FistaState, *, freeze: bool = True, update: Any = ...) -> FistaState:
        """One FISTA iteration for every active cell of the batch."""


@dataclass(frozen=True)
class SolvePlan:
    """Data-independent constants of a solve, computed once on the host.

    Attributes
    ----------
    n_timepoints : int
        Length of the (padded) time axis of the batch.
    conv_mode, constraint : str
        ``"fft"``/``"banded"`` and ``"nonneg"``/``"box01"``.
    kernel : numpy.ndarray
        ``(N_k,)`` float32 taps of the FFT operator: :func:`calab.build_kernel` in FFT
        mode; in banded mode on a backend that evaluates the recursion as a convolution
        (``Backend.banded_by_fft``), the AR(2) impulse response.
    dc_gain : float
        ``G = Σ kernel`` in float64; the L1 weight is ``λ G``.
    lipschitz : float
        ``L``: ``G²`` in FFT mode, the AR(2) bound in banded mode.
    fft_size : int
        Padded FFT length ``>= n + N_k − 1`` (no wrap-around); 0 when the operator is the
        AR(2) recursion.
    kernel_spectrum : numpy.ndarray or None
        ``(fft_size // 2 + 1,)`` complex64 rFFT of the zero-padded kernel.
    ar2 : tuple of numpy.float32
        ``(g1, g2, 1/peak)`` of the banded recursion, as float32.
    max_iterations : int
        Effective iteration cap (:attr:`calab.engine.StoppingRule.cap`).
    tolerance_squared : float
        ``tol²`` of the convergence test (float64).
    min_iterations : int
        Convergence is tested only when the iteration count exceeds it.
    upsample : int
        Activity samples per data sample; ``n_timepoints`` is the activity length and data
        rows have ``n_timepoints / upsample`` samples.
    segments : calab.engine.segments.SegmentPlan or None
        The segmented AR(2) recursions' constants, when the problem asks for them; its
        ``forward``/``adjoint_of_difference`` evaluate them on any array namespace.
    core : FistaCore
        The engine's generic FISTA pieces (set by the engine on every plan).
    exponentials : tuple or None
        FFT mode with taps that are a truncated difference of two exponentials
        (``KernelTaps.exponentials``) and no upsampling: ``(decay, rise, decay**N_k,
        rise**N_k, 1/peak, N_k)``, for backends that apply the operator by recursions.
    """

    n_timepoints: int
    conv_mode: str
    constraint: str
    kernel: np.ndarray
    dc_gain: float
    lipschitz: float
    fft_size: int
    kernel_spectrum: np.ndarray | None
    ar2: tuple[np.float32, np.float32, np.float32]
    max_iterations: int
    tolerance_squared: float = 1e-4 * 1e-4
    min_iterations: int = 5
    upsample: int = 1
    segments: Any = field(default=None, compare=False, repr=False)
    core: Any = field(default=None, compare=False, repr=False)
    exponentials: tuple | None = None
    device_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_data(self) -> int:
        """Length of a data row: ``n_timepoints / upsample``."""
        return self.n_timepoints // self.upsample

    @property
    def step(self) -> float:
        """Gradient step ``1/L`` (float64)."""
        return 1.0 / self.lipschitz

    @property
    def step32(self) -> np.float32:
        return np.float32(self.step)

    def thresholds(self, lam: np.ndarray) -> np.ndarray:
        """Per-cell soft thresholds ``f32(step · λ · G)`` for λ of shape ``(n_cells,)``."""
        return (self.step * (np.asarray(lam, dtype=np.float64) * self.dc_gain)).astype(np.float32)


class FistaState(NamedTuple):
    """Per-batch FISTA state (a pytree for JAX).

    ``x``, ``y``: ``(B, n)`` float32 solution and extrapolated point; ``t``: ``(B,)``
    float64 momentum parameter; ``k``: ``(B,)`` int32 iterations run; ``active``: ``(B,)``
    cells still iterating; ``converged``: ``(B,)`` convergence flags.
    """

    x: Any
    y: Any
    t: Any
    k: Any
    active: Any
    converged: Any


class FistaOutcome(NamedTuple):
    """Result of a driver run: ``x`` ``(B, n)`` float32 on the device, and host vectors
    ``iterations`` ``(B,)`` int64 and ``converged`` ``(B,)`` bool."""

    x: Any
    iterations: np.ndarray
    converged: np.ndarray
