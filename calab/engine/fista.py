"""Batched FISTA, written once against the backend interface.

The problem solved for every cell (row) of a ``(n_cells, n)`` batch is

    minimise_s  ½‖work − R K s‖² + λ·G·‖s‖₁   subject to  s ≥ 0   (``nonneg``)
                                                    or  0 ≤ s ≤ 1  (``box01``)

where ``K`` is causal convolution with free-form kernel taps (FFT) or the banded AR(2)
recursion, ``R`` the block mean of upsampled problems (identity otherwise) and ``G`` the
operator's L1 weight — the iteration of the published calab 0.3.0 (spec ``numerics.md``
§7, ``indeca.md`` §1.6): float32 arrays, float64 step, momentum and reductions,
O'Donoghue–Candès gradient restart, and the stopping rule of the
:class:`~calab.engine.problem.Problem` (tolerance, minimum iterations, cap).

Layout of the code:

* :func:`plan_for_problem` — the :class:`~calab.backends.types.SolvePlan` of a problem:
  everything that does not depend on the data, computed once on the host in float64 and
  shipped to the device so all backends share constants bit for bit
  (:func:`make_plan` is CaTune's problem from ``(τr, τd)``).
* :func:`build_operator` — ``R K``, its adjoint and (FFT mode) the Gram operator.
* :func:`fista_step` — one pure step for the whole batch.  Restart, convergence, momentum
  and the iteration count are per-cell vectors; cells that are done are frozen by a mask.
* :class:`StepBatch` — the generic *segment* of the driver skeleton
  (:func:`calab.backends.driver.run_segments`); JAX jits the same step in
  ``lax.while_loop`` segments and CUDA runs fused kernels, under the same skeleton.
* :func:`solve_batch` — runs the backend's driver for one block and assembles the outputs
  in the input frame (spec §9).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np

from calab._hostmath import gram_boundary
from calab.backends.driver import FistaBatch, run_segments
from calab.backends.types import FistaOutcome, FistaState, SolvePlan
from calab.engine.problem import AR2, Problem
from calab.kernel import ar2_impulse_response

if TYPE_CHECKING:  # pragma: no cover
    from calab.backends.base import Backend

__all__ = [
    "CONV_MODES",
    "CONSTRAINTS",
    "GENERIC_CORE",
    "FistaOutcome",
    "FistaState",
    "SolveOutputs",
    "SolvePlan",
    "StepBatch",
    "fista_step",
    "gram_boundary",
    "proximal_update",
    "iteration_cap",
    "make_plan",
    "run_host_loop",
    "solve_batch",
]

CONV_MODES = ("fft", "banded")
CONSTRAINTS = ("nonneg", "box01")
#: CaTune's squared relative tolerance (tol = 1e-4); the core reads ``plan.tolerance_squared``
TOLERANCE_SQUARED = 1e-4 * 1e-4
#: CaTune's minimum iterations; the core reads ``plan.min_iterations``
MIN_ITERATIONS = 5


def iteration_cap(max_iters: int) -> int:
    """CaTune's effective iteration cap: the reference runs whole chunks of 100 iterations."""
    return 100 * math.ceil(max_iters / 100)


def make_plan(
    backend: Backend,
    n_timepoints: int,
    fs: float,
    tau_rise: float,
    tau_decay: float,
    conv_mode: str,
    constraint: str,
    max_iters: int,
) -> SolvePlan:
    """The :class:`SolvePlan` of CaTune's problem for validated parameters."""
    problem = Problem.catune(fs, tau_rise, tau_decay, max_iters=max_iters, conv_mode=conv_mode, constraint=constraint)
    return plan_for_problem(backend, problem, n_timepoints)


def plan_for_problem(backend: Backend, problem: Problem, n_timepoints: int) -> SolvePlan:
    """Build the :class:`SolvePlan` of ``problem`` for activity rows of ``n_timepoints``.

    ``n_timepoints`` is the length of the *activity* axis (``upsample`` times the data's).
    """
    operator = problem.operator
    upsample = problem.upsample
    if n_timepoints % upsample:
        raise ValueError(f"activity length {n_timepoints} is not a multiple of upsample={upsample}")
    gain = operator.resolved_l1_weight()
    # R (the mean over blocks of u samples) has norm 1/sqrt(u): ‖R K‖² <= ‖K‖²/u, with
    # equality at DC for a non-negative kernel.
    lipschitz = operator.resolved_lipschitz() / upsample
    if isinstance(operator, AR2):
        conv_mode = "banded"
        ar2 = operator.coefficients32
        taps = None
        if backend.banded_by_fft and n_timepoints:
            taps = ar2_impulse_response(float(ar2[0]), float(ar2[1]), float(ar2[2]), n_timepoints)
    else:
        conv_mode = "fft"
        ar2 = (np.float32(0.0), np.float32(0.0), np.float32(1.0))
        taps = operator.taps
    fft_size, spectrum = 0, None
    if n_timepoints and taps is not None:
        fft_size = backend.fft_length(n_timepoints + taps.size - 1)
        padded = np.zeros(fft_size, dtype=np.float32)
        padded[: taps.size] = taps
        spectrum = np.fft.rfft(padded).astype(np.complex64)
    segments = None
    lanes = int(backend.ar2_segment_lanes)
    if conv_mode == "banded" and taps is None and not problem.reference_rounding and lanes > 1 and upsample == 1:
        from calab.engine.segments import segment_plan

        segments = segment_plan(ar2[0], ar2[1], ar2[2], int(n_timepoints), lanes)
    if taps is None:
        taps = np.zeros(0, dtype=np.float32)
    exponentials = None
    if getattr(operator, "exponentials", None) is not None and upsample == 1:
        decay, rise, peak = operator.exponentials
        length = int(taps.size)
        exponentials = (decay, rise, decay**length, rise**length, 1.0 / peak, length)
    rule = problem.stopping
    return SolvePlan(
        n_timepoints=int(n_timepoints),
        conv_mode=conv_mode,
        constraint=problem.constraint,
        kernel=taps,
        dc_gain=gain,
        lipschitz=lipschitz,
        fft_size=fft_size,
        kernel_spectrum=spectrum,
        ar2=ar2,
        max_iterations=rule.cap,
        tolerance_squared=rule.tolerance_squared,
        min_iterations=int(rule.min_iterations),
        upsample=upsample,
        segments=segments,
        core=GENERIC_CORE,
        exponentials=exponentials,
    )


# --------------------------------------------------------------------------- operators
class Operator(NamedTuple):
    """Convolution operator on ``(B, n)`` float32 batches.

    ``forward`` is ``K`` (causal convolution truncated to ``n`` samples), ``adjoint`` its
    transpose, ``normal`` the Gram operator ``KᵀK`` when it is cheaper than the two
    (FFT mode), else None, and ``adjoint_of_difference(a, b)`` is ``Kᵀ(a − b)`` (a
    backend may fuse the subtraction into the recursion).  An operator that works in
    another sample order (the segmented AR(2) recursions) has ``enter``/``leave``: its
    inputs and outputs are in that layout, and FISTA iterates in it.
    """

    forward: Callable[[Any], Any]
    adjoint: Callable[[Any], Any]
    normal: Callable[[Any], Any] | None
    adjoint_of_difference: Callable[[Any, Any], Any]
    #: ``(B, n)`` batch → the operator's layout, and back (None: the natural layout)
    enter: Callable[[Any], Any] | None = None
    leave: Callable[[Any], Any] | None = None


def block_mean(xp: Any, batch: Any, upsample: int) -> Any:
    """``R``: mean of each run of ``upsample`` samples, ``(B, u·T)`` → ``(B, T)`` float32."""
    rows, length = batch.shape
    total = xp.sum(batch.reshape(rows, length // upsample, upsample), axis=-1)
    return total * np.float32(1.0 / upsample)


def block_mean_adjoint(xp: Any, batch: Any, upsample: int) -> Any:
    """``Rᵀ``: every sample spread over its ``upsample`` activity samples, scaled by ``1/u``."""
    return xp.repeat(batch * np.float32(1.0 / upsample), upsample, axis=-1)


def operator_arrays(backend: Backend, plan: SolvePlan) -> tuple[Any, ...]:
    """Device copies of the operator constants of ``plan`` (cached on the plan).

    FFT operator: ``(spectrum, conj(spectrum), |spectrum|²/size, boundary)``; the AR(2)
    recursion: ``()``.
    """
    if plan.kernel_spectrum is None:
        return ()
    cache_key = ("fft", backend.name)
    if cache_key not in plan.device_cache:
        spectrum = plan.kernel_spectrum
        size = plan.fft_size
        power = spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2
        limit = backend.gram_max_edge
        if limit is not None and min(plan.kernel.size - 1, plan.n_timepoints) > limit:
            # A long kernel's boundary correction costs more than a second FFT pair: no
            # Gram operator, the gradient takes the residual form.
            plan.device_cache[cache_key] = (
                backend.asarray(spectrum, dtype=np.complex64),
                backend.asarray(np.conj(spectrum), dtype=np.complex64),
                None,
                None,
            )
            return plan.device_cache[cache_key]
        boundary = gram_boundary(plan.kernel)
        keep = min(boundary.shape[0], plan.n_timepoints)
        edge = boundary.shape[0] - keep
        boundary = boundary[edge:, edge:]
        padded = min(max(backend.boundary_size(keep, plan.n_timepoints), keep), plan.n_timepoints)
        if padded > keep:  # zero rows/columns for earlier samples: the same correction
            boundary = np.pad(boundary, ((padded - keep, 0), (padded - keep, 0)))
        plan.device_cache[cache_key] = (
            backend.asarray(spectrum, dtype=np.complex64),
            backend.asarray(np.conj(spectrum), dtype=np.complex64),
            backend.asarray((power / size).astype(np.float32)),
            backend.asarray(np.ascontiguousarray(boundary)),
        )
    return plan.device_cache[cache_key]


def build_operator(
    backend: Backend,
    conv_mode: str,
    n: int,
    fft_size: int,
    arrays: tuple[Any, ...],
    ar2: tuple[Any, Any, Any],
    upsample: int = 1,
    segments: Any = None,
) -> Operator:
    """Operator from explicit constants (so a jitted function can take them as arguments).

    ``arrays`` from :func:`operator_arrays` decide the kind: empty for the AR(2)
    recursion, the FFT constants otherwise (FFT mode, or banded mode evaluated by FFT).
    With ``upsample > 1`` the operator maps activity ``(B, u·T)`` to data ``(B, T)``:
    ``R K`` with ``R`` the block mean (:func:`block_mean`).  A
    :class:`~calab.engine.segments.SegmentPlan` as ``segments`` gives the segmented AR(2)
    recursions, in the segment layout (``enter``/``leave``).
    """
    if segments is not None and not arrays and upsample == 1:
        return _segmented_operator(backend, segments)
    base = _rate_operator(backend, n, fft_size, arrays, ar2)
    if upsample == 1:
        return base
    xp = backend.xp

    def forward(batch):
        return block_mean(xp, base.forward(batch), upsample)

    def adjoint(batch):
        return base.adjoint(block_mean_adjoint(xp, batch, upsample))

    return Operator(forward, adjoint, None, lambda model, data: adjoint(model - data))


def _segmented_operator(backend: Backend, segments: Any) -> Operator:
    """``K`` as segmented AR(2) recursions on rows in the segment layout."""
    from calab.engine.segments import from_segments, to_segments

    xp = backend.xp

    def forward(batch):
        return backend.ar2_segment_forward(batch, segments)

    def adjoint_of_difference(model, data):
        return backend.ar2_segment_adjoint_of_difference(model, data, segments)

    def adjoint(batch):
        return adjoint_of_difference(batch, xp.zeros_like(batch))

    return Operator(
        forward, adjoint, None, adjoint_of_difference,
        enter=lambda batch: to_segments(xp, batch, segments),
        leave=lambda batch: from_segments(xp, batch, segments),
    )


def _rate_operator(backend: Backend, n: int, fft_size: int, arrays: tuple[Any, ...], ar2: tuple[Any, Any, Any]) -> Operator:
    """``K`` at the activity's rate on rows of ``n`` samples."""
    if not arrays:
        g1, g2, gain = ar2

        def forward(batch):
            return backend.ar2_forward(batch, g1, g2, gain)

        def adjoint(batch):
            return backend.ar2_adjoint(batch, g1, g2, gain)

        def adjoint_of_difference(model, data):
            return backend.ar2_adjoint_of_difference(model, data, g1, g2, gain)

        return Operator(forward, adjoint, None, adjoint_of_difference)

    spectrum, spectrum_conj, power, boundary = arrays
    scale = np.float32(1.0 / fft_size)

    def forward(batch):
        return backend.irfft(backend.rfft(batch, fft_size) * spectrum, fft_size)[..., :n] * scale

    def adjoint(batch):
        return backend.irfft(backend.rfft(batch, fft_size) * spectrum_conj, fft_size)[..., :n] * scale

    def normal(batch):
        return backend.gram_filter(batch, fft_size, power, boundary)

    return Operator(forward, adjoint, None if power is None else normal, lambda model, data: adjoint(model - data))


def make_operator(backend: Backend, plan: SolvePlan, *, segmented: bool = False) -> Operator:
    """The convolution operator of ``plan`` on ``backend`` (FFT or banded AR(2)).

    ``segmented``: the segmented recursions in their own layout when the plan has them
    (the FISTA loop); otherwise the operator on natural ``(B, n)`` rows.
    """
    return build_operator(
        backend, plan.conv_mode, plan.n_timepoints, plan.fft_size, operator_arrays(backend, plan), plan.ar2,
        plan.upsample, plan.segments if segmented else None,
    )


# --------------------------------------------------------------------------- the step
def initial_state(xp: Any, work: Any, cap: int, x0: Any | None = None, n: int | None = None) -> FistaState:
    """Cold start (all zeros) or warm start from ``x0``; every cell active if ``cap > 0``.

    ``n`` is the activity length when it differs from the data's (upsampled problems).
    """
    batch = work.shape[0]
    shape = (batch, work.shape[-1] if n is None else n)
    x = xp.zeros(shape, dtype=xp.float32) if x0 is None else xp.array(x0, dtype=xp.float32, copy=True)
    return FistaState(
        x=x,
        y=xp.array(x, copy=True),
        t=xp.ones((batch,), dtype=xp.float64),
        k=xp.zeros((batch,), dtype=xp.int32),
        active=xp.full((batch,), cap > 0, dtype=bool),
        converged=xp.zeros((batch,), dtype=bool),
    )


def data_gradient(operator: Operator, work: Any) -> Any:
    """The data the gradient needs besides ``y``: ``Kᵀ work`` in Gram form, else ``work``."""
    return work if operator.normal is None else operator.adjoint(work)


def gradient_at(operator: Operator, y: Any, data_term: Any, valid: Any | None) -> Any:
    """Gradient ``Kᵀ(K y − work)`` of ``½‖work − K y‖²`` at ``y``.

    FFT mode uses the Gram form ``KᵀK y − Kᵀ work`` (half the transforms); banded mode
    keeps the reference's residual form, whose float32 rounding it reproduces exactly.
    Ragged batches mask the residual to each row's length.
    """
    if operator.normal is not None and valid is None:
        return operator.normal(y) - data_term
    if operator.normal is not None:
        return operator.adjoint(operator.forward(y) * valid) - data_term
    if valid is None:
        return operator.adjoint_of_difference(operator.forward(y), data_term)
    return operator.adjoint((operator.forward(y) - data_term) * valid)


def proximal_update(
    xp: Any,
    plan: SolvePlan,
    state: FistaState,
    gradient: Any,
    threshold: Any,
    freeze: bool = True,
) -> FistaState:
    """Proximal step, momentum, restart and convergence for every cell (pure function).

    Parameters
    ----------
    xp : module
        Array namespace of the backend.
    plan : SolvePlan
    state : FistaState
    gradient : array, shape (B, n), float32
        Gradient of the data term at ``state.y``.
    threshold : array, shape (B,), float32
        Per-cell soft threshold ``step·λ·G``.
    freeze : bool
        Keep inactive cells unchanged (mask).  A driver that drops finished cells before
        every step may pass False to save the masking passes.

    Returns
    -------
    FistaState
    """
    f32, f64 = xp.float32, xp.float64
    x_old, y = state.x, state.y
    shrunk = (y - plan.step32 * gradient) - threshold[:, None]
    if plan.constraint == "box01":
        x_new = xp.clip(shrunk, f32(0.0), f32(1.0))
    else:
        x_new = xp.maximum(shrunk, f32(0.0))
    k_new = state.k + 1
    t_next = (1.0 + xp.sqrt(1.0 + 4.0 * state.t * state.t)) / 2.0
    momentum = ((state.t - 1.0) / t_next).astype(f32)

    x_new64, x_old64 = x_new.astype(f64), x_old.astype(f64)
    delta = x_new64 - x_old64
    change = xp.sum(delta * delta, axis=-1)
    size = xp.sum(x_old64 * x_old64, axis=-1)
    restart_signal = xp.sum((y.astype(f64) - x_new64) * delta, axis=-1)

    extrapolated = x_new + momentum[:, None] * (x_new - x_old)
    if plan.constraint == "box01":
        extrapolated = xp.clip(extrapolated, f32(0.0), f32(1.0))
    else:
        extrapolated = xp.maximum(extrapolated, f32(0.0))
    restart = (k_new > 1) & (restart_signal > 0)
    y_new = xp.where(restart[:, None], x_new, extrapolated)
    t_new = xp.where(restart, 1.0, t_next)
    converged_now = (k_new > plan.min_iterations) & (change < plan.tolerance_squared * (size + 1e-20))

    if freeze:
        active = state.active
        x_new = xp.where(active[:, None], x_new, x_old)
        y_new = xp.where(active[:, None], y_new, y)
        t_new = xp.where(active, t_new, state.t)
        k_new = xp.where(active, k_new, state.k)
        converged = state.converged | (active & converged_now)
        still_active = active & ~converged & (k_new < plan.max_iterations)
    else:
        converged = state.converged | converged_now
        still_active = ~converged & (k_new < plan.max_iterations)
    return FistaState(x_new, y_new, t_new, k_new, still_active, converged)


def fista_step(
    xp: Any,
    operator: Operator,
    plan: SolvePlan,
    data_term: Any,
    threshold: Any,
    valid: Any | None,
    state: FistaState,
    *,
    freeze: bool = True,
    update: Callable[..., FistaState] = proximal_update,
) -> FistaState:
    """One FISTA iteration for every active cell of the batch.

    ``data_term`` is ``Kᵀ work`` (:func:`data_gradient`); ``valid`` is the ``(B, n)``
    float32 mask of ragged batches (None when every row has the full length); ``update``
    may be a backend's fused version of :func:`proximal_update`.
    """
    gradient = gradient_at(operator, state.y, data_term, valid)
    return update(xp, plan, state, gradient, threshold, freeze)


class StepBatch(FistaBatch):
    """The generic segment: :func:`fista_step` on the backend's array namespace.

    ``check_every`` steps per segment; with more than one, finished cells are frozen by
    the mask (``freeze``), otherwise they are dropped before the next step and the
    masking passes are skipped (the backend's fused :meth:`Backend.fista_update` may then
    replace :func:`proximal_update`).
    """

    def __init__(
        self,
        backend: Backend,
        plan: SolvePlan,
        work: Any,
        threshold: Any,
        x0: Any | None = None,
        valid: Any | None = None,
        *,
        check_every: int = 1,
        freeze: bool | None = None,
    ) -> None:
        self.backend = backend
        self.plan = plan
        # segmented recursions (their own layout) only for dense batches
        self.operator = make_operator(backend, plan, segmented=valid is None)
        self.check_every = max(1, int(check_every))
        self.freeze = self.check_every > 1 if freeze is None else bool(freeze or self.check_every > 1)
        enter = self.operator.enter
        n = plan.n_timepoints
        if enter is not None:
            work = enter(work)
            x0 = None if x0 is None else enter(x0)
            n = int(work.shape[-1])
        self.state = initial_state(backend.xp, work, plan.max_iterations, x0, n)
        self.data_term = data_gradient(self.operator, work)
        self.threshold = threshold
        self.valid = valid

    @property
    def rows(self) -> int:
        return int(self.state.x.shape[0])

    def advance(self) -> None:
        backend, plan = self.backend, self.plan
        for _ in range(self.check_every):
            self.state = fista_step(
                backend.xp, self.operator, plan, self.data_term, self.threshold, self.valid, self.state,
                freeze=self.freeze, update=backend.fista_update,
            )  # fmt: skip

    def active(self) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(self.state.active), dtype=bool)

    def harvest(self, index: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        backend = self.backend
        rows = backend.asarray(index, dtype=np.int64)
        leave = self.operator.leave
        return (
            self.state.x[rows] if leave is None else leave(self.state.x[rows]),
            np.asarray(backend.to_numpy(self.state.k[rows]), dtype=np.int64),
            np.asarray(backend.to_numpy(self.state.converged[rows]), dtype=bool),
        )

    def compact(self, keep: np.ndarray) -> None:
        rows = self.backend.asarray(keep, dtype=np.int64)
        self.state = FistaState(*(part[rows] for part in self.state))
        self.data_term = self.data_term[rows]
        self.threshold = self.threshold[rows]
        self.valid = None if self.valid is None else self.valid[rows]


def run_host_loop(
    backend: Backend,
    plan: SolvePlan,
    work: Any,
    threshold: Any,
    x0: Any | None = None,
    valid: Any | None = None,
    *,
    check_every: int = 1,
    freeze: bool = False,
) -> FistaOutcome:
    """The driver skeleton over the generic step (:class:`StepBatch`), whatever the backend's own segment."""
    xp = backend.xp
    n_cells = int(work.shape[0])
    out_x = (
        xp.zeros((n_cells, plan.n_timepoints), dtype=xp.float32) if x0 is None else xp.array(x0, dtype=xp.float32, copy=True)
    )
    if plan.max_iterations == 0 or n_cells == 0:
        return FistaOutcome(out_x, np.zeros(n_cells, dtype=np.int64), np.zeros(n_cells, dtype=bool))
    batch = StepBatch(backend, plan, work, threshold, x0, valid, check_every=check_every, freeze=freeze)
    return run_segments(batch, out_x, backend.scatter_rows)


class _GenericCore:
    """The generic pieces above, handed to the backends on every plan (``SolvePlan.core``).

    A backend runs, wraps or compiles them through the plan it is given
    (:class:`calab.backends.types.FistaCore`), so the backend layer never imports the engine.
    """

    proximal_update = staticmethod(proximal_update)
    step_batch = staticmethod(StepBatch)
    run_host_loop = staticmethod(run_host_loop)
    initial_state = staticmethod(initial_state)
    operator_arrays = staticmethod(operator_arrays)
    build_operator = staticmethod(build_operator)
    data_gradient = staticmethod(data_gradient)
    fista_step = staticmethod(fista_step)

    def __repr__(self) -> str:
        return "<calab generic FISTA core>"


#: The :class:`~calab.backends.types.FistaCore` every plan carries.
GENERIC_CORE = _GenericCore()


# --------------------------------------------------------------------------- whole solve
class SolveOutputs(NamedTuple):
    """Per-cell outputs in the input frame (spec §9), on the backend's device.

    ``activity`` and ``reconvolution`` are ``(B, n)`` float32 device arrays; ``baseline``
    ``(B,)`` float64, ``iterations`` ``(B,)`` int64 and ``converged`` ``(B,)`` bool are
    host NumPy arrays.
    """

    activity: Any
    reconvolution: Any
    baseline: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def _row_means(xp: Any, values: Any, lengths: Any | None) -> Any:
    """Float64 per-row mean of float32 values (over each row's valid length)."""
    total = xp.sum(values.astype(xp.float64), axis=-1)
    count = values.shape[-1] if lengths is None else lengths
    return total / count


def solve_batch(
    backend: Backend,
    plan: SolvePlan,
    traces: Any,
    lam: np.ndarray,
    baseline: Any | None,
    *,
    x0: Any | None = None,
    lengths: np.ndarray | None = None,
) -> SolveOutputs:
    """Deconvolve a baseline-known batch on one backend and assemble the outputs.

    Parameters
    ----------
    backend : Backend
    plan : SolvePlan
    traces : device array, shape (B, T), float32
        The (optionally band-passed) traces, in the input frame; ``T = n / upsample``.
    lam : numpy.ndarray, shape (B,), float64
        Per-cell sparsity weight λ (scaled by ``G`` inside).
    baseline : device array, shape (B, T), float32, or None
        Rolling baseline to subtract (see :func:`calab.filters.rolling_baseline`).  None:
        no baseline at all (``b ≡ 0``): the reported baseline is 0 and the
        reconvolution is ``R K x``.
    x0 : device array, shape (B, n), float32, optional
        Warm start (a row of zeros is a cold start).
    lengths : numpy.ndarray, shape (B,), optional
        True length of each row (in data samples) for ragged batches padded with zeros on
        the right.

    Returns
    -------
    SolveOutputs
        ``activity`` has the activity length ``n``; the rest are in the data's frame.
    """
    xp = backend.xp
    work = traces if baseline is None else traces - baseline
    valid = None
    lengths_device = None
    if lengths is not None:
        lengths = np.asarray(lengths, dtype=np.int64)
        positions = np.arange(work.shape[-1])[None, :]
        mask = (positions < lengths[:, None]).astype(np.float32)
        valid = backend.asarray(mask)
        work = work * valid
        if x0 is not None:
            x0 = x0 * backend.asarray(np.repeat(mask, plan.upsample, axis=-1))
        lengths_device = backend.asarray(lengths.astype(np.float64), dtype=np.float64)
    threshold = backend.asarray(plan.thresholds(lam))
    outcome = backend.run_fista(plan, work, threshold, x0=x0, valid=valid)

    operator = make_operator(backend, plan)
    reconvolved = operator.forward(outcome.x)
    if baseline is None:
        if valid is not None:
            reconvolved = reconvolved * valid
        return SolveOutputs(
            activity=outcome.x,
            reconvolution=reconvolved,
            baseline=np.zeros(work.shape[0]),
            iterations=outcome.iterations,
            converged=outcome.converged,
        )
    model_residual = work - reconvolved
    removed = traces - work
    if valid is not None:
        model_residual = model_residual * valid
        removed = removed * valid
    offset = _row_means(xp, model_residual, lengths_device)
    reconvolution = (reconvolved + offset.astype(xp.float32)[:, None]) + removed
    if valid is not None:
        reconvolution = reconvolution * valid
    level = offset + _row_means(xp, removed, lengths_device)
    return SolveOutputs(
        activity=outcome.x,
        reconvolution=reconvolution,
        baseline=backend.to_numpy(level).astype(np.float64),
        iterations=outcome.iterations,
        converged=outcome.converged,
    )
