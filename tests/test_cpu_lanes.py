"""The CPU backend's SIMD lane kernel for banded FISTA (``calab/backends/cpu/_lanes.py``).

Truth: the row-by-row path of the same backend (the AR(2) group kernels and the fused
proximal update, which reproduce calab 0.3.0's banded mode bit for bit, see
``tests/test_reference_golden.py``).  Every lane performs the same float32 operations,
so the iterates must be identical, not merely close.
"""

from __future__ import annotations

import numpy as np
import pytest

from calab.backends import get_backend
from calab.backends.cpu import _kernels

pytestmark = pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="the lane kernels need Numba")


def _problem_data(rows: int, n: int, seed: int, fs: float = 300.0):
    from calab.engine import AR2

    operator = AR2.from_taus(0.1, 0.6, fs)
    g1, g2, gain = operator.coefficients32
    rng = np.random.default_rng(seed)
    spikes = (rng.random((rows, n)) < 0.01).astype(np.float32)
    clean = np.empty_like(spikes)
    _kernels.ar2_forward(spikes, g1, g2, gain, clean)
    amplitude = rng.uniform(0.3, 2.0, (rows, 1)).astype(np.float32)
    work = (clean * amplitude + 0.05 * rng.standard_normal((rows, n))).astype(np.float32)
    return operator, work


def _row_path(plan, work, threshold, x0=None):
    from calab.engine.fista import run_host_loop

    return run_host_loop(get_backend("numpy"), plan, work, threshold, x0)


@pytest.mark.parametrize("rows", [1, 3, 10, 16, 21])
@pytest.mark.parametrize("constraint", ["box01", "nonneg"])
def test_lanes_iterate_exactly_like_the_row_kernels(rows, constraint):
    from calab.engine import Problem, StoppingRule
    from calab.engine.block import get_plan

    cpu = get_backend("numpy")
    operator, work = _problem_data(rows, 1500, seed=rows)
    if constraint == "nonneg":
        work = work * np.float32(3.0)
    plan = get_plan(cpu, Problem(operator, StoppingRule.indeca(300, 1e-4), constraint), 1500)
    threshold = np.linspace(0.0, 2e-3, rows).astype(np.float32)
    x0 = np.zeros((rows, 1500), np.float32)
    x0[::2] = (work[::2] > 0.5).astype(np.float32) * 0.5  # some warm starts
    expected = _row_path(plan, work, threshold, x0)
    ours = cpu.run_fista(plan, work, threshold, x0=x0)
    np.testing.assert_array_equal(ours.x, expected.x)
    np.testing.assert_array_equal(ours.iterations, expected.iterations)
    np.testing.assert_array_equal(ours.converged, expected.converged)


def test_cells_that_stop_early_are_frozen_and_the_block_narrows():
    from calab.backends.cpu import _lanes
    from calab.engine import Problem, StoppingRule
    from calab.engine.block import get_plan

    cpu = get_backend("numpy")
    operator, work = _problem_data(9, 800, seed=3)
    work[[1, 4, 5, 7, 8]] = 0.0  # zero traces converge at iteration min_iterations + 1
    plan = get_plan(cpu, Problem(operator, StoppingRule(2000, 1e-4, 5), "box01"), 800)
    threshold = np.zeros(9, np.float32)
    batch = _lanes.LaneBatch(plan, work, threshold, None)
    widths = []
    original = batch.compact

    def compact(keep):
        original(keep)
        widths.append(batch.lanes)

    batch.compact = compact
    from calab.backends.driver import run_segments

    outcome = run_segments(batch, np.zeros((9, 800), np.float32), cpu.scatter_rows)
    assert widths and widths[0] == 4  # 9 lanes → the 4 still running
    expected = _row_path(plan, work, threshold)
    np.testing.assert_array_equal(outcome.x, expected.x)
    np.testing.assert_array_equal(outcome.iterations, expected.iterations)
    assert list(outcome.iterations[[1, 4, 5, 7, 8]]) == [6] * 5


def test_catune_banded_mode_uses_the_lanes_and_stays_exact():
    # run_deconvolution's banded mode (nonneg, CaTune's rule: cells stop at different
    # iterations) through the backend equals the row kernels' result.
    from calab.engine import Problem, StoppingRule
    from calab.engine.block import get_plan

    cpu = get_backend("numpy")
    problem = Problem.catune(30.0, 0.1, 0.6, max_iters=2000, conv_mode="banded", constraint="nonneg")
    _, work = _problem_data(12, 2000, seed=9, fs=30.0)
    work = work * np.float32(5.0)
    plan = get_plan(cpu, problem, 2000)
    threshold = plan.thresholds(np.full(12, 0.3))
    expected = _row_path(plan, work, threshold)
    ours = cpu.run_fista(plan, work, threshold)
    assert len(set(expected.iterations.tolist())) > 1
    np.testing.assert_array_equal(ours.x, expected.x)
    np.testing.assert_array_equal(ours.iterations, expected.iterations)
    assert StoppingRule.catune(2000).cap == plan.max_iterations


def test_lane_blocks_are_balanced_and_cover_every_cell():
    from calab.backends.cpu._lanes import MAX_LANES, lane_blocks

    for cells in (1, 2, 5, 16, 17, 20, 33, 100, 1000):
        for workers in (1, 2, 3):
            blocks = lane_blocks(cells, workers)
            assert [i for b in blocks for i in b] == list(range(cells))
            sizes = [len(b) for b in blocks]
            assert max(sizes) <= MAX_LANES and max(sizes) - min(sizes) <= 1
            if cells >= workers:
                assert len(blocks) % workers == 0


def test_simd_vectors_do_what_the_scalar_code_does():
    from numba import njit

    from calab.backends.cpu import _simd

    @njit
    def vector_ops(a, b, mask, out32, out64):
        va = _simd.load(a, 0, 5)
        vb = _simd.load(b, 0, 5)
        _simd.store(out32, 0, _simd.maximum(va, vb))
        _simd.store(out32, 5, _simd.minimum(va, vb))
        _simd.store(out32, 10, _simd.where(_simd.load(mask, 0, 5), va, vb))
        _simd.store(out32, 15, _simd.sub(_simd.add(va, _simd.mul(vb, _simd.splat(np.float32(3.0), 5))), vb))
        _simd.store(out64, 0, _simd.widen(va))

    @njit
    def scalar_ops(a, b, mask, out32):
        for i in range(5):
            out32[i] = max(a[i], b[i])
            out32[5 + i] = min(a[i], b[i])
            out32[10 + i] = a[i] if mask[i] != 0 else b[i]
            out32[15 + i] = (a[i] + b[i] * np.float32(3.0)) - b[i]

    a = np.array([-0.0, 0.0, 1.5, -2.0, 1e-30], np.float32)
    b = np.array([0.0, -0.0, 1.5000001, -3.0, 2e-30], np.float32)
    mask = np.array([1, 0, 1, 0, 1], np.float32)
    ours, truth, wide = np.zeros(20, np.float32), np.zeros(20, np.float32), np.zeros(5)
    vector_ops(a, b, mask, ours, wide)
    scalar_ops(a, b, mask, truth)
    np.testing.assert_array_equal(ours.view(np.uint32), truth.view(np.uint32))  # signed zeros too
    np.testing.assert_array_equal(wide, a.astype(np.float64))


def _dense_taps(taps: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n))
    for j, tap in enumerate(np.asarray(taps, dtype=np.float64)[:n]):
        matrix += tap * np.eye(n, k=-j)
    return matrix


@pytest.mark.parametrize("constraint", ["nonneg", "box01"])
def test_fft_mode_by_recursions_solves_the_fft_mode_problem(constraint):
    # FFT mode's kernel is a truncated difference of two exponentials (build_kernel); the
    # lanes apply it by float64 recursions.  Truth: the dense operator of the float32 taps
    # (KKT optimality of the solution) and the FFT path on the same problem.
    from calab.engine import KernelTaps, Problem, StoppingRule
    from calab.engine.block import get_plan

    cpu = get_backend("numpy")
    fs, n, rows = 30.0, 600, 5
    operator = KernelTaps.from_taus(0.1, 0.6, fs)
    A = _dense_taps(operator.taps, n)
    rng = np.random.default_rng(11)
    spikes = (rng.random((rows, n)) < 0.03).astype(np.float64)
    work = (spikes @ A.T * (0.5 if constraint == "box01" else 3.0) + 0.02 * rng.standard_normal((rows, n))).astype(np.float32)
    problem = Problem(operator, StoppingRule(4000, 1e-7, 5), constraint)
    plan = get_plan(cpu, problem, n)
    assert plan.exponentials is not None and plan.exponentials[-1] == operator.taps.size
    lam = np.array([0.0, 0.01, 0.05, 0.1, 0.2])
    threshold = plan.thresholds(lam)
    ours = cpu.run_fista(plan, work, threshold)
    fft_plan = get_plan(cpu, Problem(KernelTaps(operator.taps), StoppingRule(4000, 1e-7, 5), constraint), n)
    assert fft_plan.exponentials is None
    expected = _row_path(fft_plan, work, threshold)
    upper = 1.0 if constraint == "box01" else np.inf
    for row in range(rows):
        x = ours.x[row].astype(np.float64)
        gradient = A.T @ (A @ x - work[row]) + lam[row] * plan.dc_gain
        fixed_point = np.clip(x - gradient / plan.lipschitz, 0.0, upper)
        assert np.max(np.abs(fixed_point - x)) < 1e-3 * max(1.0, x.max())
        np.testing.assert_allclose(ours.x[row], expected.x[row], atol=2e-3 * max(1.0, expected.x[row].max()))


def test_kernel_exponentials_must_describe_the_taps():
    from calab.engine import KernelTaps

    good = KernelTaps.from_taus(0.1, 0.6, 30.0)
    decay, rise, peak = good.exponentials
    assert KernelTaps(good.taps, exponentials=(decay, rise, peak)).key == good.key
    with pytest.raises(ValueError, match="do not describe"):
        KernelTaps(good.taps, exponentials=(decay, rise, 2 * peak))
    with pytest.raises(ValueError, match="do not describe"):
        KernelTaps(good.taps[::-1], exponentials=(decay, rise, peak))


def test_padded_lane_blocks_give_the_row_kernels_results(monkeypatch):
    """3, 5 and 7 cells run in 4- and 8-lane kernels with inactive padding lanes."""
    from calab.backends.cpu._lanes import MAX_LANES, LaneBatch, padded_lanes
    from calab.engine import Problem, get_plan

    assert [padded_lanes(c) for c in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 9]
    assert MAX_LANES == 8
    cpu = get_backend("numpy")
    monkeypatch.setattr(cpu, "workers", 1)  # one block of all the cells
    problem = Problem.catune(30.0, 0.1, 0.6, max_iters=2000, conv_mode="banded", constraint="box01")
    for cells in (3, 5, 7):
        _, work = _problem_data(cells, 1500, seed=cells, fs=30.0)
        plan = get_plan(cpu, problem, 1500)
        threshold = plan.thresholds(np.full(cells, 0.2))
        expected = _row_path(plan, work, threshold)
        assert LaneBatch(plan, work, threshold, None).rows == padded_lanes(cells)
        ours = cpu.run_fista(plan, work, threshold)
        np.testing.assert_array_equal(ours.x, expected.x)
        np.testing.assert_array_equal(ours.iterations, expected.iterations)
        np.testing.assert_array_equal(ours.converged, expected.converged)
        assert len(set(expected.iterations.tolist())) > 1  # lanes finish at different steps
