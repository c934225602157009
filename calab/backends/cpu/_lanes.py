"""FISTA with a recursive operator, one cell per SIMD lane (CPU backend).

Two operators have recursions: the banded AR(2) operator (InDeCa, ``conv_mode="banded"``)
and FFT mode's kernel from :func:`calab.build_kernel`, a truncated difference of two
exponentials (``SolvePlan.exponentials``).  A recursion is sequential in time, so a
single cell's waits ~10 cycles per sample.  Here a block of ``W ≤ MAX_LANES`` cells is
stored time-major (``(n, W)``: the ``W`` cells' samples of one time step are adjacent)
and every step of every recursion advances all ``W`` cells with one vector operation
(:mod:`._simd`).  One iteration is two passes over memory:

* **pass A** (ascending time): ``e = K y − data``, the forward recursion and the
  residual;
* **pass B** (descending time): the adjoint recursion on ``e`` gives the gradient one
  sample at a time, and the proximal step, the extrapolation and the float64 sums of the
  restart and convergence tests are applied to that sample right away.

AR(2): each lane performs exactly the float32 operations of the reference, in its order
(the vectors carry no fast-math flag), so a cell's iterates are bit-identical to the
row-by-row kernels of :mod:`._kernels`.  Difference of exponentials: four float64
first-order recursions per direction (``Σ_{j<N} d^j s[t−j] = R[t] − d^N R[t−N]``, the
lagged term being the same recursion on the input delayed by ``N``), the model, residual
and gradient rounded to float32 where the reference rounds them.  The three float64
sums accumulate from the end of the trace backwards, sequentially per cell (the row
kernels reassociate them); they feed only the restart sign and the 1e-8 convergence
test.

Per-cell control (momentum ``t``, restart, convergence, the iteration cap) runs per lane
inside the kernel; finished lanes are frozen by a mask, so when the driver harvests them
does not change their result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calab.backends.driver import FistaBatch

__all__ = ["MAX_LANES", "LaneBatch", "lane_blocks", "lanes_apply"]

#: cells per lane block.  8 float32 lanes are one AVX2 register and their float64 sums one
#: AVX-512 register; wider blocks cost more per cell (measured on AVX-512: two registers
#: per float64 sum, and a block of 90,000-sample rows no longer fits the core's caches)
MAX_LANES = 8
#: iterations per kernel call between two looks at the active lanes
STEPS_PER_CALL = 32

_TEMPLATE = """
def fista_lanes(x, y, data, e, coefficients, lag, step, box, thresholds, t, k, active, converged, restart,
                min_iterations, cap, tolerance_squared, max_steps):
    W = {lanes}
    n = x.size // W
    zero = simd.splat(np.float32(0.0), W)
    one = simd.splat(np.float32(1.0), W)
    zero64 = simd.splat(0.0, W)
{setup}
    STEP = simd.splat(step, W)
    TH = simd.load(thresholds, 0, W)
    momentum = np.zeros(W, np.float32)
    running_flag = np.zeros(W, np.float32)
    restart_flag = np.zeros(W, np.float32)
    t_next = np.zeros(W)
    sums = np.zeros(3 * W)
    for _ in range(max_steps):
        running = 0
        restarting = 0
        for lane in range(W):
            t_next[lane] = (1.0 + np.sqrt(1.0 + 4.0 * t[lane] * t[lane])) / 2.0
            momentum[lane] = np.float32((t[lane] - 1.0) / t_next[lane])
            live = active[lane]
            running_flag[lane] = np.float32(1.0) if live else np.float32(0.0)
            restart_flag[lane] = np.float32(1.0) if live and restart[lane] else np.float32(0.0)
            if live:
                running += 1
                if restart[lane]:
                    restarting += 1
        if running == 0:
            break
        MU = simd.load(momentum, 0, W)
        RUN = simd.load(running_flag, 0, W)
        RESTART = simd.load(restart_flag, 0, W)
        # pass A (ascending): e = K y - data; a restarted lane's y is its x
        if restarting:
{pass_a_restart}
        else:
{pass_a}
        # pass B (descending): the adjoint recursion gives the gradient one sample at a
        # time, and the proximal step of that sample follows right away
        change = zero64
        size = zero64
        signal = zero64
        if box:
            if restarting or running < W:
{pass_b_box_masked}
            else:
{pass_b_box}
        else:
            if restarting or running < W:
{pass_b_masked}
            else:
{pass_b}
        simd.store(sums, 0, change)
        simd.store(sums, W, size)
        simd.store(sums, 2 * W, signal)
        for lane in range(W):
            if not active[lane]:
                continue
            count = k[lane] + 1
            k[lane] = count
            restarted = count > 1 and sums[2 * W + lane] > 0.0
            restart[lane] = restarted
            t[lane] = 1.0 if restarted else t_next[lane]
            done = count > min_iterations and sums[lane] < tolerance_squared * (sums[W + lane] + 1e-20)
            if done:
                converged[lane] = True
            active[lane] = (not done) and count < cap
"""

#: the proximal step, extrapolation and float64 sums of one sample ``index`` whose
#: ``gradient`` (float32 vector) is known
_PROXIMAL = """\
offset = index * W
old = simd.load(x, offset, W)
previous = {previous}
new = {new}
extrapolated = {extrapolated}
simd.store(x, offset, {new_x})
simd.store(y, offset, {new_y})
old64 = simd.widen(old)
new64 = simd.widen(new)
delta = simd.sub(new64, old64)
change = simd.add(change, simd.mul(delta, delta))
size = simd.add(size, simd.mul(old64, old64))
signal = simd.add(signal, simd.mul(simd.sub(simd.widen(previous), new64), delta))
"""

# The AR(2) recursion of the reference, float32 (indeca.md §1.2):
# forward  m[t] = (g1 m[t-1] + g2 m[t-2]) + y[t-1] gain, m[0] = 0
# adjoint  a[t] = (e[t] gain + g1 a[t+1]) + g2 a[t+2], gradient[t-1] = a[t], gradient[n-1] = 0
_AR2_SETUP = """\
G1 = simd.splat(np.float32(coefficients[0]), W)
G2 = simd.splat(np.float32(coefficients[1]), W)
GAIN = simd.splat(np.float32(coefficients[2]), W)
"""
_AR2_PASS_A = """\
a = zero
b = zero
for step_t in range(1, n):
    source = {source_before}
    value = simd.add(simd.add(simd.mul(G1, a), simd.mul(G2, b)), simd.mul(source, GAIN))
    simd.store(e, step_t * W, simd.sub(value, simd.load(data, step_t * W, W)))
    b = a
    a = value
"""
_AR2_PASS_B = """\
a = zero
b = zero
gradient = zero
index = n - 1
{proximal_0}
for back in range(1, n):
    index = n - 1 - back
    gradient = simd.add(simd.add(simd.mul(simd.load(e, (index + 1) * W, W), GAIN), simd.mul(G1, a)), simd.mul(G2, b))
    b = a
    a = gradient
{proximal_4}
"""

# FFT mode's truncated kernel h[j] = (d^j - r^j)/M, j < L (build_kernel), as four float64
# first-order recursions: sum_(j<L) d^j s[t-j] = R[t] - d^L R[t-L], and R[t-L] is the same
# recursion run on the input delayed by L (so no history is stored).
_BIEXP_SETUP = """\
D = simd.splat(coefficients[0], W)
R = simd.splat(coefficients[1], W)
DL = simd.splat(coefficients[2], W)
RL = simd.splat(coefficients[3], W)
SCALE = simd.splat(coefficients[4], W)
"""
_BIEXP_PASS_A = """\
r1 = zero64
r2 = zero64
l1 = zero64
l2 = zero64
for step_t in range(n):
    s = simd.widen({source_now})
    r1 = simd.add(simd.mul(D, r1), s)
    r2 = simd.add(simd.mul(R, r2), s)
    if step_t >= lag:
        lagged = simd.widen({source_lagged})
        l1 = simd.add(simd.mul(D, l1), lagged)
        l2 = simd.add(simd.mul(R, l2), lagged)
    model = simd.mul(simd.sub(simd.sub(r1, simd.mul(DL, l1)), simd.sub(r2, simd.mul(RL, l2))), SCALE)
    simd.store(e, step_t * W, simd.sub(simd.narrow(model), simd.load(data, step_t * W, W)))
"""
_BIEXP_PASS_B = """\
q1 = zero64
q2 = zero64
u1 = zero64
u2 = zero64
for back in range(n):
    index = n - 1 - back
    residual = simd.widen(simd.load(e, index * W, W))
    q1 = simd.add(simd.mul(D, q1), residual)
    q2 = simd.add(simd.mul(R, q2), residual)
    if back >= lag:
        lagged = simd.widen(simd.load(e, (index + lag) * W, W))
        u1 = simd.add(simd.mul(D, u1), lagged)
        u2 = simd.add(simd.mul(R, u2), lagged)
    gradient = simd.narrow(simd.mul(simd.sub(simd.sub(q1, simd.mul(DL, u1)), simd.sub(q2, simd.mul(RL, u2))), SCALE))
{proximal_4}
"""

_OPERATORS = {
    "ar2": (_AR2_SETUP, _AR2_PASS_A, _AR2_PASS_B),
    "biexp": (_BIEXP_SETUP, _BIEXP_PASS_A, _BIEXP_PASS_B),
}


def _indent(code: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else line for line in code.splitlines())


def _source(kind: str, lanes: int) -> str:
    """The kernel's source for operator ``kind`` and ``lanes`` cells, with pass variants
    that skip the masks they do not need (every lane running and none restarted is the
    common case)."""
    setup, pass_a, pass_b = _OPERATORS[kind]

    def source(offset: str, restarting: bool) -> str:
        y_at = f"simd.load(y, ({offset}) * W, W)"
        return f"simd.where(RESTART, simd.load(x, ({offset}) * W, W), {y_at})" if restarting else y_at

    def forward(restarting: bool) -> str:
        return pass_a.format(source_before=source("step_t - 1", restarting), source_now=source("step_t", restarting),
                             source_lagged=source("step_t - lag", restarting))

    # Numba's scalar min(max(v, 0), 1) and max(v, 0): the same compares and selects per lane
    def box(expression: str) -> str:
        return f"simd.minimum(simd.maximum({expression}, zero), one)"

    def nonneg(expression: str) -> str:
        return f"simd.maximum({expression}, zero)"

    plain = dict(previous="simd.load(y, offset, W)", new_x="new", new_y="extrapolated")
    masked = dict(previous="simd.where(RESTART, old, simd.load(y, offset, W))", new_x="simd.where(RUN, new, old)",
                  new_y="simd.where(RUN, extrapolated, previous)")
    step = "simd.sub(simd.sub(previous, simd.mul(STEP, gradient)), TH)"
    momentum = "simd.add(new, simd.mul(MU, simd.sub(new, old)))"

    def backward(clip, fields) -> str:
        proximal = _PROXIMAL.format(new=clip(step), extrapolated=clip(momentum), **fields)
        return pass_b.format(proximal_0=proximal.rstrip("\n"), proximal_4=_indent(proximal, 4))

    return _TEMPLATE.format(
        lanes=lanes,
        setup=_indent(setup, 4),
        pass_a=_indent(forward(False), 12),
        pass_a_restart=_indent(forward(True), 12),
        pass_b_box=_indent(backward(box, plain), 16),
        pass_b_box_masked=_indent(backward(box, masked), 16),
        pass_b=_indent(backward(nonneg, plain), 16),
        pass_b_masked=_indent(backward(nonneg, masked), 16),
    )


_kernels: dict[tuple[str, int], Any] = {}


def _kernel(kind: str, lanes: int) -> Any:
    """The compiled kernel for ``kind`` and ``lanes`` cells (generated once, cached on disk)."""
    kernel = _kernels.get((kind, lanes))
    if kernel is None:
        from numba import njit

        from calab.backends.cpu import _simd

        namespace = {"np": np, "simd": _simd, "__name__": __name__}
        # compiled with this file's name (and its own function name), so Numba's on-disk
        # cache can hold every variant
        code = _source(kind, lanes).replace("def fista_lanes(", f"def fista_lanes_{kind}_{lanes}(")
        exec(compile(code, __file__, "exec"), namespace)
        kernel = njit(nogil=True, cache=True)(namespace[f"fista_lanes_{kind}_{lanes}"])
        _kernels[kind, lanes] = kernel
    return kernel


def lanes_apply(plan: Any, valid: Any) -> bool:
    """Whether a solve can run in lane blocks: dense rows, no block mean, and an operator
    with a recursion — the AR(2) recursion itself (not by FFT, not segmented), or FFT
    mode's difference of two exponentials (``plan.exponentials``)."""
    if valid is not None or plan.upsample != 1 or plan.n_timepoints == 0 or plan.segments is not None:
        return False
    if plan.conv_mode == "banded":
        return plan.kernel_spectrum is None
    return plan.exponentials is not None


def lane_operator(plan: Any) -> tuple[str, np.ndarray, int]:
    """``(kind, coefficients, lag)`` of the kernel arguments for ``plan``."""
    if plan.conv_mode == "banded":
        return "ar2", np.array([float(v) for v in plan.ar2], dtype=np.float64), 0
    decay, rise, decay_lag, rise_lag, scale, length = plan.exponentials
    return "biexp", np.array([decay, rise, decay_lag, rise_lag, scale], dtype=np.float64), int(length)


def lane_blocks(n_cells: int, workers: int) -> list[range]:
    """Balanced blocks of at most :data:`MAX_LANES` cells, a multiple of ``workers`` of them."""
    if n_cells == 0:
        return []
    count = workers * max(1, -(-n_cells // (workers * MAX_LANES)))
    count = min(count, n_cells)
    edges = [n_cells * i // count for i in range(count + 1)]
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def padded_lanes(count: int) -> int:
    """Lanes of the kernel that iterates ``count`` cells: the next power of two up to
    :data:`MAX_LANES` (beyond it, ``count`` itself).

    LLVM splits a vector of 3, 5, 6 or 7 lanes into pieces with extra shuffles, so such a
    step costs up to 1.7x an 8-lane step (measured at 90,000 samples, AVX-512); padding
    lanes are inactive and change no other lane's arithmetic.
    """
    if count <= 1 or count > MAX_LANES:
        return max(count, 1)
    return min(1 << (count - 1).bit_length(), MAX_LANES)


def _time_major(rows: np.ndarray, lanes: int) -> np.ndarray:
    """``(B, n)`` rows → flat ``(n, lanes)`` time-major float32, zero-padded lanes."""
    count, n = rows.shape
    out = np.zeros((n, lanes), dtype=np.float32)
    out[:, :count] = rows.T
    return out.reshape(-1)


class LaneBatch(FistaBatch):
    """A block of up to :data:`MAX_LANES` cells iterated by the lane kernel.

    Rows of the batch are lanes, padded to :func:`padded_lanes` with inactive lanes.
    Compaction re-packs the running cells into a narrower block once at most half the
    lanes are still running.
    """

    def __init__(self, plan: Any, work: np.ndarray, threshold: np.ndarray, x0: np.ndarray | None) -> None:
        self.plan = plan
        rows, n = work.shape
        self.n = n
        self._pack(
            np.asarray(work, dtype=np.float32),
            np.zeros((rows, n), np.float32) if x0 is None else np.asarray(x0, dtype=np.float32),
            None,
            np.asarray(threshold, dtype=np.float32),
            np.ones(rows),
            np.zeros(rows, np.int64),
            np.full(rows, plan.max_iterations > 0),
            np.zeros(rows, bool),
            np.zeros(rows, bool),
        )

    def _pack(self, data, x, y, threshold, t, k, active, converged, restart) -> None:
        count = data.shape[0]
        lanes = padded_lanes(count)
        self.lanes = lanes
        self.data = _time_major(data, lanes)
        self.x = _time_major(x, lanes)
        self.y = self.x.copy() if y is None else _time_major(y, lanes)
        self.e = np.empty_like(self.x)
        self.threshold = np.zeros(lanes, np.float32)
        self.threshold[:count] = threshold
        self.t = np.ones(lanes)
        self.t[:count] = t
        self.k = np.zeros(lanes, np.int64)
        self.k[:count] = k
        self.active_lanes = np.zeros(lanes, bool)
        self.active_lanes[:count] = active
        self.converged = np.zeros(lanes, bool)
        self.converged[:count] = converged
        self.restart = np.zeros(lanes, bool)
        self.restart[:count] = restart

    @property
    def rows(self) -> int:
        return self.lanes

    def advance(self) -> None:
        plan = self.plan
        kind, coefficients, lag = lane_operator(plan)
        _kernel(kind, self.lanes)(
            self.x, self.y, self.data, self.e, coefficients, lag, np.float32(plan.step32), plan.constraint == "box01",
            self.threshold, self.t, self.k, self.active_lanes, self.converged, self.restart,
            int(plan.min_iterations), int(plan.max_iterations), float(plan.tolerance_squared), STEPS_PER_CALL,
        )  # fmt: skip

    def active(self) -> np.ndarray:
        return self.active_lanes.copy()

    def compact_now(self, running: int) -> bool:
        return 2 * running <= self.lanes

    def _rows(self, flat: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(flat.reshape(self.n, self.lanes)[:, index].T)

    def harvest(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._rows(self.x, index), self.k[index].copy(), self.converged[index].copy()

    def compact(self, keep: np.ndarray) -> None:
        self._pack(
            self._rows(self.data, keep), self._rows(self.x, keep), self._rows(self.y, keep), self.threshold[keep],
            self.t[keep], self.k[keep], self.active_lanes[keep], self.converged[keep], self.restart[keep],
        )  # fmt: skip
