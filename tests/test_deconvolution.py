"""Behaviour of the batched deconvolution engine on every backend.

Truth here is independent of the code under test: optimality (KKT) conditions checked
with ``numpy.convolve`` and a brute-force rolling baseline, exact adjoint identities,
closed-form stopping rules of the reference, and single-cell solves for batch features.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calab
from calab.backends import get_backend
from calab.filters import rolling_baseline
from calab.fista import make_operator, make_plan, solve_batch

FS, TAU_R, TAU_D = 30.0, 0.1, 0.6


def brute_force_baseline(trace: np.ndarray, window: int, quantile: float = 0.2) -> np.ndarray:
    """Causal rolling order statistic, one window at a time (spec numerics.md §6)."""
    out = np.empty_like(trace)
    for t in range(trace.size):
        segment = np.sort(trace[max(0, t - window + 1) : t + 1])
        m = segment.size
        rank = int(min(np.floor((m - 1) * quantile + 0.5), m - 1))
        out[t] = segment[rank]
    return out


def simulated_traces(n_cells: int, n_timepoints: int, seed: int = 0, offset: float = 0.0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    kernel = calab.build_kernel(TAU_R, TAU_D, FS).astype(np.float64)
    spikes = (rng.random((n_cells, n_timepoints)) < 0.03) * rng.uniform(0.5, 1.5, (n_cells, n_timepoints))
    calcium = np.array([np.convolve(s, kernel)[:n_timepoints] for s in spikes])
    noise = 0.05 * rng.standard_normal((n_cells, n_timepoints))
    return offset + scale * (calcium + noise), spikes


def test_rolling_baseline_example_from_the_spec(backend):
    trace = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]], dtype=np.float32)
    engine = get_backend(backend)
    with engine.precision_scope():
        base = engine.rolling_quantile(engine.asarray(trace), 5, 0.2)
    np.testing.assert_array_equal(trace[0] - np.asarray(base)[0], [0, 0, 3, 0, 4, 8, 0, 4, 0, 0])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    window=st.sampled_from([5, 10, 25]),
    seed=st.integers(0, 2**16),
)
def test_rolling_baseline_is_exact_against_brute_force(n, window, seed):
    rng = np.random.default_rng(seed)
    traces = rng.integers(-3, 4, (3, n)).astype(np.float32)  # ties exercise the rank rule
    got = get_backend("numpy").rolling_quantile(traces, window, 0.2)
    for row in range(3):
        np.testing.assert_array_equal(got[row], brute_force_baseline(traces[row], window))


@pytest.mark.parametrize("conv_mode", ["fft", "banded"])
def test_operators_are_exact_adjoints(backend, conv_mode):
    engine = get_backend(backend)
    rng = np.random.default_rng(1)
    n = 400
    plan = make_plan(engine, n, FS, TAU_R, TAU_D, conv_mode, "nonneg", 100)
    with engine.precision_scope():
        operator = make_operator(engine, plan)
        x = rng.standard_normal((3, n)).astype(np.float32)
        e = rng.standard_normal((3, n)).astype(np.float32)
        kx = np.asarray(operator.forward(engine.asarray(x)), dtype=np.float64)
        kte = np.asarray(operator.adjoint(engine.asarray(e)), dtype=np.float64)
        assert np.sum(kx * e) == pytest.approx(np.sum(x * kte), rel=1e-5)
        if conv_mode == "fft":
            direct = np.array([np.convolve(row, plan.kernel.astype(np.float64))[:n] for row in x])
            np.testing.assert_allclose(kx, direct, atol=2e-5 * np.abs(direct).max())
            gram = np.asarray(operator.normal(engine.asarray(x)), dtype=np.float64)
            twice = np.asarray(operator.adjoint(operator.forward(engine.asarray(x))), dtype=np.float64)
            np.testing.assert_allclose(gram, twice, atol=1e-4 * np.abs(twice).max())
        else:
            impulse = np.zeros((1, n), np.float32)
            impulse[0, 0] = 1
            response = np.asarray(operator.forward(engine.asarray(impulse)))[0]
            np.testing.assert_allclose(response[: plan.kernel.size], plan.kernel, atol=2e-4)


@pytest.mark.parametrize(("conv_mode", "constraint"), [("fft", "nonneg"), ("banded", "nonneg"), ("fft", "box01")])
def test_solution_satisfies_the_optimality_conditions(backend, conv_mode, constraint):
    traces, _ = simulated_traces(4, 600, seed=3)
    if constraint == "box01":
        traces = traces * 0.5
    lam = 0.05
    result = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, lam, conv_mode=conv_mode, constraint=constraint, backend=backend)
    assert np.all(result.converged)
    kernel = calab.build_kernel(TAU_R, TAU_D, FS).astype(np.float64)
    weight = lam * kernel.sum()
    lipschitz = kernel.sum() ** 2
    window = 5 * int(np.ceil(5 * TAU_D * FS))
    for row in range(traces.shape[0]):
        trace32 = traces[row].astype(np.float32)
        work = trace32.astype(np.float64) - brute_force_baseline(trace32, window)
        s = result.activity[row]
        gradient = np.correlate(np.convolve(s, kernel)[: s.size] - work, kernel, "full")[kernel.size - 1 :] + weight
        # Projected-gradient optimality: s = P(s − g/L).  FISTA stops on a 1e-4 relative
        # change, so allow a small fraction of the solution's own scale.
        upper = 1.0 if constraint == "box01" else np.inf
        fixed_point = np.clip(s - gradient / lipschitz, 0.0, upper)
        assert np.max(np.abs(fixed_point - s)) < 2e-3 * max(1.0, s.max())


def test_all_zero_and_constant_traces_stop_after_six_iterations(backend):
    traces = np.vstack([np.zeros(500), np.full(500, 7.0)])
    result = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.5, backend=backend)
    np.testing.assert_array_equal(result.iterations, [6, 6])
    assert result.converged.all() and not result.activity.any()
    np.testing.assert_allclose(result.baseline, [0.0, 7.0])
    np.testing.assert_allclose(result.reconvolution, traces)


@pytest.mark.parametrize(("max_iters", "cap"), [(0, 0), (1, 100), (37, 100), (150, 200)])
def test_iteration_cap_is_rounded_up_to_whole_hundreds(backend, max_iters, cap):
    traces, _ = simulated_traces(2, 300, seed=5)
    result = calab.run_deconvolution_full(traces, FS, 0.02, TAU_D, 0.0, max_iters=max_iters, backend=backend)
    assert np.all(result.iterations <= cap)
    if max_iters == 0:
        assert not result.converged.any() and not result.activity.any()
    else:
        assert np.all(result.converged | (result.iterations == cap))


def test_result_types_follow_the_documented_contract(backend):
    traces, _ = simulated_traces(3, 200, seed=7)
    one = calab.run_deconvolution_full(traces[0], FS, TAU_R, TAU_D, 0.1, backend=backend)
    assert isinstance(one.baseline, float) and isinstance(one.iterations, int) and isinstance(one.converged, bool)
    assert one.activity.shape == (200,) and one.activity.dtype == np.float64
    many = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.1, backend=backend)
    assert many.activity.shape == (3, 200) and many.reconvolution.dtype == np.float64
    assert many.baseline.dtype == np.float64 and many.iterations.dtype == np.int64 and many.converged.dtype == bool
    row = calab.run_deconvolution(traces[:1], FS, TAU_R, TAU_D, 0.1, backend=backend)
    assert row.shape == (1, 200)
    np.testing.assert_allclose(row[0], one.activity, atol=1e-6)
    as_list = calab.run_deconvolution(traces[0].tolist(), FS, TAU_R, TAU_D, 0.1, backend=backend)
    np.testing.assert_array_equal(as_list, one.activity)
    as_f32 = calab.run_deconvolution(traces[0].astype(np.float32), FS, TAU_R, TAU_D, 0.1, backend=backend)
    np.testing.assert_array_equal(as_f32, one.activity)


def test_empty_inputs(backend):
    empty = calab.run_deconvolution_full(np.zeros(0), FS, TAU_R, TAU_D, 0.1, backend=backend)
    assert empty.activity.shape == (0,) and empty.baseline == 0.0 and empty.iterations == 0 and empty.converged is True
    rows = calab.run_deconvolution_full(np.zeros((3, 0)), FS, TAU_R, TAU_D, 0.1, backend=backend)
    assert rows.activity.shape == (3, 0) and rows.converged.all() and not rows.iterations.any()
    with pytest.raises(ValueError, match="no cells"):
        calab.run_deconvolution(np.zeros((0, 10)), FS, TAU_R, TAU_D, 0.1, backend=backend)


def test_traces_shorter_than_the_kernel(backend):
    traces, _ = simulated_traces(2, 12, seed=11)
    result = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.01, backend=backend)
    assert result.activity.shape == (2, 12) and np.all(result.activity >= 0)
    assert np.all(np.isfinite(result.reconvolution))


def test_backends_agree_with_numpy(accelerated_backend):
    traces, _ = simulated_traces(6, 1500, seed=13, offset=500.0, scale=80.0)
    for conv_mode in ("fft", "banded"):
        ours = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.5, conv_mode=conv_mode, backend=accelerated_backend)
        oracle = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.5, conv_mode=conv_mode, backend="numpy")
        peak = np.maximum(np.abs(oracle.activity).max(axis=1), 1e-6)
        assert np.all(np.abs(ours.activity - oracle.activity).max(axis=1) <= 1e-3 * peak)
        assert np.all(np.abs(ours.iterations - oracle.iterations) <= 0.1 * oracle.iterations)
        np.testing.assert_allclose(ours.baseline, oracle.baseline, atol=1e-3 * np.abs(traces).max())


def test_chunked_solve_equals_one_batch(monkeypatch):
    traces, _ = simulated_traces(7, 800, seed=17)
    whole = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.2, backend="numpy")
    monkeypatch.setenv("CALAB_CHUNK_CELLS", "3")
    chunked = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.2, backend="numpy")
    # Rows are independent; only float32 rounding of differently sized FFT/GEMM batches differs.
    np.testing.assert_allclose(chunked.activity, whole.activity, atol=1e-4)
    assert np.all(np.abs(chunked.iterations - whole.iterations) <= 1)


def test_per_cell_lambda_equals_separate_solves(backend):
    traces, _ = simulated_traces(3, 500, seed=19)
    lams = np.array([0.0, 0.3, 2.0])
    together = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, lams, backend=backend)
    for row, lam in enumerate(lams):
        alone = calab.run_deconvolution_full(traces[row], FS, TAU_R, TAU_D, float(lam), backend=backend)
        np.testing.assert_allclose(together.activity[row], alone.activity, atol=1e-5 * max(1, alone.activity.max()))
        assert abs(int(together.iterations[row]) - alone.iterations) <= 1


def test_ragged_rows_solve_like_their_own_length(backend):
    engine = get_backend(backend)
    traces, _ = simulated_traces(2, 700, seed=23)
    lengths = np.array([700, 450])
    padded = traces.astype(np.float32).copy()
    padded[1, 450:] = 0.0
    plan = make_plan(engine, 700, FS, TAU_R, TAU_D, "fft", "nonneg", 2000)
    with engine.precision_scope():
        block = engine.asarray(padded)
        base = np.array(engine.to_numpy(rolling_baseline(engine, block, TAU_D, FS)))
        out = solve_batch(engine, plan, block, np.full(2, 0.1), engine.asarray(base), lengths=lengths)
    alone = calab.run_deconvolution_full(traces[1, :450], FS, TAU_R, TAU_D, 0.1, backend=backend)
    activity = engine.to_numpy(out.activity)
    # The ragged path uses the residual form of the gradient, the full-length path the Gram
    # form: equal maths, different float32 rounding; the project-wide 1e-3-of-peak criterion.
    np.testing.assert_allclose(activity[1, :450], alone.activity, atol=1e-3 * max(1, alone.activity.max()))
    assert not activity[1, 450:].any()
    assert out.baseline[1] == pytest.approx(alone.baseline, abs=1e-4)


def test_jax_input_stays_a_jax_array():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    traces, _ = simulated_traces(2, 300, seed=29)
    out = calab.run_deconvolution(jnp.asarray(traces, dtype=jnp.float32), FS, TAU_R, TAU_D, 0.1)
    assert type(out).__module__.startswith("jax") and out.dtype == jnp.float32 and out.shape == (2, 300)
    host = calab.run_deconvolution(traces.astype(np.float32), FS, TAU_R, TAU_D, 0.1, backend="jax")
    np.testing.assert_allclose(np.asarray(out), host, atol=1e-6)


def test_bandpass_filter_batch_and_edge_cases(backend):
    rng = np.random.default_rng(31)
    traces = rng.standard_normal((3, 257))
    batch = calab.bandpass_filter(traces, 0.02, 0.4, FS, backend=backend)
    assert batch.dtype == np.float64 and batch.shape == traces.shape
    for row in range(3):
        np.testing.assert_allclose(calab.bandpass_filter(traces[row], 0.02, 0.4, FS, backend=backend), batch[row], atol=1e-6)
    assert abs(batch.mean()) < 1e-6  # DC removed
    short = np.arange(7.0)
    out = calab.bandpass_filter(short, 0.02, 0.4, FS)
    np.testing.assert_array_equal(out, short) and out is not short
    bad = traces[0].copy()
    bad[9] = np.inf
    with pytest.raises(ValueError, match="non-finite value .* at index 9"):
        calab.bandpass_filter(bad, 0.02, 0.4, FS, backend=backend)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"traces": np.zeros((2, 2, 2))}, ValueError, "1-D .* or 2-D"),
        ({"tau_r": 0.6}, ValueError, "tau_rise .* must be smaller than tau_decay"),
        ({"tau_r": -0.1}, ValueError, "tau_rise must be finite and > 0"),
        ({"fs": 0.0}, ValueError, "fs must be a finite sampling rate > 0 Hz, got 0"),
        ({"fs": np.nan}, ValueError, "fs must be .* got NaN"),
        ({"lam": -1.0}, ValueError, "lambda must be finite and >= 0"),
        ({"lam": np.inf}, ValueError, "lambda must be finite"),
        ({"tau_d": 1e6}, ValueError, "check the units"),
        ({"conv_mode": "FFT"}, ValueError, "conv_mode must be 'fft' or 'banded'"),
        ({"constraint": "positive"}, ValueError, "constraint must be 'nonneg' or 'box01'"),
        ({"max_iters": -1}, OverflowError, "max_iters must be between 0"),
        ({"max_iters": 2**32}, OverflowError, "max_iters must be between 0"),
        ({"max_iters": 10.0}, TypeError, "max_iters must be an integer"),
        ({"backend": "tpu"}, ValueError, "unknown backend 'tpu'"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, pattern):
    call = {"traces": np.ones((2, 50)), "fs": FS, "tau_r": TAU_R, "tau_d": TAU_D, "lam": 0.1}
    call.update(kwargs)
    with pytest.raises(error, match=pattern):
        calab.run_deconvolution(**call)


def test_non_finite_samples_are_reported_with_their_position(backend):
    batch = np.ones((3, 40))
    batch[2, 17] = np.nan
    with pytest.raises(ValueError, match="row 2, index 17"):
        calab.run_deconvolution(batch, FS, TAU_R, TAU_D, 0.1, backend=backend)
    with pytest.raises(ValueError, match=r"at index 5;"):
        calab.run_deconvolution(np.where(np.arange(40) == 5, np.inf, 0.0), FS, TAU_R, TAU_D, 0.1, backend=backend)
    with pytest.raises(ValueError, match="non-finite"):  # overflows float32
        calab.run_deconvolution(np.full(40, 1e39), FS, TAU_R, TAU_D, 0.1, backend=backend)


def test_large_batches_stream_through_in_memory_bounded_chunks(monkeypatch):
    import calab.deconvolution as deconvolution
    from calab.backends.cpu import NumpyBackend

    seen = []
    real_solve = deconvolution.solve_block  # the block-level entry point

    def spy(problem, block, *args, **kwargs):
        seen.append(block.shape[0])
        return real_solve(problem, block, *args, **kwargs)

    monkeypatch.setattr(deconvolution, "solve_block", spy)
    # Pretend only 64 MiB are free: 300 cells x 3000 frames must not be solved at once.
    monkeypatch.setattr(NumpyBackend, "free_memory_bytes", lambda self: 64 << 20)
    traces, _ = simulated_traces(300, 3000, seed=37)
    result = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.5, max_iters=100, backend="numpy")
    assert len(seen) > 1 and sum(seen) == 300
    assert max(seen) * 3000 * 4 * 16 <= 64 << 20 or max(seen) == get_backend("numpy").workers * 32
    assert result.activity.shape == (300, 3000) and np.all(result.iterations > 0)


def test_progress_reports_every_cell_and_never_changes_the_numpy_results():
    traces, _ = simulated_traces(300, 500, seed=41)
    reported = []
    with_progress = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.3, backend="numpy", progress=reported.append)
    assert sum(reported) == 300 and len(reported) > 1  # several chunks, each reported
    silent = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.3, backend="numpy", progress=False)
    from calab.backends.cpu._kernels import HAVE_NUMBA

    if not HAVE_NUMBA:  # the SciPy fallback's BLAS blocking depends on the batch size
        np.testing.assert_allclose(with_progress.activity, silent.activity, atol=1e-4)
        return
    # The NumPy backend gives every cell the same arithmetic whatever its batch: bit-identical.
    np.testing.assert_array_equal(with_progress.activity, silent.activity)
    np.testing.assert_array_equal(with_progress.iterations, silent.iterations)
    alone = calab.run_deconvolution_full(traces[17], FS, TAU_R, TAU_D, 0.3, backend="numpy")
    np.testing.assert_array_equal(silent.activity[17], alone.activity)


def test_scipy_fallback_without_numba_gives_the_same_results(tmp_path):
    import subprocess
    import sys

    traces, _ = simulated_traces(5, 900, seed=43, offset=200.0, scale=30.0)
    np.save(tmp_path / "traces.npy", traces)
    code = (
        "import sys, numpy as np, calab\n"
        "from calab.backends.cpu._kernels import HAVE_NUMBA\n"
        "assert not HAVE_NUMBA\n"
        "t = np.load(sys.argv[1])\n"
        "for mode in ('fft', 'banded'):\n"
        "    r = calab.run_deconvolution_full(t, 30.0, 0.1, 0.6, 0.5, conv_mode=mode, backend='numpy')\n"
        "    np.save(sys.argv[1] + mode + '.npy', r.activity)\n"
        "    np.save(sys.argv[1] + mode + '_iters.npy', r.iterations)\n"
    )
    env = {**__import__("os").environ, "CALAB_DISABLE_NUMBA": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "traces.npy")], check=True, env=env)
    for mode in ("fft", "banded"):
        compiled = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.5, conv_mode=mode, backend="numpy")
        fallback = np.load(tmp_path / f"traces.npy{mode}.npy")
        peak = np.abs(compiled.activity).max(axis=1, keepdims=True)
        assert np.all(np.abs(fallback - compiled.activity) <= 1e-3 * peak)
        iterations = np.load(tmp_path / f"traces.npy{mode}_iters.npy")
        assert np.all(np.abs(iterations - compiled.iterations) <= 0.1 * compiled.iterations)
