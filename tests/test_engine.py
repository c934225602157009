"""The problem-description solver (:mod:`calab.engine`) on every backend.

Truth is independent of the code under test: dense matrices built from the operator
definitions (spec ``indeca.md`` §1.2, §1.5), a float64 dense FISTA written from
``indeca.md`` §1.6, projected-gradient optimality (KKT) conditions, and the existing
CaTune solve for the features that must reproduce it exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import calab
from calab.engine import AR2, KernelTaps, Problem, StoppingRule, solve_block
from calab.kernel import ar2_impulse_peak, baseline_window, tau_to_ar2

FS, TAU_R, TAU_D = 30.0, 0.1, 0.6


# --------------------------------------------------------------------------- dense truth
def dense_convolution(taps: np.ndarray, n: int) -> np.ndarray:
    """``(n, n)`` float64 matrix of causal convolution truncated to ``n`` samples."""
    matrix = np.zeros((n, n))
    for j, tap in enumerate(np.asarray(taps, dtype=np.float64)[:n]):
        matrix += tap * np.eye(n, k=-j)
    return matrix


def dense_ar2(g1: float, g2: float, peak: float, n: int) -> np.ndarray:
    """The peak-normalised AR(2) operator of indeca.md §1.2 as a dense float64 matrix.

    ``y[0] = 0``, ``y[t] = g1 y[t−1] + g2 y[t−2] + s[t−1]/P``: column ``j`` is the impulse
    response ``c`` (``c_0 = 1``, ``c_1 = g1``, ``c_k = g1 c_{k−1} + g2 c_{k−2}``) delayed
    by ``j + 1`` samples and scaled by ``1/P``.
    """
    c = np.zeros(n)
    if n:
        c[0] = 1.0
    if n > 1:
        c[1] = g1
    for k in range(2, n):
        c[k] = g1 * c[k - 1] + g2 * c[k - 2]
    taps = np.concatenate([[0.0], c[: n - 1]]) / peak
    return dense_convolution(taps, n)


def block_mean_matrix(n_data: int, upsample: int) -> np.ndarray:
    """``R``: ``(T, u·T)``, the mean of each run of ``u`` samples (indeca.md §1.5)."""
    return np.kron(np.eye(n_data), np.full((1, upsample), 1.0 / upsample))


def dense_fista(A, y, weight, lipschitz, box, tol, max_iters, x0=None, min_iterations=5):
    """indeca.md §1.6 in float64 with a dense operator; returns ``(x, iterations)``."""
    upper = 1.0 if box else np.inf
    x = np.zeros(A.shape[1]) if x0 is None else np.array(x0, dtype=np.float64)
    v, t, k = x.copy(), 1.0, 0
    step = 1.0 / lipschitz
    while k < max_iters:
        gradient = A.T @ (A @ v - y)
        x_old = x
        x = np.clip(v - step * gradient - step * weight, 0.0, upper)
        k += 1
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum = (t - 1.0) / t_next
        diff2, size, dot = np.sum((x - x_old) ** 2), np.sum(x_old**2), np.sum((v - x) * (x - x_old))
        v = np.clip(x + momentum * (x - x_old), 0.0, upper)
        if k > 1 and dot > 0:
            t, v = 1.0, x.copy()
        else:
            t = t_next
        if k > min_iterations and diff2 < tol * tol * (size + 1e-20):
            break
    return x, k


def assert_kkt(A, y, x, weight, lipschitz, upper, tolerance):
    """Projected-gradient optimality: ``x = P(x − ∇f(x)/L)`` to ``tolerance`` of its scale."""
    gradient = A.T @ (A @ x - y) + weight
    fixed_point = np.clip(x - gradient / lipschitz, 0.0, upper)
    assert np.max(np.abs(fixed_point - x)) < tolerance * max(1.0, float(np.max(x)))


def spike_data(A: np.ndarray, n_cells: int, seed: int, noise: float = 0.02, rate: float = 0.04) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spikes = (rng.random((n_cells, A.shape[1])) < rate).astype(np.float64)
    return spikes @ A.T + noise * rng.standard_normal((n_cells, A.shape[0]))


# --------------------------------------------------------------------------- stopping rules
def test_stopping_rules_of_the_reference():
    assert StoppingRule.catune(150).cap == 200
    assert StoppingRule.catune(37).cap == 100
    assert StoppingRule.catune(0).cap == 0
    assert StoppingRule.indeca(120).cap == 150
    assert StoppingRule.indeca(500).cap == 500
    assert StoppingRule(7).cap == 7
    assert StoppingRule.catune(2**32 - 1).cap == 2**31 - 1
    assert StoppingRule.catune().tolerance_squared == 1e-4 * 1e-4
    with pytest.raises(ValueError, match="tolerance"):
        StoppingRule(10, tolerance=-1.0)


@pytest.mark.parametrize("min_iterations", [0, 5, 11])
def test_minimum_iterations_is_data(backend, min_iterations):
    # An all-zero trace has a zero solution: it converges as soon as the test is allowed,
    # at iteration min_iterations + 1 (6 with the reference's rule).
    problem = Problem(KernelTaps(calab.build_kernel(TAU_R, TAU_D, FS)), StoppingRule(100, 1e-4, min_iterations))
    result = solve_block(problem, np.zeros((2, 200)), lam=0.1, backend=backend)
    np.testing.assert_array_equal(result.iterations, [min_iterations + 1] * 2)
    assert result.converged.all()


def test_cap_follows_the_rule(ar2_backend):
    backend = ar2_backend
    rng = np.random.default_rng(4)
    problem = Problem(AR2.from_taus(TAU_R, TAU_D, FS), StoppingRule.indeca(120, tol=0.0), "box01")
    result = solve_block(problem, rng.random((3, 300)), backend=backend)
    np.testing.assert_array_equal(result.iterations, [150] * 3)
    assert not result.converged.any()


# --------------------------------------------------------------------------- CaTune equivalence
@pytest.mark.parametrize("conv_mode", ["fft", "banded"])
def test_build_kernel_taps_reproduce_the_tau_solve_exactly(backend, conv_mode):
    rng = np.random.default_rng(7)
    kernel = calab.build_kernel(TAU_R, TAU_D, FS)
    spikes = (rng.random((3, 500)) < 0.03).astype(np.float64)
    traces = np.array([np.convolve(s, kernel)[:500] for s in spikes]) + 0.05 * rng.standard_normal((3, 500)) + 2.0
    lam = np.array([0.02, 0.1, 0.3])
    reference = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, lam, conv_mode=conv_mode, backend=backend)
    operator = KernelTaps.from_taus(TAU_R, TAU_D, FS) if conv_mode == "fft" else AR2.from_taus(TAU_R, TAU_D, FS)
    if conv_mode == "fft":
        np.testing.assert_array_equal(operator.taps, kernel)
    problem = Problem(operator, StoppingRule.catune(2000), upsample=1, baseline_window=baseline_window(TAU_D, FS))
    ours = solve_block(problem, traces, lam=lam, backend=backend).to_numpy()
    np.testing.assert_array_equal(ours.activity, np.asarray(reference.activity, dtype=np.float32))
    np.testing.assert_array_equal(ours.reconvolution, np.asarray(reference.reconvolution, dtype=np.float32))
    np.testing.assert_array_equal(ours.iterations, np.asarray(reference.iterations))
    np.testing.assert_array_equal(ours.baseline, np.asarray(reference.baseline))


def test_upsample_one_is_the_plain_operator(backend):
    # u = 1 must not route through the block reduction (which would change rounding).
    rng = np.random.default_rng(8)
    data = rng.random((2, 400))
    operator = KernelTaps(calab.build_kernel(TAU_R, TAU_D, FS))
    plain = solve_block(Problem(operator, StoppingRule(300)), data, lam=0.05, backend=backend).to_numpy()
    explicit = solve_block(Problem(operator, StoppingRule(300), upsample=1), data, lam=0.05, backend=backend).to_numpy()
    np.testing.assert_array_equal(plain.activity, explicit.activity)
    np.testing.assert_array_equal(plain.iterations, explicit.iterations)


# --------------------------------------------------------------------------- optimality
FREE_FORM = np.array([0.0, 0.35, 1.0, 0.8, 0.45, 0.2, -0.08, 0.05, 0.02], dtype=np.float32)


@pytest.mark.parametrize("constraint", ["nonneg", "box01"])
def test_free_form_kernel_solution_is_optimal(backend, constraint):
    n = 300
    A = dense_convolution(FREE_FORM, n)
    y = spike_data(A, 3, seed=11) * (0.6 if constraint == "box01" else 1.0)
    lam = 0.02
    operator = KernelTaps(FREE_FORM)
    problem = Problem(operator, StoppingRule(5000, tolerance=1e-6), constraint)
    result = solve_block(problem, y, lam=lam, backend=backend).to_numpy()
    assert result.converged.all()
    weight = lam * float(FREE_FORM.astype(np.float64).sum())
    upper = 1.0 if constraint == "box01" else np.inf
    for row in range(3):
        assert_kkt(A, y[row], result.activity[row].astype(np.float64), weight, operator.resolved_lipschitz(), upper, 2e-4)
    np.testing.assert_allclose(result.reconvolution, result.activity.astype(np.float64) @ A.T, atol=1e-4)


@pytest.mark.slow
def test_long_kernel_takes_the_residual_form_without_an_m_by_m_matrix(backend, monkeypatch):
    """A kernel longer than ``gram_max_edge`` taps never builds its Gram boundary matrix.

    (Before, a 1 kHz recording with τd = 1.9 s asked for a 27,000² float64 matrix, 5.5 GB.)
    """
    from calab.backends import get_backend
    from calab.engine import fista

    chosen = get_backend(backend)
    limit = chosen.gram_max_edge
    assert limit is not None
    n = 2 * (limit + 200)
    taps = np.exp(-np.arange(limit + 200) / 300.0).astype(np.float32)
    taps[0] = 0.0

    def refuse(kernel):
        raise AssertionError(f"gram_boundary built for {kernel.size} taps")

    monkeypatch.setattr(fista, "gram_boundary", refuse)
    A = dense_convolution(taps, n)
    y = spike_data(A, 2, seed=21, rate=0.01)
    lam = 0.05
    operator = KernelTaps(taps)
    problem = Problem(operator, StoppingRule(20000, tolerance=1e-7), "nonneg")
    result = solve_block(problem, y, lam=lam, backend=backend).to_numpy()
    weight = lam * float(taps.astype(np.float64).sum())
    for row in range(2):
        assert_kkt(A, y[row], result.activity[row].astype(np.float64), weight, operator.resolved_lipschitz(), np.inf, 2e-3)


@pytest.mark.parametrize("kind", ["taps", "ar2"])
def test_upsampled_solution_is_optimal(backend, kind):
    upsample, n_data = 4, 120
    fs_up = FS * upsample
    if kind == "taps":
        taps = calab.build_kernel(TAU_R, TAU_D, fs_up)
        operator = KernelTaps(taps)
        K = dense_convolution(taps, upsample * n_data)
    else:
        operator = AR2.from_taus(TAU_R, TAU_D, fs_up)
        g1, g2 = (float(v) for v in operator.coefficients32[:2])
        K = dense_ar2(g1, g2, 1.0 / float(operator.coefficients32[2]), upsample * n_data)
    A = block_mean_matrix(n_data, upsample) @ K
    y = spike_data(A, 3, seed=12, rate=0.01)
    lam = 0.01
    problem = Problem(operator, StoppingRule(20000, tolerance=1e-7), "nonneg", upsample=upsample)
    result = solve_block(problem, y, lam=lam, backend=backend).to_numpy()
    assert result.activity.shape == (3, upsample * n_data) and result.reconvolution.shape == (3, n_data)
    weight = lam * operator.resolved_l1_weight()
    # The step the solver uses, L_K/u, must bound the true ‖R K‖²…
    lipschitz = operator.resolved_lipschitz() / upsample
    assert np.linalg.norm(A, 2) ** 2 <= lipschitz * (1 + 1e-6)
    for row in range(3):
        assert_kkt(A, y[row], result.activity[row].astype(np.float64), weight, lipschitz, np.inf, 1e-3)
    np.testing.assert_allclose(result.reconvolution, result.activity.astype(np.float64) @ A.T, atol=2e-4)


def test_upsampled_block_reduction_matches_its_definition(backend):
    # Data at fs, activity at u·fs: the model is the mean of each block of u samples of
    # the upsampled convolution (checked through the reconvolution of a given activity).
    upsample, n_data = 3, 50
    taps = calab.build_kernel(TAU_R, TAU_D, FS * upsample)
    rng = np.random.default_rng(3)
    activity = (rng.random((2, upsample * n_data)) < 0.05).astype(np.float32)
    problem = Problem(KernelTaps(taps), StoppingRule(0), upsample=upsample)
    result = solve_block(problem, np.zeros((2, n_data)), x0=activity, backend=backend).to_numpy()
    expected = activity.astype(np.float64) @ (block_mean_matrix(n_data, upsample) @ dense_convolution(taps, upsample * n_data)).T
    np.testing.assert_array_equal(result.activity, activity)  # cap 0: the warm start is returned
    np.testing.assert_allclose(result.reconvolution, expected, atol=1e-5)


# --------------------------------------------------------------------------- InDeCa case
def indeca_operator(fs_up: float) -> tuple[AR2, np.ndarray]:
    g1, g2, _, _ = tau_to_ar2(TAU_R, TAU_D, fs_up)
    peak = ar2_impulse_peak(g1, g2, TAU_D, fs_up)
    operator = AR2.from_taus(TAU_R, TAU_D, fs_up)
    assert (operator.g1, operator.g2, operator.peak) == (g1, g2, peak)
    return operator, np.array([g1, g2, peak])


def test_indeca_operator_constants_from_the_spec():
    # indeca.md §1.2 worked example: τr 0.1, τd 0.6, fs_up 300 → P 21.3753, L_K 66345.6.
    operator, _ = indeca_operator(300.0)
    assert operator.peak == pytest.approx(21.3753, abs=1e-4)
    assert operator.resolved_lipschitz() == pytest.approx(66345.6, rel=1e-6)
    assert operator.resolved_l1_weight() == pytest.approx(257.576, rel=1e-4)


def test_indeca_banded_box01_solve_matches_a_dense_computation(ar2_backend):
    backend = ar2_backend
    fs_up, n = 150.0, 360
    operator, (g1, g2, peak) = indeca_operator(fs_up)
    A = dense_ar2(g1, g2, peak, n)
    rng = np.random.default_rng(21)
    spikes = (rng.random((3, n)) < 0.02).astype(np.float64)
    y = spikes @ A.T + 0.03 * rng.standard_normal((3, n))
    warm = np.zeros((3, n), dtype=np.float32)
    warm[0] = spikes[0]  # cell 0 warm-started from the truth, cells 1-2 from zero
    lam = np.array([0.0, 0.0, 0.001])
    weight = lam * operator.resolved_l1_weight()
    lipschitz = operator.resolved_lipschitz()
    rule = StoppingRule.indeca(3000, tol=1e-6)
    problem = Problem(operator, rule, "box01")
    result = solve_block(problem, y, lam=lam, x0=warm, backend=backend).to_numpy()
    assert result.activity.min() >= 0.0 and result.activity.max() <= 1.0
    # The operator itself against the dense matrix (float32 evaluation: relative to the scale).
    model = result.activity.astype(np.float64) @ A.T
    np.testing.assert_allclose(result.reconvolution, model, atol=1e-4 * max(1.0, np.abs(model).max()))
    for row in range(3):
        x = result.activity[row].astype(np.float64)
        assert_kkt(A, y[row], x, weight[row], lipschitz, 1.0, 1e-3)
        expected, _ = dense_fista(A, y[row], weight[row], lipschitz, True, 1e-6, rule.cap, warm[row])
        np.testing.assert_allclose(x, expected, atol=2e-2)


def test_indeca_iterations_follow_the_dense_reference_early_on():
    # Before float32 rounding matters (a short, well-conditioned problem), the iterates and
    # the stopping iteration of the float32 solver equal those of the float64 definition.
    fs_up, n = 60.0, 120
    operator, (g1, g2, peak) = indeca_operator(fs_up)
    A = dense_ar2(g1, g2, peak, n)
    rng = np.random.default_rng(5)
    y = (rng.random((1, n)) < 0.05).astype(np.float64) @ A.T
    rule = StoppingRule.indeca(400, tol=1e-3)
    result = solve_block(Problem(operator, rule, "box01"), y, backend="numpy")
    expected, iterations = dense_fista(A, y[0], 0.0, operator.resolved_lipschitz(), True, 1e-3, rule.cap)
    assert abs(int(result.iterations[0]) - iterations) <= 1
    np.testing.assert_allclose(result.activity[0], expected, atol=5e-3)


# --------------------------------------------------------------------------- per-cell data
def test_warm_start_rows_and_cold_rows_equal_separate_solves(ar2_backend):
    backend = ar2_backend
    rng = np.random.default_rng(31)
    data = rng.random((3, 300))
    warm = np.zeros((3, 300), dtype=np.float32)
    warm[1] = rng.random(300).astype(np.float32) * 0.1
    problem = Problem(AR2.from_taus(TAU_R, TAU_D, FS), StoppingRule.indeca(500), "box01")
    together = solve_block(problem, data, x0=warm, lam=0.01, backend=backend).to_numpy()
    for row in range(3):
        alone = solve_block(
            problem, data[row : row + 1], x0=warm[row : row + 1] if row == 1 else None, lam=0.01, backend=backend
        ).to_numpy()
        np.testing.assert_allclose(together.activity[row], alone.activity[0], atol=1e-5)
        assert abs(int(together.iterations[row]) - int(alone.iterations[0])) <= 1


def test_ragged_upsampled_rows_solve_like_their_own_length(backend):
    upsample = 2
    problem = Problem(KernelTaps(calab.build_kernel(TAU_R, TAU_D, FS * upsample)), StoppingRule(3000, 1e-6), upsample=upsample)
    rng = np.random.default_rng(41)
    data = rng.random((2, 200))
    data[1, 150:] = 0.0
    together = solve_block(problem, data, lengths=np.array([200, 150]), lam=0.05, backend=backend).to_numpy()
    alone = solve_block(problem, data[1:, :150], lam=0.05, backend=backend).to_numpy()
    np.testing.assert_allclose(together.activity[1, :300], alone.activity[0], atol=1e-3 * max(1, alone.activity.max()))
    assert not together.activity[1, 300:].any()


def test_bad_problem_and_block_inputs_raise_clear_errors():
    taps = KernelTaps(calab.build_kernel(TAU_R, TAU_D, FS))
    with pytest.raises(ValueError, match="constraint"):
        Problem(taps, StoppingRule(10), "positive")
    with pytest.raises(ValueError, match="upsample"):
        Problem(taps, StoppingRule(10), upsample=0)
    with pytest.raises(ValueError, match="empty"):
        KernelTaps(np.zeros(0))
    problem = Problem(taps, StoppingRule(10))
    with pytest.raises(ValueError, match="non-finite"):
        solve_block(problem, np.array([[0.0, np.nan, 1.0]]), backend="numpy")
    with pytest.raises(ValueError, match="x0 must have shape"):
        solve_block(problem, np.zeros((2, 5)), x0=np.zeros((2, 4)), backend="numpy")
    with pytest.raises(ValueError, match="lam"):
        solve_block(problem, np.zeros((2, 5)), lam=[0.1, -1.0], backend="numpy")


def test_apply_operator_is_the_dense_operator_and_its_transpose(ar2_backend):
    backend = ar2_backend
    from calab.engine import apply_operator

    upsample, n_data = 2, 40
    operator = AR2.from_taus(TAU_R, TAU_D, FS * upsample)
    problem = Problem(operator, StoppingRule(1), upsample=upsample)
    g1, g2, gain = (float(v) for v in operator.coefficients32)
    A = block_mean_matrix(n_data, upsample) @ dense_ar2(g1, g2, 1.0 / gain, upsample * n_data)
    rng = np.random.default_rng(2)
    x = rng.random((3, upsample * n_data)).astype(np.float32)
    e = rng.random((3, n_data)).astype(np.float32)
    forward = np.asarray(apply_operator(problem, x, backend=backend))
    adjoint = np.asarray(apply_operator(problem, e, adjoint=True, backend=backend))
    # float32 evaluation (by FFT on JAX): errors relative to the batch's scale
    for ours, exact in ((forward, x.astype(np.float64) @ A.T), (adjoint, e.astype(np.float64) @ A)):
        np.testing.assert_allclose(ours, exact, atol=1e-5 * np.abs(exact).max())


@pytest.mark.parametrize("operator", ["taps", "ar2"])
@pytest.mark.parametrize("chunks", [1, 3])
def test_cuda_kernels_take_the_stopping_rule_as_data(operator, chunks):
    # The fused CUDA kernels (their NumPy transliterations, run by the CUDA host driver)
    # test convergence against min_iterations and tol from the plan, not constants.
    from calab.backends.cuda.reference import transliteration_backend

    emulated = transliteration_backend(chunks=chunks)
    spec = KernelTaps.from_taus(TAU_R, TAU_D, FS) if operator == "taps" else AR2.from_taus(TAU_R, TAU_D, FS)
    rng = np.random.default_rng(9)
    data = np.vstack([np.zeros(300), rng.random((2, 300))])
    for rule in (StoppingRule(200, 1e-4, 11), StoppingRule.indeca(120, tol=1e-3)):
        problem = Problem(spec, rule, "box01")
        ours = solve_block(problem, data, lam=0.05, backend=emulated)
        generic = solve_block(problem, data, lam=0.05, backend="numpy")
        if rule.min_iterations == 11:
            assert ours.iterations[0] == 12
        np.testing.assert_array_equal(ours.iterations, generic.iterations)
        np.testing.assert_allclose(ours.activity, generic.activity, atol=1e-5)


def test_jax_reuses_compiled_programs_for_a_new_kernel_length_or_lambda():
    pytest.importorskip("jax")
    from calab.backends import get_backend

    jax_backend = get_backend("jax")
    rng = np.random.default_rng(6)
    data = rng.random((3, 500))
    first = Problem(KernelTaps(calab.build_kernel(TAU_R, 0.60, FS)), StoppingRule(60))
    solve_block(first, data, lam=0.1, backend="jax")
    compiled = jax_backend._segment._cache_size()
    for tau_decay, lam in ((0.62, 0.1), (0.58, 0.3), (0.61, 0.05)):
        kernel = calab.build_kernel(TAU_R, tau_decay, FS)
        assert kernel.size != first.operator.taps.size
        solve_block(Problem(KernelTaps(kernel), StoppingRule(60)), data, lam=lam, backend="jax")
    assert jax_backend._segment._cache_size() == compiled


def test_a_memory_mapped_input_is_never_copied_whole(tmp_path, monkeypatch):
    # The input is converted one chunk at a time: peak traced allocations stay below the
    # float64 output plus half the input's float64 size (a whole float64 copy of the input,
    # as before #8, would need the full input size on top of the output).
    import tracemalloc

    cells, frames = 8000, 500
    path = tmp_path / "traces.npy"
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(cells, frames))
    data[:] = np.random.default_rng(0).random((cells, frames), dtype=np.float32)
    data.flush()
    del data
    traces = np.load(path, mmap_mode="r")
    monkeypatch.setenv("CALAB_CHUNK_CELLS", "256")
    # Warm up first: loading the compiled kernels allocates once per process.
    calab.run_deconvolution(traces[:2], FS, TAU_R, TAU_D, 1.0, backend="numpy", progress=False)
    tracemalloc.start()
    try:
        activity = calab.run_deconvolution(traces, FS, TAU_R, TAU_D, 1.0, backend="numpy", progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    output = cells * frames * 8
    assert activity.shape == (cells, frames) and activity.dtype == np.float64
    assert peak < output + output // 2, f"peak {peak / 2**20:.1f} MiB for a {output / 2**20:.1f} MiB output"
