"""CPU tests of the CUDA backend's algorithms (no GPU, no CuPy needed).

Every CUDA kernel in ``calab/backends/cuda/kernels/*.cu`` has a NumPy transliteration in
:mod:`calab.backends.cuda.reference`; the CUDA host driver
(:mod:`calab.backends.cuda._driver`) runs unchanged on top of them.  Here both are checked
against the NumPy backend (the CPU oracle) and the generic FISTA step of
:mod:`calab.fista`:

* sequential AR(2) kernels and the banded solve: bit for bit;
* chunked AR(2) scan: to float32 rounding;
* fused FFT-mode update: bit for bit against ``proximal_update`` given the same gradient;
* rolling rank: bit for bit against ``scipy.ndimage.rank_filter`` (IEEE total order);
* the whole driver (compaction, freeze, warm start, caps, ragged rows): iteration counts
  equal to the NumPy backend's, activity to float32 rounding;
* the out-of-memory halving logic with a fake allocator failure.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calab.backends import get_backend
from calab.backends.cuda import _driver
from calab.backends.cuda.reference import (
    NumpyKernels,
    block_sum,
    float_keys,
    keys_to_float,
    transliteration_backend,
    warp_tree_sum,
)
from calab.filters import rolling_baseline
from calab.fista import (
    TOLERANCE_SQUARED,
    FistaState,
    make_plan,
    proximal_update,
    solve_batch,
)

FS, TAU_R, TAU_D = 30.0, 0.1, 0.6


@pytest.fixture(scope="module")
def cpu():
    return get_backend("numpy")


def calcium(cells: int, n: int, seed: int = 0, rate: float = 0.03, noise: float = 0.1) -> np.ndarray:
    """Small gcamp6f-like traces in dF/F units, float32."""
    rng = np.random.default_rng(seed)
    spikes = (rng.random((cells, n)) < rate).astype(np.float64)
    t = np.arange(min(n, 200))
    kernel = np.exp(-t / (TAU_D * FS)) - np.exp(-t / (TAU_R * FS))
    traces = np.array([np.convolve(s, kernel)[:n] for s in spikes])
    traces += rng.normal(0.0, noise, (cells, n)) + 1.0 + 0.3 * rng.random((cells, 1))
    return traces.astype(np.float32)


def prepared(cpu, cells, n, mode, constraint="nonneg", lam=0.05, max_iters=2000, seed=0):
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, mode, constraint, max_iters)
    traces = calcium(cells, n, seed)
    work = traces - rolling_baseline(cpu, traces, TAU_D, FS)
    threshold = plan.thresholds(np.full(cells, lam))
    return plan, traces, work, threshold


# --------------------------------------------------------------------------- helpers
def test_warp_tree_and_block_sum_orders():
    values = np.arange(1.0, 33.0)
    assert warp_tree_sum(values) == values.sum()
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(3, 1000))
    for threads in (32, 64, 256):
        np.testing.assert_allclose(block_sum(rows, threads), rows.sum(axis=1), rtol=1e-13)
    # Exactly the kernel's order: thread j sums j, j+T, ...; then the lane tree.
    small = rng.normal(size=(1, 70))
    manual = np.zeros(32)
    for j in range(32):
        for i in range(j, 70, 32):
            manual[j] += small[0, i]
    assert block_sum(small, 32)[0] == warp_tree_sum(manual)


def test_float_keys_total_order_round_trip():
    values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-45, 2.0, np.inf], dtype=np.float32)
    keys = float_keys(values)
    assert np.all(np.diff(keys.astype(np.int64)) > 0)  # strictly increasing, -0 < +0
    back = keys_to_float(keys)
    assert np.array_equal(back.view(np.uint32), values.view(np.uint32))


def test_pq_table_is_the_homogeneous_response():
    g1, g2 = 1.66, -0.678
    table = _driver.pq_table(g1, g2, 40).astype(np.float64)
    assert tuple(table[0]) == (1.0, 0.0)
    for s1, s2, col in ((1.0, 0.0, 0), (0.0, 1.0, 1)):
        prev1, prev2 = s1, s2
        for j in range(40):
            value = g1 * prev1 + g2 * prev2
            assert table[j + 1, col] == pytest.approx(value, rel=1e-6, abs=1e-30)
            prev2, prev1 = prev1, value


def test_choose_chunks_and_threads():
    assert _driver.choose_chunks(100_000, 27_000, 132) == (1, 27_000)
    chunks, length = _driver.choose_chunks(10, 27_000, 132)
    assert chunks > 1 and (chunks - 1) * length < 27_000 <= chunks * length and length >= _driver.MIN_CHUNK
    assert _driver.choose_chunks(10, 100, 132)[0] == 1  # too short to cut
    assert _driver.choose_chunks(10, 101, 132, override=50) == (34, 3)
    assert _driver.choose_chunks(3, 7, 132, override=3) == (3, 3)
    assert [_driver.update_threads(n) for n in (1, 512, 1000, 27_000)] == [32, 32, 64, 256]


def test_budget_cells_scales_with_memory():
    small = _driver.budget_cells(1 << 30, 27_000, 27_648)
    big = _driver.budget_cells(139 << 30, 27_000, 27_648)
    assert 1 <= small < big
    assert _driver.budget_cells(0, 100, 128) == 1


# --------------------------------------------------------------------------- AR(2)
@pytest.mark.parametrize("adjoint", [False, True], ids=["forward", "adjoint"])
def test_sequential_ar2_bit_exact(cpu, adjoint):
    plan = make_plan(cpu, 257, FS, TAU_R, TAU_D, "banded", "nonneg", 100)
    g1, g2, gain = plan.ar2
    batch = np.random.default_rng(2).normal(size=(5, 257)).astype(np.float32)
    ours = _driver.ar2_apply(NumpyKernels(), batch, g1, g2, gain, adjoint=adjoint, chunks=1)
    oracle = (cpu.ar2_adjoint if adjoint else cpu.ar2_forward)(batch, g1, g2, gain)
    assert np.array_equal(ours, oracle)


@pytest.mark.parametrize("adjoint", [False, True], ids=["forward", "adjoint"])
@pytest.mark.parametrize("n, chunks", [(257, 4), (257, 128), (64 * 3 + 1, 3), (7, 3), (2, 1)])
def test_chunked_ar2_matches_sequential(cpu, adjoint, n, chunks):
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, "banded", "nonneg", 100)
    g1, g2, gain = plan.ar2
    batch = np.random.default_rng(3).normal(size=(4, n)).astype(np.float32)
    ours = _driver.ar2_apply(NumpyKernels(), batch, g1, g2, gain, adjoint=adjoint, chunks=chunks)
    oracle = (cpu.ar2_adjoint if adjoint else cpu.ar2_forward)(batch, g1, g2, gain)
    np.testing.assert_allclose(ours, oracle, rtol=0, atol=2e-5 * np.abs(oracle).max())


def test_chunked_forward_residual_fusion(cpu):
    n, cells, L = 130, 3, 32
    C = -(-n // L)
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, "banded", "nonneg", 100)
    g1, g2, gain = plan.ar2
    rng = np.random.default_rng(4)
    y = rng.random((n, cells)).astype(np.float32)
    work = rng.normal(size=(n, cells)).astype(np.float32)
    valid = (rng.random((n, cells)) > 0.2).astype(np.float32)
    active = np.array([True, False, True])
    ops = NumpyKernels()
    seq = np.full((n, cells), 7.0, np.float32)
    ops.ar2_forward_tm(y, seq, work, valid, active, g1, g2, gain)
    z, e = np.empty_like(y), np.full((n, cells), 7.0, np.float32)
    ends, starts = np.empty((C, cells, 2), np.float32), np.empty((C, cells, 2), np.float32)
    pq = _driver.pq_table(g1, g2, L)
    ops.ar2_chunk_forward_local(y, z, ends, active, L, C, g1, g2, gain)
    ops.ar2_chunk_carry_forward(ends, starts, pq, active, L, C)
    ops.ar2_chunk_forward_fix(z, e, starts, pq, work, valid, active, L)
    assert np.all(seq[:, 1] == 7.0) and np.all(e[:, 1] == 7.0)  # frozen cell untouched
    np.testing.assert_allclose(e[:, active], seq[:, active], rtol=0, atol=2e-6 * np.abs(seq).max())
    expected = (cpu.ar2_forward(y.T.copy(), g1, g2, gain).T - work) * valid
    np.testing.assert_allclose(seq[:, active], expected[:, active], rtol=0, atol=0)


# --------------------------------------------------------------------------- rolling rank
@pytest.mark.parametrize(
    "n, window, quantile",
    [(300, 25, 0.2), (60, 5, 0.2), (40, 100, 0.2), (50, 1, 0.2), (80, 16, 0.5), (33, 32, 0.9)],
)
def test_rolling_rank_matches_cpu_exactly(cpu, n, window, quantile):
    rng = np.random.default_rng(n + window)
    traces = rng.normal(size=(3, n)).astype(np.float32)
    traces[1] = np.round(traces[1] * 2) / 2  # many ties
    traces[2, ::3] = -0.0
    traces[2, 1::3] = 0.0
    ours = _driver.rolling_quantile(NumpyKernels(), traces, window, quantile)
    # IEEE total order (-0 < +0, spec §6): brute force over sorted keys, bit for bit.
    full_rank, ranks = _driver.rolling_ranks(window, quantile, n)
    keys = float_keys(traces)
    brute = np.empty_like(keys)
    for t in range(n):
        rank = ranks[t] if t < window else full_rank
        brute[:, t] = np.sort(keys[:, max(0, t - window + 1) : t + 1], axis=1)[:, rank]
    assert np.array_equal(ours.view(np.uint32), keys_to_float(brute).view(np.uint32))
    # The NumPy backend (rank_filter) compares with <, so it may pick either zero: values equal.
    assert np.array_equal(ours, cpu.rolling_quantile(traces, window, quantile))


def test_rolling_rank_spec_example():
    x = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]], dtype=np.float32)
    baseline = _driver.rolling_quantile(NumpyKernels(), x, 5, 0.2)
    assert (x - baseline).tolist() == [[0, 0, 3, 0, 4, 8, 0, 4, 0, 0]]


# --------------------------------------------------------------------------- fused updates
def random_state(rng, cells, n, k=3):
    x = np.maximum(rng.normal(size=(cells, n)), 0).astype(np.float32)
    y = np.maximum(x + 0.1 * rng.normal(size=(cells, n)), 0).astype(np.float32)
    return FistaState(
        x=x,
        y=y,
        t=1.0 + 3.0 * rng.random(cells),
        k=np.full(cells, k, dtype=np.int32),
        active=np.array([True] * (cells - 1) + [False]),
        converged=np.zeros(cells, dtype=bool),
    )


def state_arrays(state):
    return [np.array(a, copy=True) for a in state]


@pytest.mark.parametrize("box", [False, True], ids=["nonneg", "box01"])
@pytest.mark.parametrize("k", [0, 3, 40])
def test_fft_update_kernel_equals_generic_step(cpu, box, k):
    rng = np.random.default_rng(5 + k)
    cells, n, size = 6, 203, 512
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, "fft", "box01" if box else "nonneg", 45)
    state = random_state(rng, cells, n, k)
    gradient = (0.05 * rng.normal(size=(cells, n))).astype(np.float32)
    gradient[0] = 0.0  # a cell that stops moving: converges once k > 5
    threshold = plan.thresholds(rng.random(cells) * 0.01)
    expected = proximal_update(np, plan, state, gradient, threshold, freeze=True)

    x, y, t, kk, active, converged = state_arrays(state)
    ypad = np.zeros((cells, size), np.float32)
    ypad[:, :n] = y
    full = np.full((cells, size), np.nan, np.float32)
    full[:, :n] = gradient  # residual form with scale 1: g = full exactly
    NumpyKernels().fista_update_fft(
        x, ypad, full, None, np.zeros((0, 0), np.float32), t, kk, active, converged, threshold,
        gram=False, step=plan.step32, scale=1.0, box=box, cap=plan.max_iterations,
        tol2=TOLERANCE_SQUARED, threads=64,
    )  # fmt: skip
    assert np.array_equal(x, expected.x)
    assert np.array_equal(ypad[:, :n], expected.y)
    assert np.all(ypad[:, n:] == 0)
    np.testing.assert_array_equal(t, expected.t)
    np.testing.assert_array_equal(kk, expected.k)
    np.testing.assert_array_equal(active, expected.active)
    np.testing.assert_array_equal(converged, expected.converged)


def test_fft_update_gram_assembly(cpu):
    """Gram form: g = (full - y_tail @ M) - data, with the tail read before y changes."""
    rng = np.random.default_rng(6)
    cells, n, size = 4, 300, 1024
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, "fft", "nonneg", 2000)
    boundary = _driver._trimmed_boundary(plan)
    state = random_state(rng, cells, n)
    full = rng.normal(size=(cells, size)).astype(np.float32)
    data = rng.normal(size=(cells, n)).astype(np.float32)
    edge = boundary.shape[0]
    gradient = full[:, :n].copy()
    gradient[:, n - edge :] -= state.y[:, n - edge :] @ boundary
    gradient = gradient - data
    threshold = plan.thresholds(np.full(cells, 0.01))
    expected = proximal_update(np, plan, state, gradient, threshold, freeze=True)
    x, y, t, kk, active, converged = state_arrays(state)
    ypad = np.zeros((cells, size), np.float32)
    ypad[:, :n] = y
    NumpyKernels().fista_update_fft(
        x, ypad, full, data, boundary, t, kk, active, converged, threshold,
        gram=True, step=plan.step32, scale=1.0, box=False, cap=plan.max_iterations,
        tol2=TOLERANCE_SQUARED, threads=32,
    )  # fmt: skip
    # the boundary matmul sums in another order than BLAS: float32 rounding only
    np.testing.assert_allclose(x, expected.x, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(kk, expected.k)


def test_banded_fused_update_equals_operator_plus_generic_step(cpu):
    rng = np.random.default_rng(7)
    cells, n = 5, 150
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, "banded", "nonneg", 2000)
    g1, g2, gain = plan.ar2
    state = random_state(rng, cells, n)
    work = rng.normal(size=(cells, n)).astype(np.float32)
    threshold = plan.thresholds(np.full(cells, 0.02))
    residual = cpu.ar2_forward(state.y, g1, g2, gain) - work
    gradient = cpu.ar2_adjoint(residual, g1, g2, gain)
    expected = proximal_update(np, plan, state, gradient, threshold, freeze=True)

    x, y, t, kk, active, converged = state_arrays(state)
    xt, yt, wt = (np.ascontiguousarray(a.T) for a in (x, y, work))
    ops = NumpyKernels()
    e = np.empty_like(wt)
    ops.ar2_forward_tm(yt, e, wt, None, active, g1, g2, gain)
    ops.ar2_adjoint_update_tm(
        e, xt, yt, t, kk, active, converged, threshold,
        g1=g1, g2=g2, gain=gain, step=plan.step32, box=False, cap=plan.max_iterations, tol2=TOLERANCE_SQUARED,
    )  # fmt: skip
    assert np.array_equal(xt.T, expected.x)
    assert np.array_equal(yt.T, expected.y)
    np.testing.assert_array_equal(t, expected.t)
    np.testing.assert_array_equal(kk, expected.k)
    np.testing.assert_array_equal(active, expected.active)


# --------------------------------------------------------------------------- whole driver
def assert_same_solution(ours, oracle, *, exact=False, atol=5e-5, iteration_slack=0):
    """Same iterations (± ``iteration_slack``) and flags; activity equal or within ``atol``·peak.

    A slack of one iteration is allowed where the CUDA path evaluates the gradient in a
    different (mathematically equal) form than the NumPy backend: float32 rounding can
    move a cell across the convergence threshold one step earlier or later (spec §13).
    """
    x, iterations, converged = ours
    assert np.all(np.abs(iterations - oracle.iterations) <= iteration_slack), (iterations, oracle.iterations)
    np.testing.assert_array_equal(converged, oracle.converged)
    if exact:
        assert np.array_equal(x, oracle.x)
    else:
        np.testing.assert_allclose(x, oracle.x, rtol=0, atol=atol * max(1.0, float(np.abs(oracle.x).max())))


@pytest.mark.parametrize("constraint", ["nonneg", "box01"])
def test_driver_fft_matches_numpy_backend(cpu, constraint):
    plan, _, work, threshold = prepared(cpu, 5, 400, "fft", constraint)
    # The NumPy backend's FFT path (not its recursions for build_kernel's exponentials).
    oracle = cpu.run_fista(dataclasses.replace(plan, exponentials=None), work, threshold)
    ours = _driver.solve(NumpyKernels(), plan, work, threshold)
    assert_same_solution(ours, oracle)
    assert len(set(oracle.iterations.tolist())) > 1  # cells finish at different times: compaction ran


def test_driver_banded_sequential_is_bit_exact(cpu):
    plan, _, work, threshold = prepared(cpu, 4, 240, "banded", lam=0.1)
    oracle = cpu.run_fista(plan, work, threshold)
    ours = _driver.solve(NumpyKernels(), plan, work, threshold, chunks=1)
    assert_same_solution(ours, oracle, exact=True)


def test_driver_banded_chunked(cpu):
    plan, _, work, threshold = prepared(cpu, 3, 240, "banded", lam=0.1, seed=3)
    oracle = cpu.run_fista(plan, work, threshold)
    ours = _driver.solve(NumpyKernels(multiprocessors=1), plan, work, threshold)  # auto: chunked
    assert _driver.choose_chunks(3, 240, 1)[0] > 1
    assert_same_solution(ours, oracle, atol=2e-4)


@pytest.mark.parametrize("mode", ["fft", "banded"])
def test_driver_sync_interval_does_not_change_results(cpu, mode):
    plan, _, work, threshold = prepared(cpu, 4, 200, mode, lam=0.1, seed=4)
    every = _driver.solve(NumpyKernels(), plan, work, threshold, check_every=1, chunks=1)
    sparse = _driver.solve(NumpyKernels(), plan, work, threshold, check_every=7, chunks=1)
    assert np.array_equal(every[0], sparse[0])
    np.testing.assert_array_equal(every[1], sparse[1])


def test_driver_ragged_rows_use_residual_form(cpu):
    cells, n = 3, 260
    plan, _, work, threshold = prepared(cpu, cells, n, "fft", lam=0.05, seed=5)
    lengths = np.array([260, 200, 131])
    valid = (np.arange(n)[None, :] < lengths[:, None]).astype(np.float32)
    work = work * valid
    oracle = cpu.run_fista(plan, work, threshold, valid=valid)
    ours = _driver.solve(NumpyKernels(), plan, work, threshold, valid=valid)
    # residual form e = (Ky - work)·valid, g = Kᵀe (the reference's form, spec §7.3) vs the
    # NumPy backend's Kᵀ(Ky·valid) - Kᵀwork
    assert_same_solution(ours, oracle, atol=2e-4, iteration_slack=1)
    assert np.all(ours[0][valid == 0] == 0)


def test_driver_long_kernel_uses_residual_form(cpu, monkeypatch):
    monkeypatch.setattr(_driver, "GRAM_MAX_EDGE", 8)
    plan, _, work, threshold = prepared(cpu, 3, 300, "fft", lam=0.05, seed=6)
    oracle = cpu.run_fista(plan, work, threshold)
    ours = _driver.solve(NumpyKernels(), plan, work, threshold)
    assert_same_solution(ours, oracle, atol=2e-4, iteration_slack=1)


@pytest.mark.parametrize("mode", ["fft", "banded"])
def test_driver_caps_warm_start_and_zero_iterations(cpu, mode):
    plan, _, work, threshold = prepared(cpu, 3, 150, mode, lam=0.0, max_iters=37, seed=7)
    assert plan.max_iterations == 100
    x0 = np.abs(np.random.default_rng(8).normal(size=work.shape)).astype(np.float32)
    oracle = cpu.run_fista(plan, work, threshold, x0=x0)
    ours = _driver.solve(NumpyKernels(), plan, work, threshold, x0=x0, chunks=1)
    assert_same_solution(ours, oracle, exact=(mode == "banded"))
    zero_plan = make_plan(cpu, 150, FS, TAU_R, TAU_D, mode, "nonneg", 0)
    x, iterations, converged = _driver.solve(NumpyKernels(), zero_plan, work, threshold, x0=x0)
    assert np.array_equal(x, x0) and not iterations.any() and not converged.any()


@pytest.mark.parametrize("mode", ["fft", "banded"])
def test_full_solve_pipeline_on_transliterations(cpu, mode):
    """solve_batch + rolling baseline through the CUDA code path vs the NumPy backend."""
    backend = transliteration_backend(chunks=1)
    plan = make_plan(cpu, 300, FS, TAU_R, TAU_D, mode, "nonneg", 2000)
    traces = calcium(3, 300, seed=9) * 100 + 1000
    lam = np.full(3, 0.5)
    outputs = []
    for chosen in (cpu, backend):
        baseline = rolling_baseline(chosen, traces, TAU_D, FS)
        outputs.append(solve_batch(chosen, plan, traces, lam, baseline))
    oracle, ours = outputs
    np.testing.assert_array_equal(ours.iterations, oracle.iterations)
    exact = mode == "banded"
    for field in ("activity", "reconvolution"):
        a, b = getattr(ours, field), getattr(oracle, field)
        if exact:
            assert np.array_equal(a, b), field
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())
    np.testing.assert_allclose(ours.baseline, oracle.baseline, rtol=1e-7)


# --------------------------------------------------------------------------- OOM halving
class FakeOOM(RuntimeError):
    pass


def test_split_on_oom_halves_and_retries():
    calls, recovered = [], []

    def run(start, stop):
        calls.append((start, stop))
        if stop - start > 3:
            raise FakeOOM("cudaErrorMemoryAllocation: out of memory")
        return list(range(start, stop))

    parts = _driver.split_on_oom(run, 10, is_oom=lambda e: isinstance(e, FakeOOM), recover=lambda: recovered.append(1))
    assert sum(parts, []) == list(range(10))
    assert calls[:3] == [(0, 10), (0, 5), (0, 3)] and len(recovered) == 2
    assert all(stop - start <= 3 for start, stop in calls[3:])


def test_split_on_oom_gives_up_at_one_cell_and_passes_other_errors():
    def always_oom(start, stop):
        raise FakeOOM("out of memory")

    with pytest.raises(MemoryError, match="single one of the 4 cells") as info:
        _driver.split_on_oom(always_oom, 4, is_oom=lambda e: isinstance(e, FakeOOM), recover=lambda: None)
    assert isinstance(info.value.__cause__, FakeOOM)

    def broken(start, stop):
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        _driver.split_on_oom(broken, 4, is_oom=lambda e: isinstance(e, FakeOOM), recover=lambda: None)


def test_split_solve_equals_whole_solve(cpu):
    """Cells are independent: a batch split by an OOM gives the same per-cell results."""
    plan, _, work, threshold = prepared(cpu, 6, 200, "fft", lam=0.1, seed=10)
    ops = NumpyKernels()
    whole = _driver.solve(ops, plan, work, threshold)
    budget = {"max": 2}

    def run(start, stop):
        if stop - start > budget["max"]:
            raise FakeOOM("out of memory")
        return _driver.solve(ops, plan, work[start:stop], threshold[start:stop])

    parts = _driver.split_on_oom(run, 6, is_oom=lambda e: isinstance(e, FakeOOM), recover=lambda: None)
    x, iterations = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    assert np.array_equal(x, whole[0])
    np.testing.assert_array_equal(iterations, whole[1])


# --------------------------------------------------------------------------- golden
GOLDEN_CASES = [
    "spec9_clean",
    "spec9_banded",
    "spec9_x3_box01_banded",
    "spec9_batch",
    "maxiter_150_banded",
    "short_n9_banded",
    "short_n3_batch",
    "mixed_zero_const_batch",
    "high_lambda_batch",
]


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_fixtures_through_cuda_code_path(case, monkeypatch):
    """The public API on the CUDA driver + transliterated kernels vs calab==0.3.0 outputs.

    Banded cases must be bit-exact with the NumPy backend (sequential recursions) and hence
    reproduce the reference's iteration counts exactly; FFT cases match to float32 rounding.
    """
    from pathlib import Path

    import calab
    import calab.deconvolution as deconvolution

    path = Path(__file__).resolve().parent / "golden" / "deconv" / f"{case}.npz"
    if not path.exists():
        pytest.skip(f"golden fixture {path.name} missing")
    with np.load(path, allow_pickle=False) as data:
        ref = {key: data[key] for key in data.files}
    args = (float(ref["fs"]), float(ref["tau_r"]), float(ref["tau_d"]), float(ref["lam"]))
    kwargs = dict(max_iters=int(ref["max_iters"]), conv_mode=str(ref["conv_mode"]), constraint=str(ref["constraint"]))
    oracle = calab.run_deconvolution_full(np.array(ref["traces"]), *args, **kwargs, backend="numpy")
    stand_in = transliteration_backend(chunks=1)
    monkeypatch.setattr(deconvolution, "resolve_backend", lambda *a, **k: stand_in)
    ours = calab.run_deconvolution_full(np.array(ref["traces"]), *args, **kwargs)
    assert type(ours.activity) is np.ndarray and ours.activity.dtype == np.float64
    np.testing.assert_array_equal(np.atleast_1d(ours.iterations), np.atleast_1d(ref["iterations"]))
    np.testing.assert_array_equal(np.atleast_1d(ours.converged), np.atleast_1d(ref["converged"]))
    if kwargs["conv_mode"] == "banded":
        assert np.array_equal(ours.activity, oracle.activity)
        assert np.array_equal(ours.reconvolution, oracle.reconvolution)
    activity, expected = np.atleast_2d(ours.activity), np.atleast_2d(ref["activity"])
    peak = np.maximum(np.abs(expected).max(axis=1, initial=0.0), 1e-6)
    assert np.all(np.abs(activity - expected).max(axis=1, initial=0.0) <= 1e-3 * peak)
    tol = 1e-3 * float(ref["amplitude_scale"])
    np.testing.assert_allclose(np.atleast_1d(ours.baseline), np.atleast_1d(ref["baseline"]), rtol=0, atol=tol)
