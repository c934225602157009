"""FISTA with the banded AR(2) operator, one cell per SIMD lane (CPU backend).

The AR(2) recursions are sequential in time, so a single cell's recursion waits ~10
cycles per sample.  Here a block of ``W ≤ MAX_LANES`` cells is stored time-major
(``(n, W)``: the ``W`` cells' samples of one time step are adjacent) and every step of
every recursion advances all ``W`` cells with one vector operation (:mod:`._simd`).  One
iteration is two passes over memory instead of the five of the separate kernels:

* **pass A** (ascending time): ``e = K y − data``, the forward recursion and the
  residual;
* **pass B** (descending time): the adjoint recursion on ``e`` gives the gradient one
  sample at a time, and the proximal step, the extrapolation and the float64 sums of the
  restart and convergence tests are applied to that sample right away.

Each lane performs exactly the float32 operations of the reference, in its order (the
vectors carry no fast-math flag), so a cell's iterates are bit-identical to the
row-by-row kernels of :mod:`._kernels`.  The three float64 sums accumulate from the end
of the trace backwards, sequentially per cell (the row kernels reassociate them); they
feed only the restart sign and the 1e-8 convergence test.

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
def fista_lanes_{lanes}(x, y, data, e, g1, g2, gain, step, box, thresholds, t, k, active, converged, restart,
                        min_iterations, cap, tolerance_squared, max_steps):
    W = {lanes}
    n = x.size // W
    zero = simd.splat(np.float32(0.0), W)
    one = simd.splat(np.float32(1.0), W)
    G1 = simd.splat(g1, W)
    G2 = simd.splat(g2, W)
    GAIN = simd.splat(gain, W)
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
        # pass A: e[t] = (K y)[t] - data[t]; a restarted lane's y is its x
        if restarting:
{pass_a_restart}
        else:
{pass_a}
        # pass B: gradient[t - 1] = (e[t] gain + g1 a[t + 1]) + g2 a[t + 2], gradient[n - 1] = 0,
        # and the proximal step of that sample right away
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

_PASS_A = """\
a = zero
b = zero
for step_t in range(1, n):
    source = {source}
    value = simd.add(simd.add(simd.mul(G1, a), simd.mul(G2, b)), simd.mul(source, GAIN))
    simd.store(e, step_t * W, simd.sub(value, simd.load(data, step_t * W, W)))
    b = a
    a = value
"""

_PASS_B = """\
change = simd.splat(0.0, W)
size = simd.splat(0.0, W)
signal = simd.splat(0.0, W)
a = zero
b = zero
gradient = zero
for back in range(n):
    index = n - 1 - back
    if back > 0:
        gradient = simd.add(simd.add(simd.mul(simd.load(e, (index + 1) * W, W), GAIN), simd.mul(G1, a)), simd.mul(G2, b))
        b = a
        a = gradient
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
simd.store(sums, 0, change)
simd.store(sums, W, size)
simd.store(sums, 2 * W, signal)
"""


def _indent(code: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else line for line in code.splitlines())


def _source(lanes: int) -> str:
    """The kernel's source for ``lanes`` cells: pass variants without the masks they do
    not need (every lane running and none restarted is the common case)."""
    y_at = "simd.load(y, (step_t - 1) * W, W)"
    x_at = "simd.load(x, (step_t - 1) * W, W)"
    pass_a = _PASS_A.format(source=y_at)
    pass_a_restart = _PASS_A.format(source=f"simd.where(RESTART, {x_at}, {y_at})")
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
    pass_b = {
        (clip.__name__, kind): _PASS_B.format(new=clip(step), extrapolated=clip(momentum), **fields)
        for clip in (box, nonneg)
        for kind, fields in (("plain", plain), ("masked", masked))
    }
    body = _TEMPLATE.format(
        lanes=lanes,
        pass_a=_indent(pass_a, 12),
        pass_a_restart=_indent(pass_a_restart, 12),
        pass_b_box=_indent(pass_b["box", "plain"], 16),
        pass_b_box_masked=_indent(pass_b["box", "masked"], 16),
        pass_b=_indent(pass_b["nonneg", "plain"], 16),
        pass_b_masked=_indent(pass_b["nonneg", "masked"], 16),
    )
    return body


_kernels: dict[int, Any] = {}


def _kernel(lanes: int) -> Any:
    """The compiled kernel for ``lanes`` cells (generated once per width, cached on disk)."""
    kernel = _kernels.get(lanes)
    if kernel is None:
        from numba import njit

        from calab.backends.cpu import _simd

        namespace = {"np": np, "simd": _simd, "__name__": __name__}
        # compiled with this file's name, so Numba's on-disk cache can hold the kernels
        exec(compile(_source(lanes), __file__, "exec"), namespace)
        kernel = njit(nogil=True, cache=True)(namespace[f"fista_lanes_{lanes}"])
        _kernels[lanes] = kernel
    return kernel


def lanes_apply(plan: Any, valid: Any) -> bool:
    """Whether a solve can run in lane blocks: the AR(2) recursion itself (not by FFT,
    not segmented), no block mean, dense rows."""
    return (
        plan.conv_mode == "banded"
        and plan.kernel_spectrum is None
        and plan.segments is None
        and plan.upsample == 1
        and valid is None
        and plan.n_timepoints > 0
    )


def lane_blocks(n_cells: int, workers: int) -> list[range]:
    """Balanced blocks of at most :data:`MAX_LANES` cells, a multiple of ``workers`` of them."""
    if n_cells == 0:
        return []
    count = workers * max(1, -(-n_cells // (workers * MAX_LANES)))
    count = min(count, n_cells)
    edges = [n_cells * i // count for i in range(count + 1)]
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _time_major(rows: np.ndarray, lanes: int) -> np.ndarray:
    """``(B, n)`` rows → flat ``(n, lanes)`` time-major float32, zero-padded lanes."""
    count, n = rows.shape
    out = np.zeros((n, lanes), dtype=np.float32)
    out[:, :count] = rows.T
    return out.reshape(-1)


class LaneBatch(FistaBatch):
    """A block of up to :data:`MAX_LANES` cells iterated by the lane kernel.

    Rows of the batch are lanes; padding lanes are inactive.  Compaction re-packs the
    running cells into a narrower block once at most half the lanes are still running.
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
        lanes = count  # one kernel per width: no padding lanes to stream through memory
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
        g1, g2, gain = plan.ar2
        _kernel(self.lanes)(
            self.x, self.y, self.data, self.e, np.float32(g1), np.float32(g2), np.float32(gain), np.float32(plan.step32),
            plan.constraint == "box01", self.threshold, self.t, self.k, self.active_lanes, self.converged, self.restart,
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
